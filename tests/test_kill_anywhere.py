"""Kill the whole tool (SIGKILL to its process group) during each step, wipe scratch as a new
VM would, and run again: the run must continue from persist, never trusting a half-done step.

The moment of each kill is found by watching the step's own footprint appear on disk (the clone
folder being filled, the staging work folder, a mirror temp file), then waiting a random extra
moment, so the kill lands inside the step rather than before or after it.
"""

from __future__ import annotations

import os
import random
import signal
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RECIPES, Sandbox, git, read_until, write_recipe

pytestmark = pytest.mark.slow
SMALL_FILES = 6000


def _demo_as_git_repo(tmp_path: Path, extra_files: int) -> Path:
    """The demo training repo as a real git repo, padded so that a clone takes a moment."""
    import shutil

    repo = tmp_path / "origin"
    shutil.copytree(RECIPES / "demo" / "repo", repo)
    pad = repo / "assets"
    pad.mkdir()
    for i in range(extra_files):
        (pad / f"f{i:05d}.txt").write_bytes(os.urandom(512))
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "demo", cwd=repo)
    return repo


def _data_archive(tmp_path: Path) -> Path:
    """The demo's data plus many small files, so that staging takes a moment."""
    source = tmp_path / "data-src" / "toy"
    source.mkdir(parents=True)
    with tarfile.open(RECIPES / "demo" / "data.tar.gz") as tar:
        tar.extractall(tmp_path / "data-src", filter="data")
    for i in range(SMALL_FILES):
        (source / f"pad{i:05d}.bin").write_bytes(os.urandom(256))
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="toy")
    return archive


def _recipe(tmp_path: Path, *, epochs: int, pad_files: int = 0, big_state: int = 0) -> Path:
    repo = _demo_as_git_repo(tmp_path, pad_files)
    archive = _data_archive(tmp_path)
    env = f"\n  env: {{DEMO_PAD_BYTES: '{big_state}'}}" if big_state else ""
    return write_recipe(
        tmp_path / "kill.yaml",
        f"name: demo\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        f"data: [{{source: '{archive}', to: '{{scratch}}/datasets/demo'}}]\n"
        "run:\n  script: train.py\n"
        "  args: ['--data_root', '{scratch}/datasets/demo/toy', '--logdir', '{ckpt}',"
        f" '--epochs', '{epochs}']\n"
        f"  match: '*.pt'\n  resume: ['--resume', '{{checkpoint}}']{env}\n",
    )


def _wait_for(found: Callable[[], bool], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not found():
        if time.monotonic() > end:
            raise AssertionError("the step's footprint never appeared")
        time.sleep(0.005)


def _kill_group(proc) -> None:  # type: ignore[no-untyped-def]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _rerun_and_check(sandbox: Sandbox, recipe: Path, epochs: int) -> str:
    sandbox.wipe_scratch()
    result = sandbox.cli(recipe, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"epoch {epochs - 1}: loss" in result.stdout
    staged = list((sandbox.scratch / "datasets/demo/toy").glob("pad*.bin"))
    assert len(staged) == SMALL_FILES  # never a half-staged folder taken as staged
    assert (sandbox.scratch / "repos/demo/train.py").is_file()
    for path in (sandbox.persist / "runs/demo/checkpoints").glob("*.pt"):
        import torch

        torch.load(path, weights_only=True)  # every mirrored file is complete
    return result.stdout


def _started_epoch(output: str) -> int:
    import re

    found = re.search(r"starting at epoch (\d+)", output)
    return int(found.group(1)) if found else 0


def test_kill_during_clone(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, epochs=2, pad_files=4000)
    partial = sandbox.scratch / "repos" / ".demo.cloning"
    proc = sandbox.popen(recipe)
    _wait_for(partial.exists)
    time.sleep(random.uniform(0, 0.2))
    _kill_group(proc)
    _rerun_and_check(sandbox, recipe, epochs=2)


def test_kill_during_staging(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, epochs=2)
    datasets = sandbox.scratch / "datasets"
    proc = sandbox.popen(recipe)
    _wait_for(lambda: datasets.is_dir() and any(p.name.startswith(".") for p in datasets.iterdir()))
    time.sleep(random.uniform(0, 0.2))
    _kill_group(proc)
    # Nothing half-staged is presented as staged. Staging can also finish before the kill
    # lands (it is fast): then the folder is there, and whole.
    toy = datasets / "demo" / "toy"
    assert not toy.exists() or len(list(toy.glob("pad*.bin"))) == SMALL_FILES
    _rerun_and_check(sandbox, recipe, epochs=2)


def test_kill_during_training_resumes_from_persist(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, epochs=12)
    proc = sandbox.popen(recipe)
    read_until(proc, "epoch 3: loss", timeout=120)
    mirror = sandbox.persist / "runs/demo/checkpoints"
    _wait_for(lambda: (mirror / "epoch-002.pt").exists())
    time.sleep(random.uniform(0, 0.3))
    _kill_group(proc)
    out = _rerun_and_check(sandbox, recipe, epochs=12)
    # work lost: at most what was not yet mirrored (a checkpoint interval and the mirror's lag)
    assert _started_epoch(out) >= 3


def test_kill_during_mirroring_never_publishes_a_torn_file(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    recipe = _recipe(tmp_path, epochs=8, big_state=30_000_000)  # 30 MB checkpoints
    mirror = sandbox.persist / "runs/demo/checkpoints"
    proc = sandbox.popen(recipe)
    _wait_for(
        lambda: mirror.is_dir() and any(p.name.startswith(".mirror-") for p in mirror.iterdir()),
        timeout=120,
    )
    time.sleep(random.uniform(0, 0.05))
    _kill_group(proc)
    out = _rerun_and_check(sandbox, recipe, epochs=8)
    assert "training finished" in out
