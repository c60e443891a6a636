"""A real Hugging Face Trainer through the CLI: its `checkpoint-N/` folders reach persist whole
or not at all, and a run killed hard at any instant resumes on a new VM (through the Trainer's
own `get_last_checkpoint`) and ends bit for bit like an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Sandbox, write_recipe

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent / "trainings" / "hf_trainer.py"
MARKER = "trainer_state.json"
FILES = 8  # what this Trainer writes into each checkpoint folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("hf-uninterrupted") / "out"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--output_dir", str(out), "--max_steps", "12"],
        check=True,
        capture_output=True,
        env={**os.environ, "HF_HOME": str(out.parent / "hf-home")},
        timeout=180,
    )
    return json.loads((out / "done.json").read_text())


def _recipe(tmp_path: Path, sandbox: Sandbox) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    shutil.copy(SCRIPT, repo / "train.py")
    return write_recipe(
        tmp_path / "hf.yaml",
        f"name: hf\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run:\n  script: train.py\n"
        "  args: ['--output_dir', '{ckpt}', '--max_steps', '12', '--save_steps', '3',"
        " '--sleep_per_step', '0.4']\n"
        f"  match: 'checkpoint-*/{MARKER}'\n"  # no resume flag: the script finds its own
        f"  env: {{HF_HOME: '{sandbox.root / 'hf-home'}'}}\n",
    )


def _mirrored_markers(sandbox: Sandbox) -> list[Path]:
    return sorted((sandbox.persist / "runs" / "hf" / "checkpoints").glob(f"checkpoint-*/{MARKER}"))


def _scratch_folders(sandbox: Sandbox) -> list[Path]:
    return sorted((sandbox.scratch / "checkpoints" / "hf").glob("checkpoint-*"))


def _marker_reached_persist(sandbox: Sandbox) -> bool:
    return bool(_mirrored_markers(sandbox))


def _second_save_begun(sandbox: Sandbox) -> bool:
    """Once a folder is on persist, the next save's folder appears on scratch (unmarked)."""
    return bool(_mirrored_markers(sandbox)) and any(
        not (f / MARKER).exists() for f in _scratch_folders(sandbox)
    )


def _two_mirrored(sandbox: Sandbox) -> bool:
    return len(_mirrored_markers(sandbox)) >= 2


@pytest.mark.parametrize(
    "moment",
    [_marker_reached_persist, _second_save_begun, _two_mirrored],
    ids=["right-after-a-marker-reached-persist", "mid-save-on-scratch", "after-a-rotation"],
)
def test_trainer_killed_hard_resumes_on_a_new_vm_bit_for_bit(
    sandbox: Sandbox,
    tmp_path: Path,
    uninterrupted: dict[str, Any],
    moment: Callable[[Sandbox], bool],
) -> None:
    recipe = _recipe(tmp_path, sandbox)
    # Drive made slow (each file takes a moment), so that a folder copied file by file
    # would be seen half there.
    proc = sandbox.popen(recipe, env={"BOOTSTRAP_FAULT_PERSIST": "SLOW:0.05"})
    try:
        end = time.monotonic() + 150
        while not moment(sandbox):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < end, "the moment to kill never came"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Whatever the instant, every folder on persist is whole: its marker and all its files.
    mirrored = _mirrored_markers(sandbox)
    assert mirrored
    for marker in mirrored:
        assert len([p for p in marker.parent.iterdir()]) == FILES, marker.parent
    on_persist = max(int(m.parent.name.split("-")[1]) for m in mirrored)
    sandbox.wipe_scratch()

    again = sandbox.cli(recipe, "--set", "run.args[7]=0", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    done = json.loads((sandbox.scratch / "checkpoints" / "hf" / "done.json").read_text())
    assert done["started_at_step"] == on_persist
    assert done["resumed_from"].endswith(f"checkpoint-{on_persist}")
    assert done["losses"] == uninterrupted["losses"]
    assert done["sha256"] == uninterrupted["sha256"]
