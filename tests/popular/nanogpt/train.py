"""Stand-in written for these tests that mimics the interface of karpathy/nanoGPT's train.py
(no code of that repo), with a tiny model so that a run takes seconds on a CPU.

Mimicked, because recipes/nanogpt.yaml relies on it: the settings are module globals,
replaced by a config file and then --name=value overrides (configurator.py); the data is
data/<dataset>/train.bin and val.bin (uint16) with meta.pkl, relative to the working folder;
init_from is 'scratch' or 'resume' (which loads out_dir/ckpt.pt without checking that it is
there); every eval_interval iterations both splits are evaluated and ckpt.pt (model, optimizer,
model_args, iter_num, best_val_loss, config) is written when the val loss improved or
always_save_checkpoint is set, from iteration 1 on; training runs until iter_num passes
max_iters. The lines it prints are nanoGPT's.
"""

import math
import os
import pickle
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
from configurator import apply_command_line
from model import ModelShape, TinyLM

# Settings. Every global assigned here, up to config_keys, is one that a config file or a
# --name=value argument may replace (with a value of the same type), and is saved in ckpt.pt.

# output, evaluation and checkpoints
out_dir = "out"
init_from = "scratch"
eval_interval = 2000
eval_iters = 200
eval_only = False
log_interval = 1
always_save_checkpoint = True
# experiment tracking (STAND-IN: accepted, never used)
wandb_log = False
wandb_project = "owt"
wandb_run_name = "gpt2"
# data
dataset = "openwebtext"
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 40
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False
# optimiser and learning-rate schedule
learning_rate = 6e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
max_iters = 600000
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 600000
min_lr = 6e-5
# hardware (STAND-IN: one process only, so `backend` is accepted and unused)
backend = "nccl"
device = "cuda"
dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
compile = True

config_keys = [
    name
    for name, value in list(globals().items())
    if not name.startswith("_") and isinstance(value, (bool, int, float, str))
]
apply_command_line(sys.argv[1:], globals())
config = {name: globals()[name] for name in config_keys}

# The model_args that must come from the checkpoint on a resume (the others follow the config).
SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
FALLBACK_VOCAB = 50304
DATA_DIR = os.path.join("data", dataset)
CKPT_NAME = "ckpt.pt"


def precision_context():
    if "cuda" not in device:
        return nullcontext()
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return torch.autocast("cuda", dtype=torch_dtype[dtype])


def dataset_vocab_size():
    meta_file = os.path.join(DATA_DIR, "meta.pkl")
    if not os.path.exists(meta_file):
        return None
    with open(meta_file, "rb") as handle:
        size = pickle.load(handle)["vocab_size"]
    print(f"found vocab_size = {size} (inside {meta_file})")
    return size


def draw_batch(split):
    """``batch_size`` random windows of ``block_size`` ids from one split, and the next ids."""
    ids = np.memmap(os.path.join(DATA_DIR, f"{split}.bin"), dtype=np.uint16, mode="r")
    starts = np.random.randint(0, len(ids) - block_size, size=batch_size)
    windows = np.stack([ids[s : s + block_size + 1] for s in starts]).astype(np.int64)
    windows = torch.from_numpy(windows).to(device)
    return windows[:, :-1], windows[:, 1:]


def build_model():
    """The model, its optimizer, and the iteration and best val loss to go on from."""
    model_args = {
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": n_embd,
        "block_size": block_size,
        "bias": bias,
        "vocab_size": None,
        "dropout": dropout,
    }
    saved = None
    if init_from == "scratch":
        print("Initializing a new model from scratch")
        model_args["vocab_size"] = dataset_vocab_size() or FALLBACK_VOCAB
    elif init_from == "resume":
        print(f"Resuming training from {out_dir}")
        saved = torch.load(os.path.join(out_dir, CKPT_NAME), map_location=device)
        model_args.update({key: saved["model_args"][key] for key in SHAPE_KEYS})
    else:
        # STAND-IN: nanoGPT also starts from OpenAI's GPT-2 weights ('gpt2*'), a download.
        raise ValueError(f"stand-in train.py: init_from={init_from!r} is not supported")

    model = TinyLM(ModelShape(**model_args)).to(device)
    optimizer = model.make_optimizer(learning_rate, (beta1, beta2), weight_decay)
    if saved is None:
        return model, optimizer, model_args, 0, 1e9
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return model, optimizer, model_args, saved["iter_num"], saved["best_val_loss"]


def lr_at(step):
    """Linear warm-up to learning_rate, then a cosine down to min_lr at lr_decay_iters."""
    if not decay_lr:
        return learning_rate
    if step < warmup_iters:
        return learning_rate * (step + 1) / (warmup_iters + 1)
    progress = min(1.0, (step - warmup_iters) / max(1, lr_decay_iters - warmup_iters))
    return min_lr + (learning_rate - min_lr) * (1 + math.cos(math.pi * progress)) / 2


@torch.no_grad()
def mean_losses(model, autocast):
    model.eval()
    means = {}
    for split in ("train", "val"):
        total = 0.0
        for _ in range(eval_iters):
            inputs, targets = draw_batch(split)
            with autocast:
                total += model(inputs, targets)[1].item()
        means[split] = total / eval_iters
    model.train()
    return means


def save_checkpoint(model, optimizer, model_args, step, best):
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "model_args": model_args,
        "iter_num": step,
        "best_val_loss": best,
        "config": config,
    }
    print(f"saving checkpoint to {out_dir}")
    torch.save(state, os.path.join(out_dir, CKPT_NAME))
    # STAND-IN: a test that kills this run at a known point sets this; nanoGPT goes straight on.
    pause = os.environ.get("STANDIN_HOLD_AFTER_SAVE")
    if pause:
        print(f"stand-in: holding after saving iter {step}", flush=True)
        time.sleep(float(pause))


def main():
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1234)
    np.random.seed(1234)
    if compile:
        # STAND-IN: nanoGPT would torch.compile the model; this one always runs it eagerly.
        print("stand-in: compile=True is ignored")
    autocast = precision_context()
    scaler = torch.amp.GradScaler("cuda", enabled="cuda" in device and dtype == "float16")
    model, optimizer, model_args, step, best = build_model()

    inputs, targets = draw_batch("train")
    clock = time.time()
    while True:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)

        if step % eval_interval == 0:
            losses = mean_losses(model, autocast)
            print(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if losses["val"] < best or always_save_checkpoint:
                best = losses["val"]
                if step > 0:
                    save_checkpoint(model, optimizer, model_args, step, best)
        if eval_only and step == 0:
            break

        for _ in range(gradient_accumulation_steps):
            with autocast:
                loss = model(inputs, targets)[1] / gradient_accumulation_steps
            inputs, targets = draw_batch("train")
            scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        now = time.time()
        if step % log_interval == 0:
            shown = loss.item() * gradient_accumulation_steps
            print(f"iter {step}: loss {shown:.4f}, time {(now - clock) * 1000:.2f}ms")
        clock = now
        step += 1
        if step > max_iters:
            break


main()
