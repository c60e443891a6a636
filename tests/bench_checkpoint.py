"""Benchmark of bootstrap.checkpoint.Checkpointer against plain torch.save (issue 3).

Run from the repository root::

    python tests/bench_checkpoint.py            # ~200 MB of state, about 2.5 minutes
    python tests/bench_checkpoint.py --quick    # ~50 MB, under a minute

Not a test: pytest does not collect it, and nothing here asserts on time. It prints absolute
times and the ratios the issue sets goals for, all measured in the same run:

(a) time the caller is blocked in an async ``save`` / a synchronous ``torch.save`` of the same
    state to the same folder (goal <= 0.10);
(b) slowdown of a CPU training by an async save after every epoch (goal <= 2 %), twice: with
    the training on every core, and with one core left free, as when the heavy work runs on a
    GPU and the host CPU has slack (the usual case on Colab);
(c) an atomic ``save(blocking=True)`` / ``torch.save`` (goal <= 1.15). The atomic save fsyncs the
    file and the folder; a plain ``torch.save`` leaves the data in the page cache, to be lost
    on a crash. So (c) is judged against ``torch.save`` followed by ``os.fsync``, which is as
    durable, and the raw ``torch.save`` is shown for reference.

The state is an MLP (4 square Linear layers) with its Adam optimizer after one step, so that
the Adam moments exist: 3 x the parameters' bytes. The training repeats steps on one batch
(no data loading, so that any slowdown comes from the checkpoint). On a shared VM the
neighbours make a timing vary by up to 2x, so each ratio is given two ways: as the median of
the ratios of measurements taken back to back (the verdict; the range is printed beside it),
and as min/min; where the two disagree on the goal the verdict says "unclear". (b) is the
noisiest: ``--pairs 15 --budget 220`` gives a tighter estimate in about 8 minutes. Files go to
a fresh folder under the system temp dir (or ``--dir``), removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bootstrap.checkpoint import Checkpointer  # noqa: E402


@dataclass
class Setup:
    width: int  # of the MLP's layers: the state is 3 x 4 x width^2 floats
    save_reps: int  # of each way of saving, for (a) and (c)
    epoch_s: float  # the length of an epoch in (b), as calibrated
    pairs: int  # of blocks with and without a save, per training in (b), at most
    budget_s: float  # per training in (b): no new pair is started after this


FULL = Setup(width=2048, save_reps=7, epoch_s=3.0, pairs=6, budget_s=50)
QUICK = Setup(width=1024, save_reps=5, epoch_s=1.0, pairs=4, budget_s=12)


class Trainer:
    def __init__(self, width: int, batch: int = 64):
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = []
        for _ in range(4):
            layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.x = torch.randn(batch, width)
        self.y = torch.randn(batch, width)
        self.step()

    def step(self) -> None:
        self.optimizer.zero_grad()
        torch.nn.functional.mse_loss(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def objects(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer}

    def state_bytes(self) -> int:
        tensors = list(self.model.state_dict().values())
        for per_param in self.optimizer.state.values():
            tensors += [v for v in per_param.values() if isinstance(v, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def ratio(self, top: str, bottom: str) -> tuple[float, float, float, float]:
        """min(top)/min(bottom), then the median, min and max of the paired ratios top/bottom."""
        tops, bottoms = self.values[top], self.values[bottom]
        paired = [a / b for a, b in zip(tops, bottoms, strict=False)]
        return min(tops) / min(bottoms), statistics.median(paired), min(paired), max(paired)

    def print(self, title: str) -> None:
        print(f"\n{title}")
        for name, values in self.values.items():
            middle, low, high = statistics.median(values), min(values), max(values)
            print(f"  {name:34s} {middle:7.3f}  ({low:.3f} .. {high:.3f})")


def bench_saves(trainer: Trainer, folder: Path, reps: int) -> Samples:
    """(a) and (c): four ways of saving, round robin, each round in a rotated order."""
    plain = folder / "plain.pt"
    blocking = Checkpointer(folder / "blocking", keep=2)
    background = Checkpointer(folder / "async", keep=2, async_save=True)
    objects = trainer.objects()
    samples = Samples()
    step = 0

    def torch_save() -> None:
        torch.save({name: obj.state_dict() for name, obj in objects.items()}, plain)

    def torch_save_fsync() -> None:
        torch_save()
        # The same file is overwritten (same inode, no new folder entry): its fsync suffices.
        fd = os.open(plain, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def atomic() -> None:
        blocking.save(step, **objects)

    def async_save() -> None:
        background.save(step, **objects)

    variants: list[tuple[str, Callable[[], None]]] = [
        ("torch.save", torch_save),
        ("torch.save + fsync", torch_save_fsync),
        ("atomic save", atomic),
        ("async save: blocked", async_save),
    ]
    for rep in range(-1, reps):  # round -1 warms up: page cache, files, staging buffers
        shift = max(rep, 0) % len(variants)
        for name, fn in variants[shift:] + variants[:shift]:
            step += 1
            elapsed = timed(fn)
            if fn is async_save:
                written = timed(background.wait)
                if rep < 0:
                    samples.add("async save: first, blocked", elapsed)
                    continue
                samples.add("async save: background write", written)
            if rep >= 0:
                samples.add(name, elapsed)
    background.close()
    return samples


def bench_training(trainer: Trainer, folder: Path, setup: Setup, threads: int) -> Samples:
    """(b): one training in blocks of two epochs, alternately with and without one async save.

    A block with a save runs: epoch, ``save``, epoch, ``wait``; one without: epoch, epoch. So
    the save's whole cost lands in its block: the time blocked in ``save``, the background write
    slowing the next epoch down, and whatever of the write that epoch did not hide (the
    ``wait``; a training saving every epoch would hide it behind the epoch after, so counting it
    errs on the pessimistic side). Blocks alternate S P P S S P P S ... so that slow drifts of
    the machine cancel out, and each S is paired with the P beside it. The slowdown of an
    epoch by one save is then 2 x (S / P - 1).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(3):  # the first steps on a new thread count are slower
            trainer.step()
        step_s = statistics.median(timed(trainer.step) for _ in range(7))
        steps = max(1, round(setup.epoch_s / step_s))
        ckpt = Checkpointer(folder / f"training-{threads}", keep=2, async_save=True)
        objects = trainer.objects()
        ckpt.save(0, **objects)  # the first save allocates the staging buffers
        ckpt.wait()

        def epoch() -> None:
            for _ in range(steps):
                trainer.step()

        samples = Samples()
        samples.add("epoch (calibrated)", steps * step_s)
        stop_at = time.perf_counter() + setup.budget_s
        for block in range(2 * setup.pairs):
            if block % 2 == 0 and block >= 4 and time.perf_counter() > stop_at:
                break
            with_save = block % 4 in (0, 3)
            start = time.perf_counter()
            epoch()
            if with_save:
                blocked_start = time.perf_counter()
                ckpt.save(block + 1, **objects)
                samples.add("save: blocked", timed_since(blocked_start))
            epoch()
            if with_save:
                samples.add("save: wait at block end", timed(ckpt.wait))
            samples.add("block with a save" if with_save else "block without", timed_since(start))
        ckpt.close()
        return samples
    finally:
        torch.set_num_threads(previous_threads)


def timed_since(start: float) -> float:
    return time.perf_counter() - start


def epoch_slowdown(samples: Samples) -> tuple[float, float, float, float]:
    """As ``Samples.ratio``, as the time of an epoch with a save over one without."""
    ratios = samples.ratio("block with a save", "block without")
    return tuple(1 + 2 * (ratio - 1) for ratio in ratios)  # type: ignore[return-value]


def judge(median: float, best: float, goal: float | None) -> str:
    if goal is None:
        return ""
    if (median <= goal) != (best <= goal):
        return f"<= {goal:.2f} unclear"
    return f"<= {goal:.2f} {'met' if median <= goal else 'NOT met'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~50 MB of state, shorter runs")
    parser.add_argument("--dir", type=Path, help="folder to write in (default: system temp dir)")
    parser.add_argument("--reps", type=int, help="repetitions of each save timing")
    parser.add_argument("--pairs", type=int, help="at most this many pairs of blocks in (b)")
    parser.add_argument("--budget", type=float, help="seconds per training in (b), roughly")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else FULL
    setup.save_reps = args.reps or setup.save_reps
    setup.pairs = args.pairs or setup.pairs
    setup.budget_s = args.budget or setup.budget_s

    started = time.perf_counter()
    trainer = Trainer(setup.width)
    cores = torch.get_num_threads()
    folder = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=args.dir))
    try:
        saves = bench_saves(trainer, folder, setup.save_reps)
        trainings = {cores: bench_training(trainer, folder, setup, cores)}
        if cores > 1:
            trainings[cores - 1] = bench_training(trainer, folder, setup, cores - 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"state {trainer.state_bytes() / 1e6:.0f} MB: MLP 4 x Linear({setup.width}, "
        f"{setup.width}) + Adam, after one step; files in {folder.parent}; "
        f"torch {torch.__version__}, {cores} intra-op threads, {os.cpu_count()} CPUs"
    )
    saves.print(f"saves, seconds: median of {setup.save_reps} (min .. max)")
    for threads, samples in trainings.items():
        pairs = len(samples.values["block without"])
        samples.print(
            f"training on {threads} thread(s), batch 64, {pairs} pairs of 2-epoch blocks, "
            f"seconds: median (min .. max)"
        )

    rows = [
        (
            "(a) async save blocked / torch.save",
            saves.ratio("async save: blocked", "torch.save"),
            0.10,
        ),
        *(
            (f"(b) epoch, save / none, {threads} thread(s)", epoch_slowdown(samples), 1.02)
            for threads, samples in trainings.items()
        ),
        (
            "(c) atomic save / (torch.save + fsync)",
            saves.ratio("atomic save", "torch.save + fsync"),
            1.15,
        ),
        (
            "    atomic save / torch.save (reference)",
            saves.ratio("atomic save", "torch.save"),
            None,
        ),
    ]
    print(f"\n{'ratios':42s} {'paired: median (range)':24s} {'min/min':>7s}  goal")
    for name, (best, median, low, high), goal in rows:
        paired = f"{median:.3f} ({low:.3f} .. {high:.3f})"
        print(f"  {name:40s} {paired:24s} {best:7.3f}  {judge(median, best, goal)}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
