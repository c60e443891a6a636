"""Everything a resume needs reaches persist: the CLI on a training whose resume reads files
saved beside its checkpoint, killed hard once a checkpoint is mirrored, on a new VM."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Sandbox, read_until, write_recipe

pytestmark = pytest.mark.slow

# Like many real repos: the run's config is written beside the checkpoints at the start, and
# the resume reads it back (and crashes without it); TensorBoard-like events go to the repo.
TRAIN = """
import argparse, json, os, sys, time
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--resume", action="store_true")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
config_path = os.path.join(args.out, "config.json")
ckpt_path = os.path.join(args.out, "ckpt.pt")
if args.resume:
    with open(config_path) as f:  # FileNotFoundError when only the checkpoint came back
        config = json.load(f)
    step = torch.load(ckpt_path)["step"]
    print(f"resumed at step {step} with lr {config['lr']}", flush=True)
else:
    config, step = {"lr": 0.1}, 0
    with open(config_path, "w") as f:
        json.dump(config, f)
os.makedirs("runs", exist_ok=True)
os.makedirs(os.path.join(args.out, "junk"), exist_ok=True)
while step < args.steps:
    step += 1
    time.sleep(0.1)
    torch.save({"step": step}, ckpt_path)
    with open(os.path.join("runs", "events.txt"), "a") as f:
        f.write(f"step {step}\\n")
    with open(os.path.join(args.out, "junk", "big.bin"), "wb") as f:
        f.write(os.urandom(1 << 16))
    print(f"step {step}", flush=True)
print("training finished", flush=True)
"""


def _recipe(tmp_path: Path, steps: int) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "train.py").write_text(TRAIN)
    return write_recipe(
        tmp_path / f"kept-{steps}.yaml",
        f"name: kept\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run:\n  script: train.py\n"
        f"  args: ['--out', '{{ckpt}}', '--steps', '{steps}']\n"
        "  match: '*.pt'\n  resume: ['--resume']\n"
        "  keep: ['{repo}/runs']\n  exclude: [junk]\n",
    )


def test_a_resume_that_reads_files_beside_its_checkpoint_survives_a_new_vm(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    run = sandbox.persist / "runs" / "kept"
    proc = sandbox.popen(_recipe(tmp_path, 400))
    try:
        read_until(proc, "step 5")
        end = time.monotonic() + 30
        while not (
            (run / "checkpoints" / "ckpt.pt").exists()
            and (run / "kept" / "repo" / "runs" / "events.txt").exists()
        ):
            assert time.monotonic() < end, "nothing reached persist"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (run / "checkpoints" / "config.json").exists()
    assert not (run / "checkpoints" / "junk").exists()  # run.exclude
    sandbox.wipe_scratch()

    import torch  # the test reads the mirrored checkpoint the way the training will

    mirrored = torch.load(run / "checkpoints" / "ckpt.pt")["step"]
    again = sandbox.cli(_recipe(tmp_path, mirrored + 5), timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed at step" in again.stdout and "lr 0.1" in again.stdout
    assert "training finished" in again.stdout
    # The events came back to the repo and went on from where they were.
    events = (run / "kept" / "repo" / "runs" / "events.txt").read_text().splitlines()
    assert events[0] == "step 1" and events[-1] == f"step {mirrored + 5}"
    assert f"resumed at step {mirrored} " in again.stdout
    assert not (run / "checkpoints" / "junk").exists()


def test_restore_kept_brings_folder_checkpoints_back_whole_only(tmp_path: Path) -> None:
    """What the setup step restores on a new VM: a folder checkpoint only with its marker (the
    mirror put it there whole), and everything else in the checkpoints folder."""
    from bootstrap.host import Host
    from bootstrap.plan import resolve_plan
    from bootstrap.recipe.load import load_recipe
    from bootstrap.runner.kept import restore_kept

    recipe = load_recipe(
        write_recipe(
            tmp_path / "r.yaml",
            "name: hf\nrepo: {url: ./code}\n"
            "run: {script: train.py, match: 'checkpoint-*/trainer_state.json'}\n",
        ),
        environ={},
    )
    host = Host(
        on_colab=False, content_dir=tmp_path, drive_mounted=False, gpu_names=(), boot_time=0.0
    )
    plan = resolve_plan(
        recipe, host, persist=str(tmp_path / "p"), scratch=str(tmp_path / "s"), environ={}
    )
    for step, names in ((3, ["weights.bin", "trainer_state.json"]), (6, ["weights.bin"])):
        for name in names:
            path = plan.mirror_dir / f"checkpoint-{step}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}" if name.endswith(".json") else "w" * 64)
    (plan.mirror_dir / "config.json").write_text("{}")
    restored = restore_kept(plan)
    assert sorted(restored) == [plan.checkpoints / "checkpoint-3", plan.checkpoints / "config.json"]
    assert not (plan.checkpoints / "checkpoint-6").exists()  # no marker: not one the mirror made
