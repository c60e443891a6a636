"""The supervisor with tiny scripts (no torch): time limit, stop_grace, signals, log files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from bootstrap.runner.launch import LogWriter
from tests.conftest import Sandbox, read_until, write_recipe

STUBBORN = """\
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)   # a training that ignores Ctrl-C
print("started", flush=True)
while True:
    time.sleep(0.05)
"""

FOREVER = """\
import time
print("started", flush=True)
i = 0
while True:
    i += 1
    time.sleep(0.05)
"""


def _recipe(tmp_path: Path, script: str, run_extra: str = "") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "train.py").write_text(script)
    return write_recipe(
        tmp_path / "r.yaml",
        "name: sup\nrepo: {url: repo}\ninstall: {requirements: []}\n"
        f"run: {{script: train.py{run_extra}}}\n",
    )


def test_time_limit_stops_with_exit_5(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, FOREVER, ", time_limit: 2s, stop_grace: 5s")
    started = time.monotonic()
    result = sandbox.cli(recipe)
    assert result.returncode == 5, result.stderr
    assert "time limit" in result.stderr
    assert time.monotonic() - started < 30
    state = json.loads((sandbox.persist / "runs/sup/state.json").read_text())
    assert state["status"] == "stopped at time limit"
    assert "re-run the same command to continue" in result.stderr
    # the same command with --fresh would set the run aside again: the advice drops it
    fresh = sandbox.cli(recipe, "--fresh")
    assert fresh.returncode == 5, fresh.stderr
    assert "re-run without --fresh to continue" in fresh.stderr
    assert "re-run the same command" not in fresh.stderr


def test_time_limit_counts_from_vm_boot_on_colab(sandbox: Sandbox, tmp_path: Path) -> None:
    # On Colab the budget starts when the VM booted: one booted an hour ago with a 30 min
    # limit stops before launching anything.
    content = tmp_path / "content"
    (content / "drive" / "MyDrive").mkdir(parents=True)
    recipe = _recipe(tmp_path, FOREVER, ", time_limit: 30m")
    colab = {
        "BOOTSTRAP_COLAB": "1",
        "BOOTSTRAP_CONTENT_DIR": str(content),
        "BOOTSTRAP_BOOT_TIME": str(time.time() - 3600),
    }
    result = sandbox.cli(recipe, env=colab)
    assert result.returncode == 5, result.stderr
    assert "started" not in result.stdout
    # said as it is, before any setup: a re-run on this VM can only stop again
    assert "past run.time_limit (30m00s), so nothing was run" in result.stderr
    assert "this VM started 1h00m0" in result.stderr and "new runtime" in result.stderr
    assert not any(sandbox.scratch.iterdir())  # nothing cloned
    dry = sandbox.cli(recipe, "--dry-run", env=colab)
    assert "time_limit 30m00s (past it already: a run would stop at once)" in dry.stdout


def test_stop_grace_then_kill(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, STUBBORN, ", stop_grace: 1s")
    proc = sandbox.popen(recipe)
    read_until(proc, "started")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "did not stop within 1s" in out
    assert time.monotonic() - sent < 15


def test_second_signal_stops_at_once(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, STUBBORN, ", stop_grace: 10m")
    proc = sandbox.popen(recipe)
    read_until(proc, "started")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # Colab's second press
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert time.monotonic() - sent < 5


def test_each_attempt_has_its_own_log_with_progress_collapsed(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    script = (
        "import sys\n"
        "for i in range(5):\n"
        "    sys.stdout.write(f'\\rprogress {i*25}%')\n"
        "sys.stdout.write('\\ndone\\n')\n"
        "raise SystemExit(3)\n"
    )
    recipe = _recipe(tmp_path, script, ", restarts: 1")
    result = subprocess.run(
        [sys.executable, "-m", "bootstrap", str(recipe)],
        env=sandbox.env,
        capture_output=True,
        timeout=60,  # bytes: keep the \r as sent
    )
    assert result.returncode == 4
    assert b"\rprogress 25%\rprogress 50%" in result.stdout  # the console gets it untouched
    logs = sorted((sandbox.persist / "runs/sup/logs").glob("attempt-*.log"))
    assert len(logs) == 2
    assert logs[0].read_text() == "progress 100%\ndone\n"


def test_missing_script_fails_before_launching(sandbox: Sandbox, tmp_path: Path) -> None:
    _recipe(tmp_path, FOREVER)  # the repo has train.py
    recipe = write_recipe(
        tmp_path / "typo.yaml",
        "name: sup\nrepo: {url: repo}\ninstall: {requirements: []}\nrun: {script: trian.py}\n",
    )
    result = sandbox.cli(recipe)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    looked = sandbox.scratch / "repos" / "sup" / "trian.py"
    assert f"run.script: {looked} is not a file" in out
    assert "did you mean 'train.py'?" in out
    assert "started" not in out and "can't open file" not in out
    assert not list((sandbox.persist / "runs/sup/logs").glob("attempt-*.log"))


def test_script_made_by_run_prepare_is_found(sandbox: Sandbox, tmp_path: Path) -> None:
    # run.prepare runs before the training, so the check must wait until launch.
    recipe = _recipe(tmp_path, "print('made')\n", "")
    (tmp_path / "repo" / "make.py").write_text(
        "import shutil; shutil.move('train.py', 'made.py')\n"
    )
    recipe.write_text(
        recipe.read_text().replace(
            "script: train.py", "script: made.py, prepare: [{script: make.py}]"
        )
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "made" in result.stdout


def test_log_writer_keeps_last_state_of_carriage_return_lines(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "a.log")
    for chunk in (b"epoch 1\n 10%|#", b"   \r 50%|##", b"##\r100%|####\r\n", b"partial"):
        writer.feed(chunk)
    writer.close()
    assert (tmp_path / "a.log").read_bytes() == b"epoch 1\n100%|####\npartial\n"


def test_log_writer_leaves_out_terminal_control_sequences(tmp_path: Path) -> None:
    """Colours, erase-line and cursor moves (tqdm, rich, colorlog) are for the console only."""
    writer = LogWriter(tmp_path / "a.log")
    writer.feed(b"\x1b[1;32mINFO\x1b[0m loss 0.5\n\x1b]0;title\x07step 2\x1b[K\r")
    writer.feed(b"\x1b[2K\x1b[Astep 3\x1b(B\n")
    writer.close()
    assert (tmp_path / "a.log").read_bytes() == b"INFO loss 0.5\nstep 3\n"


def test_on_terminal_gives_the_training_a_tty_with_a_size(sandbox: Sandbox, tmp_path: Path) -> None:
    # pytorch-cifar's utils.py runs `stty size` at import; with stdin closed it crashes.
    # (tests/test_terminal.py has the rest: output, typed input, the window size we run in)
    script = (
        "import os, subprocess, sys\n"
        "print('tty', sys.stdin.isatty())\n"
        "print('size', subprocess.run(['stty', 'size'], capture_output=True, text=True,"
        " stdin=sys.stdin).stdout.strip())\n"
    )
    recipe = _recipe(tmp_path, script, ", stdin: terminal")
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stderr
    assert "tty True" in result.stdout
    assert "size 24 120" in result.stdout
    closed = _recipe(tmp_path, script, ", stdin: none")  # the opt-out: no terminal
    assert "tty False" in sandbox.cli(closed, "--fresh").stdout


def test_decide_reads_as_a_table() -> None:
    # The attempt loop's decisions, without launching anything.
    from bootstrap.errors import ExitCode
    from bootstrap.runner.attempts import AttemptResult, Ending, decide
    from bootstrap.runner.state import FAILED, FINISHED, INTERRUPTED, STOPPED

    def attempt(code: int, **kw: object) -> AttemptResult:
        facts = {"stop_reason": None, "past_deadline": False, "quick": True, "progressed": False}
        return AttemptResult(code=code, newest=None, **{**facts, **kw})  # type: ignore[arg-type]

    def run(result: AttemptResult, attempts: int = 2, left: int = 2, callable_: bool = False):
        return decide(
            result, attempts=attempts, restarts_left=left, restarts=3, callable_entry=callable_
        )

    assert run(attempt(0)) == Ending(FINISHED)
    assert run(attempt(0, past_deadline=True)) == Ending(STOPPED)
    assert run(attempt(-2, stop_reason=INTERRUPTED)) == Ending(INTERRUPTED)
    assert run(attempt(1, progressed=True)) is None  # a crash after progress: restart
    assert run(attempt(1), attempts=1) is None  # the first crash is never a loop
    loop = run(attempt(1))
    assert loop is not None and loop.status == FAILED and "crash loop" in loop.reason
    assert run(attempt(1, progressed=True), left=0).reason.endswith("(run.restarts: 3)")
    missing = run(attempt(78), callable_=True)
    assert missing is not None and missing.exit_code == ExitCode.USAGE
    assert run(attempt(78, progressed=True)) is None  # a script's own 78 is a crash
