"""run.callable and loop mode through the real CLI: kwargs, checkpoint=, crashes, stops."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, Sandbox, read_until, write_recipe

pytestmark = pytest.mark.slow

CALLABLES = """\
import json, os, sys


def main(out, steps, tag, checkpoint):
    import torch

    model = torch.nn.Linear(2, 2)
    start = checkpoint.restore(model=model)
    for step in range(start, steps):
        checkpoint.save(step, model=model)
    with open(out, "w") as handle:
        json.dump({"cwd": os.getcwd(), "path0": sys.path[0], "folder": str(checkpoint.folder),
                   "type": type(checkpoint).__name__, "steps": steps, "tag": tag}, handle)
    print("callable done", flush=True)


def plain(**kwargs):
    print("plain got", sorted(kwargs), "torch imported:", "torch" in sys.modules, flush=True)


def flaky(marker, steps, checkpoint):
    import torch

    model = torch.nn.Linear(2, 2)
    start = checkpoint.restore(model=model)
    print(f"start at {start}", flush=True)
    for step in range(start, steps):
        checkpoint.save(step, model=model)
        if step == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("boom at step 1")
"""

LOOPY = """\
import time

import torch


class Counter:  # no state_dict: passed through, rebuilt by setup on every start
    calls = 0


def setup(width, delay=0.0):  # gets only the kwargs it names
    torch.manual_seed(0)
    model = torch.nn.Linear(width, 1)
    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
            "loader": [torch.ones(2, width)], "device": "cpu", "counter": Counter()}


def epoch(epoch, model, optimizer, loader, device, counter, width, delay, note, slow_from=0):
    assert isinstance(loader, list) and device == "cpu", (loader, device)
    counter.calls += 1
    for x in loader:
        optimizer.zero_grad()
        model(x.to(device)).pow(2).mean().backward()
        optimizer.step()
    print(f"trained epoch {epoch} ({note}, call {counter.calls} here)", flush=True)
    if epoch >= slow_from:
        time.sleep(delay)


def bad_setup(width):
    return [torch.nn.Linear(width, 1)]
"""


# A module that is there but whose own import of a package fails: a crash, not a recipe mistake.
NEEDS_MISSING = """\
import not_installed_pkg_xyz


def main():
    pass
"""


def _repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "callables.py").write_text(CALLABLES)
    (repo / "loopy.py").write_text(LOOPY)
    (repo / "needs_missing.py").write_text(NEEDS_MISSING)


def _recipe(tmp_path: Path, name: str, run: str) -> Path:
    _repo(tmp_path)
    return write_recipe(
        tmp_path / f"{name}.yaml",
        f"name: {name}\nrepo: {{url: repo}}\ninstall: {{requirements: []}}\nrun: {{{run}}}\n",
    )


def _loop_recipe(tmp_path: Path, name: str, epochs: int, delay: float, extra: str = "") -> Path:
    return _recipe(
        tmp_path,
        name,
        f'callable: "loopy:epoch", setup: "loopy:setup", epochs: {epochs}, '
        f'kwargs: {{width: 4, delay: {delay}, note: "{{name}}"}}, stop_grace: 30s{extra}',
    )


def _state(sandbox: Sandbox, name: str) -> dict:
    return json.loads((sandbox.persist / "runs" / name / "state.json").read_text())


def _attempt_logs(sandbox: Sandbox, name: str) -> str:
    logs = sorted((sandbox.persist / "runs" / name / "logs").glob("attempt-*.log"))
    return "".join(log.read_text() for log in logs)


def _done_epochs(output: str) -> list[int]:
    return [int(e) for e in re.findall(r"\[bootstrap\] epoch (\d+) done", output)]


def test_callable_gets_kwargs_cwd_and_a_checkpointer(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = _recipe(
        tmp_path,
        "cb",
        'callable: "callables:main", checkpoints: "{scratch}/my ckpts", '
        'kwargs: {out: "{scratch}/out.json", steps: 3, tag: "{name}-${MY_TAG}"}',
    )
    result = sandbox.cli(recipe, env={"MY_TAG": "x"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "callable done" in result.stdout
    seen = json.loads((sandbox.scratch / "out.json").read_text())
    work = sandbox.scratch / "repos" / "cb"
    assert seen["cwd"] == str(work) and seen["path0"] == str(work)
    assert seen["type"] == "Checkpointer"
    assert seen["folder"] == str(sandbox.scratch / "my ckpts")  # bound to run.checkpoints
    assert seen["steps"] == 3 and seen["tag"] == "cb-x"
    assert sorted(p.name for p in (sandbox.scratch / "my ckpts").glob("step-*.pt")) == [
        f"step-00000000{i}.pt" for i in range(3)
    ]
    assert (sandbox.persist / "runs/cb/checkpoints/step-000000002.pt").is_file()  # mirrored
    assert "callable done" in _attempt_logs(sandbox, "cb")

    plain = _recipe(tmp_path, "plain", 'callable: "callables:plain", kwargs: {a: 1, b: [2]}')
    result = sandbox.cli(plain)
    assert result.returncode == 0, result.stdout + result.stderr
    # No checkpoint= for a function that does not name it, and no torch import for it.
    assert "plain got ['a', 'b'] torch imported: False" in result.stdout


def test_exception_is_a_crash_restarted_from_the_checkpoint(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    recipe = _recipe(
        tmp_path,
        "flaky",
        'callable: "callables:flaky", restarts: 2, '
        'kwargs: {marker: "{scratch}/crashed-once", steps: 4}',
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" in result.stdout and "RuntimeError: boom at step 1" in result.stdout
    assert "RuntimeError: boom at step 1" in _attempt_logs(sandbox, "flaky")
    assert "exited with code 1; restarting (restart 1 of 2)" in result.stderr
    assert re.findall(r"start at (\d+)", result.stdout) == ["0", "2"]
    assert [a["exit_code"] for a in _state(sandbox, "flaky")["attempts"]] == [1, 0]


def test_loop_mode_saves_stateful_objects_and_passes_the_rest_through(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    recipe = _loop_recipe(tmp_path, "lp", epochs=3, delay=0)
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "checkpointing model, optimizer; passed through unsaved (no state_dict): " in out
    assert "loader, device, counter" in out
    assert "trained epoch 0 (lp, call 1 here)" in out and "trained epoch 2 (lp, call 3 here)" in out
    assert "epoch 2 done (3/3, checkpoint step-000000002.pt)" in out
    assert "all 3 epochs done" in out
    payload = torch.load(sandbox.scratch / "checkpoints/lp/step-000000002.pt", weights_only=True)
    assert set(payload["objects"]) == {"model", "optimizer"}
    assert payload["objects"]["optimizer"]["param_groups"][0]["lr"] == 0.1

    # "train 2 more": raise run.epochs; --extend continues the finished run at epoch 3
    assert "already finished" in sandbox.cli(recipe, "--set", "run.epochs=5").stderr
    more = sandbox.cli(recipe, "--extend", "--set", "run.epochs=5")
    assert more.returncode == 0, more.stdout + more.stderr
    assert _done_epochs(more.stderr + more.stdout) == [3, 4]
    assert "all 5 epochs done" in more.stdout + more.stderr


def test_loop_mode_bad_setup_is_a_crash_with_a_clear_message(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    recipe = _recipe(
        tmp_path,
        "bad",
        'callable: "loopy:epoch", setup: "loopy:bad_setup", epochs: 2, restarts: 0, '
        "kwargs: {width: 4}",
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "run.setup loopy:bad_setup returned list, expected a dict" in result.stdout


@pytest.mark.parametrize(
    ("run", "error"),
    [
        (
            'callable: "callables:mian"',
            "run.callable: callables:mian: module callables has no attribute 'mian'; "
            "did you mean 'main'?",
        ),
        (
            'callable: "callabels:main"',
            "run.callable: callabels:main: no module named 'callabels'; did you mean 'callables'?",
        ),
        ('callable: "callables:json"', "run.callable: callables:json: not callable"),
        (
            'callable: "loopy:epoch", setup: "loopy:setpu", epochs: 2',
            "run.setup: loopy:setpu: module loopy has no attribute 'setpu'; did you mean 'setup'?",
        ),
    ],
)
def test_missing_entry_point_is_a_recipe_error_not_restarted(
    sandbox: Sandbox, tmp_path: Path, run: str, error: str
) -> None:
    recipe = _recipe(tmp_path, "ep", f"{run}, restarts: 3")
    result = sandbox.cli(recipe)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert f"[bootstrap] error: {error}" in result.stdout
    assert "Traceback" not in out and "restarting" not in out
    assert "entry point was not found" in out and "fix run.callable or run.setup" in out
    state = _state(sandbox, "ep")
    assert state["status"] == "failed"
    assert [a["exit_code"] for a in state["attempts"]] == [78]


def test_missing_package_imported_by_the_module_is_still_a_crash(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    recipe = _recipe(tmp_path, "dep", 'callable: "needs_missing:main", restarts: 1')
    result = sandbox.cli(recipe)
    out = result.stdout + result.stderr
    assert result.returncode == 4, out
    assert "Traceback" in result.stdout
    assert "No module named 'not_installed_pkg_xyz'" in result.stdout
    assert "[bootstrap] error:" not in out
    assert "exited with code 1; restarting (restart 1 of 1)" in result.stderr
    assert [a["exit_code"] for a in _state(sandbox, "dep")["attempts"]] == [1, 1]


def test_loop_mode_sigint_finishes_the_epoch_then_exits_130_and_continues(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    recipe = _loop_recipe(tmp_path, "stop", epochs=30, delay=0.5)
    proc = sandbox.popen(recipe)
    try:
        seen = read_until(proc, "epoch 1 done")
        proc.send_signal(signal.SIGINT)  # Colab's Stop button: to the tool, mid-epoch 2
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = seen + rest
    assert proc.returncode == 130, out
    assert "KeyboardInterrupt" not in out and "Traceback" not in out
    stopped = re.search(r"stopping after epoch (\d+) as asked", out)
    assert stopped, out
    last = int(stopped.group(1))
    assert last in (2, 3), out  # the epoch under way was finished, promptly
    assert _done_epochs(out) == list(range(last + 1))
    assert (sandbox.persist / f"runs/stop/checkpoints/step-{last:09d}.pt").is_file()
    assert _state(sandbox, "stop")["status"] == "interrupted"

    again = sandbox.cli(recipe, "--set", f"run.epochs={last + 3}", "--set", "run.kwargs.delay=0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming at epoch {last + 1} ({last + 1} of {last + 3} done)" in again.stdout
    assert _done_epochs(again.stdout) == [last + 1, last + 2]
    assert f"trained epoch {last + 1} (stop, call 1 here)" in again.stdout


def test_loop_mode_time_limit_exits_5_and_next_run_continues(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Epochs 0 and 1 take no time and the limit leaves 10 s for the child to start: two epochs
    # are done before it, even on a slow machine; the rest take 0.5 s, so the limit stops one.
    recipe = _loop_recipe(tmp_path, "tl", epochs=100, delay=0.5, extra=", time_limit: 10s")
    first = sandbox.cli(recipe, "--set", "run.kwargs.slow_from=2")
    assert first.returncode == 5, first.stdout + first.stderr
    assert "time limit" in first.stderr
    assert "Traceback" not in first.stdout
    done = _done_epochs(first.stdout)
    assert len(done) >= 2 and done == list(range(len(done))), first.stdout
    last = done[-1]
    assert f"stopping after epoch {last} as asked" in first.stdout
    assert (sandbox.persist / f"runs/tl/checkpoints/step-{last:09d}.pt").is_file()

    again = sandbox.cli(
        recipe, "--set", "run.time_limit=null", "--set", f"run.epochs={last + 3}",
        "--set", "run.kwargs.delay=0",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming at epoch {last + 1} ({last + 1} of {last + 3} done)" in again.stdout
    assert _done_epochs(again.stdout) == [last + 1, last + 2]
    assert f"trained epoch {last + 1} (tl, call 1 here)" in again.stdout


def test_child_without_a_recipe_says_how_it_is_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTSTRAP_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "bootstrap.training.child"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "python -m bootstrap RECIPE" in result.stderr
