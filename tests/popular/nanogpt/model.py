"""Stand-in written for these tests: a small causal character model that takes the place of
karpathy/nanoGPT's GPT in train.py (no code of that repo). STAND-IN: it is built from torch's
own transformer layers; only its role matches (ids in; logits, and a loss when targets are
given, out), not its layers or its state_dict keys."""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ModelShape:
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = False


class TinyLM(nn.Module):
    def __init__(self, shape):
        super().__init__()
        if shape.n_embd % shape.n_head:
            raise ValueError(f"n_embd={shape.n_embd} is not a multiple of n_head={shape.n_head}")
        self.shape = shape
        self.tokens = nn.Embedding(shape.vocab_size, shape.n_embd)
        self.positions = nn.Embedding(shape.block_size, shape.n_embd)
        layer = nn.TransformerEncoderLayer(
            d_model=shape.n_embd,
            nhead=shape.n_head,
            dim_feedforward=4 * shape.n_embd,
            dropout=shape.dropout,
            batch_first=True,
            norm_first=True,
            bias=shape.bias,
        )
        self.layers = nn.TransformerEncoder(layer, shape.n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(shape.n_embd, bias=shape.bias)
        self.head = nn.Linear(shape.n_embd, shape.vocab_size, bias=False)
        count = sum(p.numel() for p in self.parameters())
        print(f"model: {count:,} parameters")

    def forward(self, ids, targets=None):
        length = ids.shape[1]
        if length > self.shape.block_size:
            raise ValueError(f"{length} ids, but block_size is {self.shape.block_size}")
        where = torch.arange(length, device=ids.device)
        hidden = self.tokens(ids) + self.positions(where)
        future = nn.Transformer.generate_square_subsequent_mask(length, device=ids.device)
        hidden = self.norm(self.layers(hidden, mask=future, is_causal=True))
        logits = self.head(hidden)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    def make_optimizer(self, learning_rate, betas, weight_decay):
        """AdamW that decays matrices only (not biases, norms' scales or anything 1-d)."""
        decayed = [p for p in self.parameters() if p.dim() >= 2]
        plain = [p for p in self.parameters() if p.dim() < 2]
        groups = [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": plain, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)
