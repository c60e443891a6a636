"""Exact resume under SIGKILL: a training killed at random moments ends bit-identical.

A deterministic CPU training (a ~1M-parameter MLP with AdamW, a StepLR schedule, dropout,
shuffling and python/numpy noise, so every RNG and every kind of state matters) runs under the
real CLI twice: once in loop mode (the repo has no checkpoint code) and once as a script that
uses ``Checkpointer`` directly. Each is SIGKILLed again and again, at random moments, right
after a checkpoint write started (so the write is torn), or with the whole tool (then the
command is run again). Both must end with weights, optimizer state and RNG states identical, bit
for bit, to an uninterrupted run, and no load may ever meet a torn file.

    python tests/stress_exact_resume.py            # 20 kills, a random seed
    python tests/stress_exact_resume.py --kills 40 --seed 7 --keep /tmp/stress

tests/test_exact_resume.py runs the same harness with fewer kills. Linux only (it finds the
training process in /proc).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# How a kill is aimed. "save"/"moment" kill the training only and let the supervisor restart
# it; "tool"/"tool-save" kill the whole tool, as a recycled VM would, and run the command again.
KINDS = ("save", "moment", "tool", "tool-save")

MODEL_PY = '''\
"""A tiny deterministic training with no checkpoint code at all."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

WIDTH = 512


def setup(hidden=1024, samples=128):
    # One thread: reductions always add in the same order. (The CPU ops used here are
    # deterministic; torch.use_deterministic_algorithms would cost 1.5 s of imports a start.)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    data = torch.Generator().manual_seed(1234)
    x = torch.randn(samples, WIDTH, generator=data)
    y = torch.randn(samples, WIDTH, generator=data)
    model = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(hidden, WIDTH),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.9)
    # Shuffled by torch's global RNG, which the Checkpointer saves and restores.
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler,
            "loader": loader, "device": "cpu"}


def train_one_epoch(epoch, model, optimizer, scheduler, loader, device, **_):
    model.train()
    for xb, yb in loader:
        noise = random.gauss(0, 0.01) + float(np.random.normal(0, 0.01))
        loss = torch.nn.functional.mse_loss(model(xb.to(device) + noise), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scheduler.step()
    print(f"train epoch {epoch} loss {loss.item():.6f}", flush=True)
'''

TRAIN_PY = '''\
"""The same training, made resumable by hand with bootstrap's Checkpointer, saving in the
background (loop mode covers blocking saves): kills land in the background write too."""
import argparse
import logging

from bootstrap.training.checkpoint import Checkpointer

import model as m

logging.basicConfig(level=logging.INFO, format="[train] %(message)s")
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--hidden", type=int, default=1024)
args = parser.parse_args()

checkpoint = Checkpointer.from_env()
checkpoint.install_signal_handlers()
objects = m.setup(hidden=args.hidden)
state = {k: objects[k] for k in ("model", "optimizer", "scheduler")}
start = checkpoint.restore(**state)
print(f"starting at epoch {start}", flush=True)
for epoch in range(start, args.epochs):
    m.train_one_epoch(epoch=epoch, hidden=args.hidden, **objects)
    checkpoint.save(epoch, blocking=False, **state)
    if checkpoint.should_stop:
        break
checkpoint.close()
'''

TORN_WARNING = "skipping unreadable checkpoint"
_STEP = re.compile(r"^step-(\d+)\.pt$")


def write_repo(folder: Path) -> Path:
    repo = folder / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "model.py").write_text(MODEL_PY)
    (repo / "train.py").write_text(TRAIN_PY)
    return repo


def write_recipe(folder: Path, name: str, mode: str, epochs: int, hidden: int = 1024) -> Path:
    """A recipe for ``folder/repo`` in loop mode or as a script; many restarts allowed."""
    if mode == "loop":
        run = (
            f'callable: "model:train_one_epoch", setup: "model:setup", epochs: {epochs}, '
            f"kwargs: {{hidden: {hidden}}}"
        )
    elif mode == "script":
        run = f'script: train.py, args: ["--epochs", "{epochs}", "--hidden", "{hidden}"]'
    else:
        raise ValueError(f"mode must be loop or script, not {mode!r}")
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nrepo: {{url: repo}}\ninstall: {{requirements: []}}\n"
        f"run: {{{run}, restarts: 1000, stop_grace: 30s}}\n"
    )
    return path


def sandbox_env(persist: Path, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOOTSTRAP_", "COLAB_"))}
    env.update(
        BOOTSTRAP_PERSIST=str(persist),
        BOOTSTRAP_SCRATCH=str(scratch),
        BOOTSTRAP_COLAB="0",
        BOOTSTRAP_KAGGLE="0",  # the suite run inside a Kaggle notebook is still a laptop
        BOOTSTRAP_GPU="0",
        BOOTSTRAP_MIRROR_INTERVAL="0.5",
        PYTHONPATH=str(ROOT),
    )
    return env


# -- watching the training from outside ---------------------------------------------------


def steps(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [int(m.group(1)) for n in names if (m := _STEP.match(n))]


def newest_step(folder: Path) -> int:
    return max(steps(folder), default=-1)


def temp_files(folder: Path) -> set[str]:
    """The Checkpointer's in-flight writes: hidden ``.step-*.tmp`` files."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set()
    return {n for n in names if n.startswith(".step-") and n.endswith(".tmp")}


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def training_child(tool_pid: int, marker: str) -> int | None:
    """The live process started by the tool whose command line contains ``marker``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields[1] != str(tool_pid) or fields[0] in ("Z", "X"):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            return int(entry)
    return None


class TrainingEnded(Exception):
    """The tool or the training exited while a kill was being aimed."""


def _wait(
    what: str, ready: Callable[[], bool], live: Callable[[], bool], timeout: float, pause: float
) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if not live():
            raise TrainingEnded(f"the training ended while waiting for {what}")
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        if pause:
            time.sleep(pause)


# -- one killed run -----------------------------------------------------------------------


@dataclass
class KillReport:
    kills: list[str] = field(default_factory=list)  # the kinds, in order
    torn: int = 0  # kills that left a checkpoint write half done (its temp file behind)
    outputs: list[str] = field(default_factory=list)  # the CLI's output, one per command run
    exit_code: int | None = None

    @property
    def tool_kills(self) -> int:
        return sum(k.startswith("tool") for k in self.kills)


class KilledRun:
    """Runs one recipe with the real CLI and kills it as told, until it finishes."""

    def __init__(self, recipe: Path, name: str, mode: str, env: dict[str, str], root: Path):
        self.recipe = recipe
        self.name = name
        self.env = env
        self.root = root
        self.marker = "bootstrap.training.child" if mode == "loop" else "train.py"
        self.ckpt = Path(env["BOOTSTRAP_SCRATCH"]) / "checkpoints" / name
        self.run_dir = Path(env["BOOTSTRAP_PERSIST"]) / "runs" / name
        self._out_files: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        out = self.root / f"{self.name}-output-{len(self._out_files) + 1}.txt"
        self._out_files.append(out)
        with open(out, "wb") as handle:  # a file, not a pipe: nothing to drain, nothing blocks
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bootstrap", str(self.recipe)],
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.proc

    def outputs(self) -> list[str]:
        return [p.read_text(errors="replace") for p in self._out_files]

    def run(self, kinds: Sequence[str], rng: random.Random, timeout: float = 300) -> KillReport:
        report = KillReport()
        proc = self.start()
        killed: set[int] = set()
        try:
            for kind in kinds:
                child = self._aim_and_kill(proc, kind, killed, rng, report)
                killed.add(child)
                report.kills.append(kind)
                if kind.startswith("tool"):
                    proc = self.start()
            report.exit_code = proc.wait(timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            report.outputs = self.outputs()
        return report

    def _aim_and_kill(
        self,
        proc: subprocess.Popen[bytes],
        kind: str,
        killed: set[int],
        rng: random.Random,
        report: KillReport,
    ) -> int:
        if kind not in KINDS:
            raise ValueError(f"unknown kill kind {kind!r}; one of {', '.join(KINDS)}")

        def tool_alive() -> bool:
            return proc.poll() is None

        found: list[int] = []

        def child_started() -> bool:
            pid = training_child(proc.pid, self.marker)
            if pid is not None and pid not in killed:
                found.append(pid)
            return bool(found)

        _wait("the training to start", child_started, tool_alive, 120, 0.002)
        child = found[0]

        def child_alive() -> bool:
            return alive(child)

        if kind == "tool":
            # Anywhere: importing torch, restoring, training, saving.
            time.sleep(rng.uniform(0.0, 3.0))
        else:
            # A supervised restart must make progress first, or the supervisor rightly calls
            # it a crash loop: let this attempt commit one generation.
            base = newest_step(self.ckpt)
            _wait("a checkpoint", lambda: newest_step(self.ckpt) > base, child_alive, 120, 0.002)
        before = temp_files(self.ckpt)
        if kind in ("save", "tool-save"):
            # Spin: a write lasts milliseconds. Kill the moment its temp file appears.
            _wait(
                "a checkpoint write",
                lambda: bool(temp_files(self.ckpt) - before),
                child_alive,
                120,
                0.0,
            )
        elif kind == "moment":
            time.sleep(rng.uniform(0.0, 0.4))
        if not alive(child):
            raise TrainingEnded("the training ended before it could be killed: add epochs")
        os.kill(child, signal.SIGKILL)
        if kind.startswith("tool"):
            os.killpg(proc.pid, signal.SIGKILL)  # the tool, its mirror thread, everything
            proc.wait()
        _wait("the killed training to go", lambda: not alive(child), lambda: True, 30, 0.002)
        if temp_files(self.ckpt) - before:
            report.torn += 1
        return child

    def problems(self) -> list[str]:
        """Every sign in the logs that a load met a torn file or the training raised."""
        texts = {f"output {i + 1}": t for i, t in enumerate(self.outputs())}
        for log in sorted((self.run_dir / "logs").glob("attempt-*.log")):
            texts[log.name] = log.read_text(errors="replace")
        found = []
        for where, text in texts.items():
            for needle in (TORN_WARNING, "Traceback", "KeyboardInterrupt"):
                if needle in text:
                    found.append(f"{where}: {needle!r}")
        return found


# -- comparing the results ----------------------------------------------------------------


def final_state(ckpt: Path, epochs: int) -> dict[str, Any]:
    import torch

    path = ckpt / f"step-{epochs - 1:09d}.pt"
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two checkpoint payloads differ; [] when they are bit-identical."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
        return [] if same else [where or "."]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(map(str, set(a) ^ set(b)))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def reference_run(root: Path, env: dict[str, str], epochs: int) -> dict[str, Any]:
    """The uninterrupted run every killed run must match."""
    recipe = write_recipe(root, "reference", "loop", epochs)
    result = subprocess.run(
        [sys.executable, "-m", "bootstrap", str(recipe)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{result.stdout}{result.stderr}")
    return final_state(Path(env["BOOTSTRAP_SCRATCH"]) / "checkpoints" / "reference", epochs)


def random_kinds(count: int, rng: random.Random) -> list[str]:
    weights = {"save": 4, "moment": 3, "tool": 1, "tool-save": 1}
    return rng.choices(list(weights), weights=list(weights.values()), k=count)


# -- the command --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="in all, split over both modes")
    parser.add_argument("--seed", type=int, default=None, help="for the kill moments")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("this stress test reads /proc: run it on Linux")
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="exact-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    persist, scratch = work / "persist", work / "scratch"
    persist.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    env = sandbox_env(persist, scratch)
    write_repo(work)
    per_mode = {"loop": (args.kills + 1) // 2, "script": args.kills // 2}
    # Each supervised kill costs at least one epoch, a "moment" up to about five.
    epochs = 12 + 5 * max(per_mode.values())
    print(f"seed {seed}; {epochs} epochs; work folder {work}", flush=True)
    started = time.monotonic()
    reference = reference_run(work, env, epochs)
    print(f"reference run done in {time.monotonic() - started:.0f} s", flush=True)

    total_kills = total_torn = total_tool = 0
    identical = True
    problems: list[str] = []
    for mode, count in per_mode.items():
        kinds = random_kinds(count, rng)
        recipe = write_recipe(work, mode, mode, epochs)
        run = KilledRun(recipe, mode, mode, env, work)
        report = run.run(kinds, rng)
        diff = (
            differences(reference, final_state(run.ckpt, epochs)) if report.exit_code == 0 else []
        )
        ok = report.exit_code == 0 and not diff
        identical = identical and ok
        problems += [f"{mode}: {p}" for p in run.problems()]
        total_kills += len(report.kills)
        total_torn += report.torn
        total_tool += report.tool_kills
        print(
            f"{mode}: {len(report.kills)} kills ({', '.join(report.kills)}), "
            f"{report.torn} during a save, exit {report.exit_code}, "
            f"identical: {'yes' if ok else 'NO ' + '; '.join(diff[:5])}",
            flush=True,
        )
    print()
    print(f"kills:                 {total_kills} ({total_tool} of the whole tool, then re-run)")
    print(f"landed during a save:  {total_torn}")
    print(
        f"problems in the logs:  {len(problems)}"
        + (f" ({'; '.join(problems)})" if problems else "")
    )
    print(f"all identical:         {'yes' if identical and not problems else 'no'}")
    print(f"time:                  {time.monotonic() - started:.0f} s (seed {seed})")
    return 0 if identical and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
