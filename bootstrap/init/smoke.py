"""A ``smoke`` profile: the same run, made short, when flags for its length exist.

``--smoke`` runs it on a CPU (CI, a laptop): one epoch or a few dozen steps, a small batch, a
checkpoint soon enough that a second run can resume from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bootstrap.init.commandline import Cli, Flag, norm
from bootstrap.init.source import Finding

EPOCHS = ("epochs", "num_epochs", "n_epochs", "max_epochs", "num_train_epochs", "nepochs",
          "total_epochs", "epoch")  # fmt: skip
STEPS = ("max_iters", "max_steps", "max_iter", "iters", "num_iters", "n_iters", "num_steps",
         "total_steps", "train_steps", "iterations", "num_iterations", "steps")  # fmt: skip
BATCH = ("batch_size", "per_device_train_batch_size", "train_batch_size", "micro_batch_size",
         "batchsize", "bs", "batch")  # fmt: skip
# Saving and evaluating often enough for a short run to leave a checkpoint.
INTERVALS = ("eval_interval", "save_interval", "save_every", "save_steps", "save_freq",
             "checkpoint_interval", "ckpt_interval", "eval_every", "eval_steps")  # fmt: skip
SHORT = {
    "eval_iters": "5", "compile": "False", "warmup_iters": "5", "lr_decay_iters": "50",
    "gradient_accumulation_steps": "1",
}  # fmt: skip


@dataclass
class SmokePlan:
    args: list[str] = field(default_factory=list)  # appended to the real run's args
    finding: Finding | None = None


def plan_smoke(cli: Cli | None) -> SmokePlan:
    if cli is None:
        return SmokePlan()
    lightning = cli.framework == "Lightning CLI"
    args: list[str] = []

    def give(flag: Flag | None, value: str) -> None:
        if flag is not None and not flag.switch and not flag.positional:
            args.extend(cli.args(flag, value))

    epochs, steps = _find(cli, EPOCHS), _find(cli, STEPS)
    if lightning:
        give(cli.find("max_epochs"), "1")
        give(cli.find("limit_train_batches"), "10")
    elif steps is not None:
        give(steps, "50")
        for name in INTERVALS:
            give(cli.find(name), "25")
        for name, value in SHORT.items():
            flag = cli.find(name)
            if flag is not None and type(flag.default).__name__ == type(_typed(value)).__name__:
                give(flag, value)
    elif epochs is not None:
        give(epochs, "1")
    give(_find(cli, BATCH), "8")
    if not args:
        return SmokePlan()
    text = "short run: " + " ".join(args)
    where = steps or epochs or _find(cli, BATCH)
    return SmokePlan(args, Finding(text, where.where if where else cli.where, "likely"))


def _find(cli: Cli, names: tuple[str, ...]) -> Flag | None:
    for name in names:
        for flag in cli.flags:
            if norm(flag.dest) == name and flag.kind in ("int", "float", "") and not flag.switch:
                return flag
    return None


def _typed(text: str) -> object:
    if text in ("True", "False"):
        return text == "True"
    return int(text)
