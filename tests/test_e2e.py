"""End to end: the real CLI on the demo's real torch training repo, on CPU, killed for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Sandbox, read_until, write_recipe

pytestmark = pytest.mark.slow


def _epochs_started_at(output: str) -> int | None:
    found = re.search(r"starting at epoch (\d+)", output)
    return int(found.group(1)) if found else None


def _state(sandbox: Sandbox, name: str = "demo") -> dict:
    return json.loads((sandbox.persist / "runs" / name / "state.json").read_text())


def _wait_for_mirror(sandbox: Sandbox, pattern: str, timeout: float = 30) -> list[Path]:
    mirror = sandbox.persist / "runs" / "demo" / "checkpoints"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = sorted(mirror.glob(pattern))
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"nothing matching {pattern} mirrored to {mirror}")


def test_demo_finishes_and_second_run_says_finished(sandbox: Sandbox, demo: Path) -> None:
    first = sandbox.cli(demo, "--set", "run.args[5]=4")  # 4 epochs
    assert first.returncode == 0, first.stdout + first.stderr
    assert "epoch 3: loss" in first.stdout
    assert "training finished" in first.stdout
    assert "the training finished" in first.stderr
    mirrored = sorted((sandbox.persist / "runs/demo/checkpoints").glob("*.pt"))
    assert [p.name for p in mirrored] == [f"epoch-{i:03d}.pt" for i in range(4)]
    assert _state(sandbox)["status"] == "finished"
    logs = list((sandbox.persist / "runs/demo/logs").glob("attempt-*.log"))
    assert len(logs) == 1 and "epoch 3: loss" in logs[0].read_text()

    status = sandbox.cli(demo, "--status")
    assert status.returncode == 0, status.stderr
    assert "demo: finished" in status.stdout and "attempts     1" in status.stdout
    assert "epoch-003.pt" in status.stdout and "(mirrored" not in status.stdout
    assert "; mirrored)" in status.stdout

    debug_logs = sorted((sandbox.persist / "runs/demo/logs").glob("bootstrap-*.log"))
    second = sandbox.cli(demo)
    assert second.returncode == 0
    assert "already finished" in second.stderr
    assert "epoch" not in second.stdout
    # nothing happened, so no new (empty) debug log
    assert sorted((sandbox.persist / "runs/demo/logs").glob("bootstrap-*.log")) == debug_logs
    assert "--extend" in second.stderr and "--fresh" in second.stderr

    # two more epochs: the finished run trains on from its newest checkpoint
    extended = sandbox.cli(demo, "--extend", "--set", "run.args[5]=6")
    assert extended.returncode == 0, extended.stderr
    assert _epochs_started_at(extended.stdout) == 4, extended.stdout
    assert "epoch 5: loss" in extended.stdout and "epoch 3: loss" not in extended.stdout
    assert (sandbox.persist / "runs/demo/checkpoints/epoch-005.pt").is_file()
    assert _state(sandbox)["status"] == "finished"

    # one checkpoint on scratch that never reached the mirror (the VM went first, say)
    unmirrored = sandbox.scratch / "checkpoints/demo/epoch-099.pt"
    unmirrored.write_bytes(b"not mirrored yet")
    fresh = sandbox.cli(demo, "--fresh", "--set", "run.args[5]=1")
    assert fresh.returncode == 0, fresh.stderr
    assert "epoch 0: loss" in fresh.stdout
    previous = sandbox.persist / "runs/demo/previous"
    # set aside once: scratch copies identical to mirrored ones are not uploaded again
    assert [p.parent.name for p in previous.rglob("epoch-003.pt")] == ["mirrored"]
    assert [p.read_bytes() for p in previous.rglob("scratch/epoch-099.pt")] == [b"not mirrored yet"]


def test_sigkill_new_vm_restores_from_persist_and_resumes(sandbox: Sandbox, demo: Path) -> None:
    proc = sandbox.popen(demo, "--set", "run.args[5]=30")
    try:
        read_until(proc, "epoch 2: loss")
        _wait_for_mirror(sandbox, "epoch-002.pt")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the tool and its children
        proc.wait()
    sandbox.wipe_scratch()  # a new VM: the clone, the data and the checkpoints are gone

    again = sandbox.cli(demo, "--set", "run.args[5]=5")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "restored" in again.stderr
    start = _epochs_started_at(again.stdout)
    assert start is not None and start >= 3, again.stdout
    assert "training finished" in again.stdout


def test_crash_is_restarted_with_resume(sandbox: Sandbox, demo: Path) -> None:
    result = sandbox.cli(demo, "--set", "run.args[5]=4", env={"DEMO_CRASH_AT_EPOCH": "2"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "simulated crash at epoch 2" in result.stdout
    assert "restarting (restart 1 of 2)" in result.stderr
    assert _epochs_started_at(result.stdout) == 2
    attempts = _state(sandbox)["attempts"]
    assert [a["exit_code"] for a in attempts] == [1, 0]
    assert attempts[1]["resumed_from"].endswith("epoch-001.pt")


def test_crash_loop_stops_relaunching(sandbox: Sandbox, tmp_path: Path) -> None:
    repo = tmp_path / "crasher"
    repo.mkdir()
    (repo / "train.py").write_text("raise SystemExit('broken config')\n")
    recipe = write_recipe(
        tmp_path / "crash.yaml",
        "name: crash\nrepo: {url: crasher}\ninstall: {requirements: []}\n"
        "run: {script: train.py, restarts: 5}\n",
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 4, result.stderr
    assert "crash loop" in result.stderr
    assert "✗ train" in result.stderr and "✓ train" not in result.stderr
    assert len(_state(sandbox, "crash")["attempts"]) == 2


def _status(sandbox: Sandbox, recipe: Path) -> str:
    return sandbox.cli(recipe, "--status").stdout


def test_status_names_the_signal_that_ended_an_attempt(sandbox: Sandbox, tmp_path: Path) -> None:
    repo = tmp_path / "sleeper"
    repo.mkdir()
    (repo / "train.py").write_text(
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_DFL)  # a stop kills it outright\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    recipe = write_recipe(
        tmp_path / "sleeper.yaml",
        f"name: sleeper\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {script: train.py}\n",
    )
    proc = sandbox.popen(recipe)
    try:
        read_until(proc, "ready")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "exit -2 (ended by SIGINT)" in _status(sandbox, recipe)


def test_sigint_stops_cleanly_and_rerun_continues(sandbox: Sandbox, demo: Path) -> None:
    proc = sandbox.popen(demo, "--set", "run.args[5]=30")
    try:
        read_until(proc, "epoch 1: loss")
        proc.send_signal(signal.SIGINT)  # Colab's Stop button: SIGINT to the tool only
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "re-run the same command to continue" in out
    assert "■ train" in out and "✓ train" not in out  # stopped, to be continued: not done
    assert _state(sandbox)["status"] == "interrupted"
    # The demo dies of the KeyboardInterrupt: exit -2, or 1 where torch's exit-time report
    # (torch._dynamo, imported by the optimizer) finds tabulate installed, as on Colab.
    assert re.search(r"#1 .* exit (-2 \(ended by SIGINT\)|1)\n", _status(sandbox, demo))
    assert list((sandbox.persist / "runs/demo/checkpoints").glob("epoch-001.pt"))

    again = sandbox.cli(demo, "--set", "run.args[5]=4")
    assert again.returncode == 0, again.stderr
    assert "✓ train" in again.stderr
    start = _epochs_started_at(again.stdout)
    assert start is not None and start >= 2


def test_keep_holds_installed_torch(sandbox: Sandbox, tmp_path: Path) -> None:
    import torch

    repo = tmp_path / "pinned"
    repo.mkdir()
    (repo / "requirements.txt").write_text("torch==1.13.1\n")
    (repo / "train.py").write_text("import torch; print('torch', torch.__version__)\n")
    recipe = write_recipe(
        tmp_path / "pinned.yaml",
        "name: pinned\nrepo: {url: pinned}\n"
        "install: {requirements: auto, pip_args: ['--no-index']}\n"
        "run: {script: train.py}\n",
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"torch {torch.__version__}" in result.stdout
    assert "held torch" in result.stderr


def test_parent_never_imports_torch(sandbox: Sandbox, demo: Path) -> None:
    probe = (
        "import sys\n"
        "from bootstrap.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'the parent imported torch'\n"
        # Nor what a repo's requirements commonly pin to other versions: the tool shares the
        # user's Python, so what it imports there is what a user's install can break.
        "late = {'pydantic', 'rich', 'numpy', 'urllib.request'} & set(sys.modules)\n"
        "assert not late, f'the parent imported {late}'\n"
        "print('PARENT-CLEAN', code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(demo), "--set", "run.args[5]=1"],
        env=sandbox.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert "PARENT-CLEAN 0" in result.stdout, result.stdout + result.stderr
    assert "epoch 0: loss" in result.stdout  # the child did import torch and train


def _plan_lines(output: str) -> list[str]:
    return [" ".join(line.split()) for line in output.splitlines()]


def test_dry_run_shows_the_resolved_plan_and_has_no_side_effects(
    sandbox: Sandbox, demo: Path
) -> None:
    persist, scratch, python = sandbox.persist, sandbox.scratch, sys.executable
    before = sorted(sandbox.root.rglob("*"))
    result = sandbox.cli(demo, "--dry-run", "--set", "run.args[5]=2")
    assert result.returncode == 0, result.stderr
    assert sorted(sandbox.root.rglob("*")) == before
    shown = _plan_lines(result.stdout)
    ckpt, data = scratch / "checkpoints/demo", scratch / "datasets/demo"
    fresh_command = (
        f"command {python} {scratch}/repos/demo/train.py --data_root {data}/toy "
        f"--logdir {ckpt} --epochs 2"
    )
    for line in [
        f"run folder {persist}/runs/demo",
        "run state new, 0 attempt(s) so far",
        f"clone {scratch}/repos/demo (would clone)",
        f"data[0] {demo.parent}/demo/data.tar.gz -> {data} (skipped when already staged)",
        f"checkpoints {ckpt}",
        f"mirror {persist}/runs/demo/checkpoints (0 file(s); the whole folder)",
        fresh_command,  # nothing to resume from: no --resume
        f"in {scratch}/repos/demo",
    ]:
        assert line in shown, f"{line!r} not in:\n{result.stdout}"

    # A lost VM: the run's checkpoints are on persist only. The plan restores and resumes.
    assert sandbox.cli(demo, "--set", "run.args[5]=2").returncode == 0
    sandbox.wipe_scratch()
    before = sorted(sandbox.root.rglob("*"))
    again = sandbox.cli(demo, "--dry-run", "--set", "run.args[5]=4", "--extend")
    assert again.returncode == 0, again.stderr
    assert sorted(sandbox.root.rglob("*")) == before
    shown = _plan_lines(again.stdout)
    for line in [
        "run state finished, 1 attempt(s) so far",
        f"checkpoints {ckpt}, 2 would be restored from the mirror",
        f"mirror {persist}/runs/demo/checkpoints (2 file(s); the whole folder)",
        fresh_command.replace("--epochs 2", "--epochs 4") + f" --resume {ckpt}/epoch-001.pt",
    ]:
        assert line in shown, f"{line!r} not in:\n{again.stdout}"

    missing = sandbox.cli(demo, "--dry-run", "--set", "data[0].source=nowhere.tar.gz")
    assert missing.returncode == 0, missing.stderr
    assert f"data[0] {demo.parent}/nowhere.tar.gz -> {data} (MISSING: a run would stop here)" in (
        _plan_lines(missing.stdout)
    ), missing.stdout


def _offline(recipe: Path) -> bool:
    """Whether a shipped recipe runs here: its repo is a local folder, not a URL."""
    import yaml

    url = str(yaml.safe_load(recipe.read_text(encoding="utf-8"))["repo"]["url"])
    return "://" not in url and not url.startswith("git@")


def test_smoke_workflow_loop_runs_every_offline_recipe_and_reports_a_broken_one(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The users' CI template, run for real: its loop, word for word, with --smoke over every
    shipped recipe that runs offline (the others clone from GitHub: CI's smoke job runs them),
    and a broken recipe between them, which must fail the loop without stopping it."""
    import yaml

    workflow = yaml.safe_load((ROOT / "recipes/smoke-workflow.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["smoke"]["steps"]
    script = next(s["run"] for s in steps if s.get("name", "").startswith("Run every recipe"))
    shipped = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", shipped)  # their paths are relative to the recipe file
    offline = [path for path in sorted(shipped.glob("*.yaml")) if _offline(path)]
    assert [path.name for path in offline] == ["demo.yaml"]  # a new offline recipe joins here
    broken = write_recipe(tmp_path / "broken.yaml", "version: 1\nname: broken\nrepo: {}\n")
    bindir = sandbox.root / "bin"
    bindir.mkdir()
    wrapper = bindir / "python"  # `python` on PATH is this test's interpreter, venv and all
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **sandbox.env,
        "RECIPES": " ".join(map(str, [offline[0], broken, *offline[1:]])),
        "PATH": f"{bindir}:{sandbox.env['PATH']}",
    }
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert [line for line in result.stdout.splitlines() if line.startswith("::error")] == [
        f"::error file={broken}::smoke run failed"
    ]
    assert result.stdout.count("::group::") == len(offline) + 1
    for recipe in offline:
        name = yaml.safe_load(recipe.read_text(encoding="utf-8"))["name"]
        state = json.loads((sandbox.persist / "smoke/runs" / name / "state.json").read_text())
        assert state["status"] == "finished", (recipe, state)
    assert result.stdout.count("training finished") == len(offline), out


def test_persist_failing_for_a_while_does_not_stop_training(sandbox: Sandbox, demo: Path) -> None:
    """Drive drops (ENOTCONN) for the first seconds: one warning, the mirror catches up."""
    import torch

    result = sandbox.cli(
        demo, "--set", "run.args[5]=12", env={"BOOTSTRAP_FAULT_PERSIST": "ENOTCONN:1.5"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("persist is failing") == 1
    assert "Transport endpoint is not connected" in result.stderr
    mirror = sandbox.persist / "runs/demo/checkpoints"
    mirrored = sorted(p.name for p in mirror.glob("*.pt"))
    assert mirrored == [f"epoch-{i:03d}.pt" for i in range(12)]
    for path in mirror.glob("*.pt"):
        assert torch.load(path, weights_only=True)["epoch"] >= 0  # complete, loadable


def test_the_training_finds_this_package_but_none_of_its_modules_as_top_level_names(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The folder holding the package goes on the training's PYTHONPATH (a source checkout
    run without installing), not the package's own folder: that one would make `data`,
    `repo`, `init` ... importable as top-level modules, shadowing a repo's own."""
    repo = tmp_path / "probe"
    repo.mkdir()
    (repo / "train.py").write_text(
        "import os\nprint('PATH=' + os.environ['PYTHONPATH'], flush=True)\n"
    )
    recipe = write_recipe(
        tmp_path / "probe.yaml",
        f"name: probe\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {script: train.py}\n",
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("PATH=")]
    entries = [Path(p) for p in line[len("PATH=") :].split(os.pathsep)]
    assert (entries[-1] / "bootstrap" / "__init__.py").is_file()
    assert not any((p / "runner" / "launch.py").is_file() for p in entries), entries
