"""The training runs on a pseudo-terminal, as a Colab `!` cell gives any command.

Through the real CLI on a plain-folder repo: once with the tool's stdin /dev/null and its
output a pipe (CI, a notebook), once on a pseudo-terminal set up like Colab's (ONLCR and
ECHOCTL off), where what is typed reaches the training; and `run.stdin: none`, the opt-out.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Sandbox, write_recipe

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

TRAINING = """\
import os, signal, subprocess, sys, time
from pathlib import Path

for fd in (0, 1, 2):
    if not os.isatty(fd):
        sys.exit(f"fd {fd} is not a terminal")
# pytorch-cifar's utils.py does this at import: it needs a terminal with a size.
size = subprocess.run(["stty", "size"], stdout=subprocess.PIPE, text=True, check=True).stdout
print("size", size.strip())
if "--eof" in sys.argv:
    signal.alarm(10)  # a read that waits for input nobody can type would hang the run
    try:
        input()
    except EOFError:
        print("stdin: end of file")
    else:
        sys.exit("stdin: read a line")
    signal.alarm(0)
print("waiting for go", flush=True)
go, end = Path(sys.argv[1]), time.monotonic() + 30
while not go.exists():
    if time.monotonic() > end:
        sys.exit("no go")
    time.sleep(0.02)
from tqdm import tqdm
for _ in tqdm(range(5), desc="steps", mininterval=0):
    time.sleep(0.05)
for i in range(300):  # a burst right before the exit: nothing of it may be lost
    print(f"line {i}")
print("done")
"""

ASK = """\
import os, subprocess, sys
from pathlib import Path
subprocess.run(["stty", "size"], check=True)
first = not Path("asked-once").exists()
Path("asked-once").touch()
name = input("name? ")
print("hello", name)
sys.exit(3 if first else 0)  # the first attempt crashes: the second must get its own input
"""

PROBE = """\
import os, sys
print(sys.argv[1], "ttys", [os.isatty(fd) for fd in (0, 1, 2)], flush=True)
"""


class Output:
    """Collects, in a thread, what a process writes to a pipe or a pseudo-terminal's master."""

    def __init__(self, fd: int):
        self.fd = fd
        self.data = b""
        self.closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the other side of the pty is closed
                chunk = b""
            with self._changed:
                if not chunk:
                    self.closed = True
                    self._changed.notify_all()
                    return
                self.data += chunk
                self._changed.notify_all()

    def wait_for(self, needle: bytes, count: int = 1, timeout: float = 30) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.data.count(needle) >= count or self.closed, timeout)
            if self.data.count(needle) < count:
                raise AssertionError(f"{needle!r} not seen {count}x in output:\n{self.text()}")

    def finish(self, timeout: float = 30) -> bytes:
        self._thread.join(timeout)
        return self.data

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _recipe(tmp_path: Path, script: str, run_extra: str = "", name: str = "tty") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "train.py").write_text(script)
    (repo / "probe.py").write_text(PROBE)
    return write_recipe(
        tmp_path / f"{name}.yaml",
        f"name: {name}\nrepo: {{url: repo}}\ninstall: {{requirements: []}}\n"
        f"run: {{script: train.py, restarts: 0{run_extra}}}\n",
    )


def _colab_pty(rows: int = 0, columns: int = 0) -> tuple[int, int]:
    """A pseudo-terminal set up as Colab sets up the one it gives a `!` command."""
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR
    attrs[3] &= ~termios.ECHOCTL
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def _cli_on_pty(sandbox: Sandbox, recipe: Path, rows: int = 0, columns: int = 0):
    master, slave = _colab_pty(rows, columns)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootstrap", str(recipe)],
        env=sandbox.env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=sandbox.root,
        start_new_session=True,  # as on Colab: the command has no controlling terminal
    )
    os.close(slave)
    return proc, master, Output(master)


def _attempt_logs(sandbox: Sandbox, name: str = "tty") -> list[bytes]:
    logs = sorted((sandbox.persist / "runs" / name / "logs").glob("attempt-*.log"))
    return [path.read_bytes() for path in logs]


def _check_clean_log(log: bytes, size: bytes) -> None:
    """The attempt log: every printed line, the bar only in its last state, no debris."""
    assert b"size " + size + b"\n" in log, log
    assert b"\r" not in log and b"\x1b" not in log and b"\x04" not in log, log
    bars = [line for line in log.split(b"\n") if line.startswith(b"steps:")]
    assert len(bars) == 1 and b"100%" in bars[0] and b"5/5" in bars[0], bars
    assert log.endswith(b"line 298\nline 299\ndone\n"), log[-200:]
    assert all(f"line {i}\n".encode() in log for i in range(300))


def test_training_gets_a_terminal_when_stdin_is_devnull(sandbox: Sandbox, tmp_path: Path) -> None:
    # CI or a notebook: the tool's stdin is /dev/null and its output a pipe.
    go = tmp_path / "go"
    recipe = _recipe(tmp_path, TRAINING, f', args: ["{go}", "--eof"]')
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootstrap", str(recipe)],
        env=sandbox.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=sandbox.root,
    )
    assert proc.stdout is not None
    out = Output(proc.stdout.fileno())
    try:
        out.wait_for(b"waiting for go")  # shown live, while the training still runs
        assert proc.poll() is None
        go.touch()
        assert proc.wait(60) == 0, out.text()
    finally:
        proc.kill()
    console = out.finish()
    # no window to copy: the default size; nobody can type: a read ends at once
    assert b"size 24 120\n" in console and b"stdin: end of file\n" in console, out.text()
    assert b"\r\n" not in console  # ONLCR off, like Colab: plain \n, untouched
    assert b"\rsteps:" in console  # the bar drew its intermediate states, live
    assert b"line 299\ndone\n" in console
    assert b"Traceback" not in console  # EIO at the end of the pty is no error
    [log] = _attempt_logs(sandbox)
    _check_clean_log(log, b"24 120")
    assert b"stdin: end of file\n" in log


def test_training_gets_a_terminal_when_the_tool_runs_on_one(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # A terminal, or a Colab cell: the tool's stdin, stdout and stderr are one pty.
    go = tmp_path / "go"
    recipe = _recipe(tmp_path, TRAINING, f', args: ["{go}"]')
    proc, master, out = _cli_on_pty(sandbox, recipe, rows=30, columns=100)
    try:
        out.wait_for(b"waiting for go")
        assert proc.poll() is None
        go.touch()
        assert proc.wait(60) == 0, out.text()
        console = out.finish()
    finally:
        proc.kill()
        os.close(master)
    assert b"size 30 100\n" in console, out.text()  # the window we run in
    assert b"\r\n" not in console
    assert b"\rsteps:" in console and b"line 299\ndone\n" in console
    [log] = _attempt_logs(sandbox)
    _check_clean_log(log, b"30 100")


def test_typed_input_reaches_the_training_once_per_attempt(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    recipe = _recipe(tmp_path, ASK, "", name="ask").read_text()
    recipe = recipe.replace("restarts: 0", "restarts: 1")
    recipe_path = write_recipe(tmp_path / "ask.yaml", recipe)
    proc, master, out = _cli_on_pty(sandbox, recipe_path)  # a 0x0 window, like Colab's
    try:
        out.wait_for(b"name? ")
        os.write(master, b"ada\n")  # what Colab writes when the user types into the cell
        out.wait_for(b"hello ada")
        # the second attempt gets the next line; the first one's forwarder is gone
        out.wait_for(b"name? ", count=2)
        os.write(master, b"bob\n")
        assert proc.wait(60) == 0, out.text()
        console = out.finish()
    finally:
        proc.kill()
        os.close(master)
    assert b"hello ada\n" in console and b"hello bob\n" in console, out.text()
    assert console.count(b"\n24 120\n") == 2  # Colab's 0x0 window: tqdm would draw nothing
    # shown once: our pty echoes what is typed (ECHO on, like Colab's); the training's does not
    assert console.count(b"ada") == 2 and console.count(b"bob") == 2, out.text()
    first, second = _attempt_logs(sandbox, "ask")
    assert first == b"24 120\nname? hello ada\n" and second == b"24 120\nname? hello bob\n"


def test_stdin_none_gives_closed_stdin_and_pipes(sandbox: Sandbox, tmp_path: Path) -> None:
    prepare = ', prepare: [{script: probe.py, args: ["prepare"]}]'
    recipe = _recipe(tmp_path, PROBE, prepare + ', args: ["train"], stdin: none', name="pipes")
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prepare ttys [False, False, False]" in result.stdout
    assert "train ttys [False, False, False]" in result.stdout
    # the default, for the prepare steps as for the training: one terminal
    recipe = _recipe(tmp_path, PROBE, prepare + ', args: ["train"]', name="default")
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prepare ttys [True, True, True]" in result.stdout
    assert "train ttys [True, True, True]" in result.stdout


def test_the_last_output_is_read_before_the_terminal_closes(tmp_path: Path) -> None:
    # A slow console: when the training exits, the last of its output is still in the pty.
    from bootstrap.runner.launch import TrainingProcess

    seen: list[bytes] = []

    def slow_console(chunk: bytes) -> None:
        time.sleep(0.02)
        seen.append(chunk)

    script = "for i in range(3000): print(f'line {i}')\n"
    proc = TrainingProcess(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=os.environ,
        log_path=tmp_path / "attempt.log",
        output=slow_console,
    )
    assert proc.wait(30) == 0
    proc.finish()
    out = b"".join(seen)
    assert out.count(b"\n") == 3000 and out.endswith(b"line 2999\n"), out[-100:]
    assert (tmp_path / "attempt.log").read_bytes() == out


def test_the_forwarder_takes_nothing_after_it_stops() -> None:
    # Our stdin is a terminal; a line typed after the attempt ended belongs to what runs next.
    from bootstrap.terminal import InputForwarder, Terminal

    typed, ours = _colab_pty()
    training = Terminal(echo=False)
    forwarder = InputForwarder(ours, training)
    try:
        os.write(typed, b"ada\n")
        os.set_blocking(training.slave, True)
        assert os.read(training.slave, 100) == b"ada\n"  # what the training reads
        started = time.monotonic()
        forwarder.stop()
        assert time.monotonic() - started < 1  # never holds up the supervisor
        os.write(typed, b"bob\n")
        time.sleep(0.3)
        os.set_blocking(ours, False)
        assert os.read(ours, 100) == b"bob\n"  # still there for the next reader
    finally:
        forwarder.stop()
        training.close()
        os.close(typed)
        os.close(ours)
