"""run.prepare (commands before the training) and run.stop_after (a bounded session), through
the real CLI on a plain-folder repo."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.conftest import Sandbox, read_until, write_recipe

PREPARE = """\
import os, sys, time
from pathlib import Path
runs = Path(os.environ["PREP_COUNT"])
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
print("preparing", *sys.argv[1:], flush=True)
if os.environ.get("PREP_SLOW"):
    Path("data/half.bin").parent.mkdir(exist_ok=True)
    Path("data/half.bin").write_bytes(b"partial")
    time.sleep(60)
if os.environ.get("PREP_FAIL"):
    sys.exit("prepare: the raw text is missing")
Path("data").mkdir(exist_ok=True)
Path("data/train.bin").write_bytes(b"tokens")
"""

TRAIN = """\
import os, sys, time
from pathlib import Path
assert Path("data/train.bin").read_bytes() == b"tokens", "prepare did not run first"
print("training on data/train.bin", flush=True)
if os.environ.get("TRAIN_FOREVER"):
    ckpt = Path(os.environ["BOOTSTRAP_CHECKPOINTS"])
    ckpt.mkdir(parents=True, exist_ok=True)
    try:
        for step in range(10_000):
            (ckpt / "last.txt").write_text(str(step))
            print("step", step, flush=True)
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("stopping cleanly", flush=True)
        sys.exit(0)
"""


def _recipe(tmp_path: Path, sandbox: Sandbox, extra_run: str = "") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "prepare.py").write_text(PREPARE)
    (repo / "train.py").write_text(TRAIN)
    sandbox.env["PREP_COUNT"] = str(tmp_path / "prep-count")
    return write_recipe(
        tmp_path / "r.yaml",
        f"""\
name: prep
repo: {{url: "{repo}"}}
install: {{requirements: []}}
run:
  script: train.py
  restarts: 0
  prepare:
    - script: prepare.py
      args: ["--out", "{{repo}}/data"]
      creates: data/train.bin
{extra_run}""",
    )


def _prepare_runs(tmp_path: Path) -> int:
    path = tmp_path / "prep-count"
    return len(path.read_text()) if path.exists() else 0


def test_prepare_runs_once_per_vm_and_again_when_its_outputs_are_gone(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    recipe = _recipe(tmp_path, sandbox)
    first = sandbox.cli(recipe, "--fresh")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"preparing --out {sandbox.scratch}/repos/prep/data" in first.stdout
    assert "training on data/train.bin" in first.stdout
    assert _prepare_runs(tmp_path) == 1
    logs = sandbox.persist / "runs" / "prep" / "logs"
    assert "preparing" in (logs / "prepare-0.log").read_text()

    again = sandbox.cli(recipe, "--fresh")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already done on this VM" in again.stderr  # the step list
    assert _prepare_runs(tmp_path) == 1

    (sandbox.scratch / "repos" / "prep" / "data" / "train.bin").unlink()
    outputs_gone = sandbox.cli(recipe, "--fresh")
    assert outputs_gone.returncode == 0, outputs_gone.stdout + outputs_gone.stderr
    assert _prepare_runs(tmp_path) == 2

    sandbox.wipe_scratch()  # a new VM: the clone and the marker are gone
    new_vm = sandbox.cli(recipe, "--fresh")
    assert new_vm.returncode == 0, new_vm.stdout + new_vm.stderr
    assert _prepare_runs(tmp_path) == 3


def test_failing_prepare_stops_before_training_with_exit_3(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    recipe = _recipe(tmp_path, sandbox)
    failed = sandbox.cli(recipe, env={"PREP_FAIL": "1"})
    assert failed.returncode == 3, failed.stdout + failed.stderr
    out = failed.stdout + failed.stderr
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert "run.prepare[0]" in errors[0] and "prepare.py" in errors[0], out
    assert errors[0].endswith("exited with code 1"), out
    assert "the raw text is missing" in out  # the command's last lines are shown
    assert "prepare-0.log" in out  # and the fix points at its log
    assert "Traceback" not in out
    assert "training on" not in out
    assert (
        not (sandbox.persist / "runs" / "prep" / "state.json").exists()
        or json.loads((sandbox.persist / "runs" / "prep" / "state.json").read_text()).get(
            "attempts", []
        )
        == []
    )
    assert not list((sandbox.scratch / ".bootstrap" / "prep").glob("prepare*"))

    fixed = sandbox.cli(recipe)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert _prepare_runs(tmp_path) == 2


def test_prepare_killed_half_way_is_run_again_even_if_outputs_exist(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    recipe = write_recipe(
        tmp_path / "r2.yaml",
        _recipe(tmp_path, sandbox).read_text().replace("data/train.bin", "data/*.bin"),
    )
    proc = sandbox.popen(recipe, env={"PREP_SLOW": "1"})
    try:
        read_until(proc, "preparing")
        deadline = time.monotonic() + 10
        half = sandbox.scratch / "repos" / "prep" / "data" / "half.bin"
        while not half.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert half.exists()
        os.killpg(proc.pid, signal.SIGKILL)  # the whole tool, the prepare command with it
    finally:
        proc.wait(10)
    # `creates` matches the partial output, but no marker was written: it must run again.
    rerun = sandbox.cli(recipe)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert _prepare_runs(tmp_path) == 2
    assert "training on data/train.bin" in rerun.stdout


def test_stop_after_ends_the_session_with_exit_0_and_the_next_run_continues(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    recipe = _recipe(tmp_path, sandbox, "  stop_after: 1.5s\n  stop_grace: 10s\n")
    started = time.monotonic()
    first = sandbox.cli(recipe, env={"TRAIN_FOREVER": "1"})
    took = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    assert "stopping cleanly" in first.stdout
    assert "run.stop_after" in first.stdout + first.stderr
    assert took < 30
    state = json.loads((sandbox.persist / "runs" / "prep" / "state.json").read_text())
    assert state["status"] == "stopped after run.stop_after"  # resumable, not finished
    mirrored = sandbox.persist / "runs" / "prep" / "checkpoints" / "last.txt"
    assert int(mirrored.read_text()) >= 1

    second = sandbox.cli(recipe, env={"TRAIN_FOREVER": "1"})
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already finished" not in second.stdout
    assert "training on" in second.stdout
