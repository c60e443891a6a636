"""A real Hugging Face Trainer training, tiny and offline, shaped like the example scripts.

It is a fixture: tests run it as a subprocess, kill it, and run it again. Like `run_clm.py` it
resumes from the newest `output_dir/checkpoint-N/` that `get_last_checkpoint` finds, so an
interrupted run continues where its last checkpoint left off. At the end it writes
`output_dir/done.json` with a digest of the final weights, the loss of every step, and the step
this run started from (a restart from scratch ends with the same digest, so a test that means
"resumed" must look at it too): a test can check that an interrupted-and-resumed run ends bit
for bit where an uninterrupted one does.

The model is a one-layer GPT-2 built from a config and the data are made from a seed: nothing is
downloaded. Dropout stays on, so a resume that lost the RNG state would show in the digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

# Before transformers is imported: it reads these once, and no test may reach the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # a bar for each checkpoint's one weights file

import torch  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint  # noqa: E402

VOCAB, SEQ_LEN, EXAMPLES, BATCH = 64, 16, 32, 4  # 8 steps an epoch: max_steps 12 crosses one


class SyntheticText(torch.utils.data.Dataset):
    """Token sequences drawn from their own seeded generator, the same in every run."""

    def __init__(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (EXAMPLES, SEQ_LEN), generator=generator)

    def __len__(self) -> int:
        return EXAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


class SleepPerStep(TrainerCallback):
    """Slows each optimizer step so that a test can kill the run between two checkpoints."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(self.seconds)


class StartStep(TrainerCallback):
    """Records the step the run starts from: 0 fresh, N when resumed from checkpoint-N."""

    step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.step = state.global_step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=12)
    parser.add_argument("--save_steps", type=int, default=3)
    parser.add_argument("--save_total_limit", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sleep_per_step", type=float, default=0.0)
    return parser.parse_args(argv)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict, by name, as raw bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_json_atomically(path: Path, data: dict[str, object]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    print(f"resume_from_checkpoint={last}", flush=True)

    set_seed(args.seed)  # the fresh model's initial weights
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        vocab_size=VOCAB,
        n_positions=32,
        # GPT-2's own 50256 lies outside this vocabulary, and transformers warns about it.
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    model = GPT2LMHeadModel(config)
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=args.max_steps,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        warmup_steps=2,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=1,
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    start = StartStep()
    callbacks: list[TrainerCallback] = [start]
    if args.sleep_per_step > 0:
        callbacks.append(SleepPerStep(args.sleep_per_step))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=SyntheticText(args.seed),
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=last)

    losses = [
        [entry["step"], entry["loss"]] for entry in trainer.state.log_history if "loss" in entry
    ]
    write_json_atomically(
        output_dir / "done.json",
        {
            "global_step": trainer.state.global_step,
            "resumed_from": last,
            "started_at_step": start.step,
            "sha256": weights_digest(model),  # trained in place: trainer.model is model
            "losses": losses,
        },
    )
    print(f"done global_step={trainer.state.global_step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
