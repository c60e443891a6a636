"""The Hugging Face Trainer fixture (tests/trainings/hf_trainer.py) on its own, without the tool.

The mirror's folder-checkpoint tests lean on two facts checked here: the fixture trains for real
and writes whole `checkpoint-N/` folders, and a run killed hard (SIGKILL, as a recycled Colab VM
does) then started again resumes from its newest checkpoint and ends bit for bit where an
uninterrupted run ends. A restart from scratch ends with the same weights too, so the resumed
run must also show that it started at a checkpoint's step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent / "trainings" / "hf_trainer.py"
MAX_STEPS, SAVE_STEPS = 12, 3
# What transformers 4.x and 5.x write into every checkpoint folder of this model on one CPU.
CHECKPOINT_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "optimizer.pt",
    "rng_state.pth",
    "scheduler.pt",
    "trainer_state.json",
    "training_args.bin",
}


def _command(output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(MAX_STEPS),
        "--save_steps",
        str(SAVE_STEPS),
        *extra,
    ]


def _env(tmp_path: Path) -> dict[str, str]:
    # A private HF_HOME: whatever transformers might cache stays inside the test's folder.
    return {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "PYTHONUNBUFFERED": "1"}


def _train(output_dir: Path, tmp_path: Path) -> dict[str, Any]:
    result = subprocess.run(
        _command(output_dir),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((output_dir / "done.json").read_text())


def _newest_complete_checkpoint(output_dir: Path) -> int:
    """The step of the newest checkpoint folder whose trainer_state.json (written last) reads
    whole, 0 if none does."""
    steps = [0]
    for folder in output_dir.glob("checkpoint-*"):
        with contextlib.suppress(OSError, ValueError):  # not there yet, or half written
            steps.append(json.loads((folder / "trainer_state.json").read_text())["global_step"])
    return max(steps)


def _kill_after_checkpoint(output_dir: Path, tmp_path: Path, step: int) -> None:
    """Start the slowed training, and SIGKILL its process group once checkpoint-`step` is whole."""
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(
        _command(output_dir, "--sleep_per_step", "0.3"),
        env=_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _newest_complete_checkpoint(output_dir) < step:
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (output_dir / "done.json").exists(), "the run ended before the kill"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    output_dir = tmp_path / "out"
    return output_dir, _train(output_dir, tmp_path)


def test_uninterrupted_run_trains_and_keeps_the_newest_checkpoints(
    uninterrupted: tuple[Path, dict[str, Any]],
) -> None:
    output_dir, done = uninterrupted
    assert done["global_step"] == MAX_STEPS
    assert done["resumed_from"] is None and done["started_at_step"] == 0
    assert [step for step, _ in done["losses"]] == list(range(1, MAX_STEPS + 1))
    # save_total_limit=2: the older folders were deleted as newer ones were written.
    folders = sorted(p.name for p in output_dir.glob("checkpoint-*"))
    assert folders == ["checkpoint-12", "checkpoint-9"]
    for folder in folders:
        assert {p.name for p in (output_dir / folder).iterdir()} == CHECKPOINT_FILES


@pytest.mark.parametrize(
    "kill_after",
    [
        # Inside the first epoch, before any folder was deleted.
        3,
        # After the epoch boundary (8 steps an epoch), checkpoint-3 deleted by the rotation.
        9,
    ],
)
def test_killed_run_resumes_and_ends_bit_for_bit_like_an_uninterrupted_one(
    uninterrupted: tuple[Path, dict[str, Any]], tmp_path: Path, kill_after: int
) -> None:
    _, expected = uninterrupted
    output_dir = tmp_path / "out"
    _kill_after_checkpoint(output_dir, tmp_path, kill_after)
    newest = max(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*"))
    assert kill_after <= newest < MAX_STEPS

    done = _train(output_dir, tmp_path)

    assert done["resumed_from"] == str(output_dir / f"checkpoint-{newest}")
    assert done["started_at_step"] == newest
    assert done["global_step"] == MAX_STEPS
    assert done["losses"] == expected["losses"]
    assert done["sha256"] == expected["sha256"]
