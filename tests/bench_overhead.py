"""Benchmark: what the tool adds on a warm re-run, and how fast it starts.

    python tests/bench_overhead.py [--repeat 6]

Prints, as medians over --repeat runs measured in this one session:
  1. a warm re-run of the staged demo recipe up to the training's first output line, divided by
     running the same training command by hand up to its first output line (goal: <= 1.05);
  2. `python -m bootstrap --help` wall time, next to `python -c pass` for scale;
  3. whether the parent process imported torch during a full run (it must not).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def time_to_first_line(argv: list[str], env: dict[str, str], cwd: Path, marker: str) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            elapsed = time.perf_counter() - started
            break
    else:
        raise SystemExit(f"{marker!r} never printed by {shlex.join(argv)}")
    proc.kill()
    proc.wait()
    return elapsed


def wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=6)  # even: each way first as often
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        env = {
            **os.environ,
            "BOOTSTRAP_PERSIST": str(tmpdir / "persist"),
            "BOOTSTRAP_SCRATCH": str(tmpdir / "scratch"),
            "BOOTSTRAP_COLAB": "0",
            "BOOTSTRAP_GPU": "0",
            "PYTHONPATH": str(ROOT),
        }
        # As installed by pip, whose install writes .pyc files: with PYTHONDONTWRITEBYTECODE
        # (set on some dev machines) the tool would recompile its ~40 modules on every start.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        recipe = ROOT / "recipes" / "demo.yaml"
        ours = [
            sys.executable,
            "-m",
            "bootstrap",
            str(recipe),
            "--fresh",
            "--set",
            "run.args[5]=1000",
        ]
        # Stage once (clone, install, data), so every measured run is a warm re-run.
        time_to_first_line(ours, env, ROOT, "epoch 0:")
        scratch = tmpdir / "scratch"
        by_hand = [
            sys.executable,
            "train.py",
            "--data_root",
            str(scratch / "datasets/demo/toy"),
            "--logdir",
            str(tmpdir / "by-hand"),
            "--epochs",
            "1000",
        ]
        repo = scratch / "repos" / "demo"
        hand_times, our_times = [], []
        # Interleaved, so drift in machine load hits both, and each way goes first in turn:
        # the second of a pair finds the page cache warmed by the first.
        for i in range(args.repeat):
            pair = [
                lambda: hand_times.append(time_to_first_line(by_hand, env, repo, "epoch 0:")),
                lambda: our_times.append(time_to_first_line(ours, env, ROOT, "epoch 0:")),
            ]
            for run in pair if i % 2 == 0 else reversed(pair):
                run()
        hand, ours_s = statistics.median(hand_times), statistics.median(our_times)
        pairwise = statistics.median(o / h for o, h in zip(our_times, hand_times, strict=True))

        helps, bare = [], []
        for i in range(args.repeat):
            pair = [
                lambda: helps.append(wall([sys.executable, "-m", "bootstrap", "--help"], env)),
                lambda: bare.append(wall([sys.executable, "-c", "pass"], env)),
            ]
            for run in pair if i % 2 == 0 else reversed(pair):
                run()

        probe = (
            "import sys\nfrom bootstrap.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "print('torch imported by the parent:', 'torch' in sys.modules)\n"
        )
        out = (
            subprocess.run(
                [sys.executable, "-c", probe, str(recipe), "--fresh", "--set", "run.args[5]=1"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )

    print(f"{'measure':<48} {'value':>10}")
    print(f"{'training by hand, to first output (median s)':<48} {hand:>10.3f}")
    print(f"{'warm re-run via bootstrap, to first output (s)':<48} {ours_s:>10.3f}")
    print(f"{'ratio of the medians (goal <= 1.05)':<48} {ours_s / hand:>10.3f}")
    print(f"{'median of the ratios, pair by pair':<48} {pairwise:>10.3f}")
    print(f"{'python -m bootstrap --help (median s)':<48} {statistics.median(helps):>10.3f}")
    print(f"{'python -c pass (median s), for scale':<48} {statistics.median(bare):>10.3f}")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
