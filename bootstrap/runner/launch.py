"""Start the training as a child process and tee its output.

The child runs in its own process group (so the supervisor can signal it and every worker it
starts at once) and dies with the supervisor (PR_SET_PDEATHSIG on Linux), so a killed cell never
leaves an orphan training holding the GPU. By default its stdin, stdout and stderr are one
pseudo-terminal, as a Colab `!` cell gives any command (bootstrap.terminal); with
`run.stdin: none` its stdin is closed and its output a pipe. Its output goes untouched to the
console and, with carriage-return progress collapsed to its last state and terminal control
sequences left out, to a log file. The log is written from its own thread through a bounded
queue: when persist is slow or failing, log lines are dropped, never the training blocked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bootstrap.nodes import rendezvous_options
from bootstrap.plan import Plan
from bootstrap.procs import descendants, die_with_parent

if TYPE_CHECKING:
    from bootstrap.terminal import InputForwarder, Terminal

log = logging.getLogger(__name__)

OutputSink = Callable[[bytes], None]


def build_command(plan: Plan, resume: Sequence[str], python: str = sys.executable) -> list[str]:
    run = plan.recipe.run
    kind, entry = run.entry_kind, plan.entry
    if run.launcher == "torchrun":
        # Each rank runs the training through a wrapper that marks its output with its rank.
        start = [python, *torchrun_options(plan), "-m", "bootstrap.training.ranked"]
        if kind == "script":
            return [*start, "script", str(plan.work_dir / entry), *plan.args, *resume]
        if kind == "module":
            return [*start, "module", entry, *plan.args, *resume]
        return [*start, "child"]
    if kind == "script":
        return [python, str(plan.work_dir / entry), *plan.args, *resume]
    if kind == "module":
        return [python, "-m", entry, *plan.args, *resume]
    # callable and loop mode: a small runner inside the package imports and calls it.
    return [python, "-m", "bootstrap.training.child"]


def torchrun_options(plan: Plan, environ: Mapping[str, str] | None = None) -> list[str]:
    """``-m torch.distributed.run`` and its options (the tool restarts the whole group itself,
    so torchrun's own restarts are off). On a stop, the tool signals torchrun alone, which
    forwards the signal to every rank once and gives them run.stop_grace before it kills them
    (its --shutdown-timeout). One machine, unless the environment describes several
    (``rendezvous_options``)."""
    run = plan.recipe.run
    return [
        "-m", "torch.distributed.run",
        *rendezvous_options(os.environ if environ is None else environ),
        "--nproc-per-node", str(process_count(plan)),
        "--max-restarts", "0",
        "--shutdown-timeout", str(max(1, math.ceil(run.stop_grace))),
    ]  # fmt: skip


def process_count(plan: Plan) -> int:
    """run.nproc: a number as given; auto, every GPU the host shows (1 without one, and under
    --smoke, which hides them)."""
    nproc = plan.recipe.run.nproc
    if nproc != "auto":
        return nproc
    return 1 if plan.smoke else max(1, len(plan.host.gpu_names))


def child_environment(plan: Plan, base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    # Python buffers stdout in a pipe (run.stdin: none); unbuffered keeps progress and logs live.
    env["PYTHONUNBUFFERED"] = "1"
    # {repo} first, as the recipe promises; the folder holding this package last, so that
    # `python -m bootstrap.training.child` and `from bootstrap import Checkpointer` work even
    # when the tool runs from a source checkout, without shadowing anything the training imports.
    own = str(Path(__file__).resolve().parents[2])
    parts = [str(plan.work_dir), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(parts + ([own] if own not in parts else []))
    env["BOOTSTRAP_RUN_DIR"] = str(plan.run_dir)
    env["BOOTSTRAP_CHECKPOINTS"] = str(plan.checkpoints)
    env["BOOTSTRAP_RECIPE_NAME"] = plan.name
    if plan.deadline is not None:
        env["BOOTSTRAP_DEADLINE"] = repr(plan.deadline)
    # Stale values from an outer environment must not turn a plain call into loop mode.
    for name in ("BOOTSTRAP_CALLABLE", "BOOTSTRAP_KWARGS", "BOOTSTRAP_SETUP", "BOOTSTRAP_EPOCHS"):
        env.pop(name, None)
    run = plan.recipe.run
    if run.entry_kind == "callable":
        env["BOOTSTRAP_CALLABLE"] = plan.entry
        env["BOOTSTRAP_KWARGS"] = json.dumps(plan.kwargs)
        if run.setup is not None and run.epochs is not None:  # loop mode
            env["BOOTSTRAP_SETUP"] = run.setup
            env["BOOTSTRAP_EPOCHS"] = str(run.epochs)
    if plan.smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # --smoke: a CPU-only environment
    env.update(plan.env)
    return env


def describe_exit(code: int) -> str:
    """A child's exit status as a sentence ends: "exited with code 1", "was killed by SIGKILL"."""
    if code < 0:
        return f"was killed by {signal_name(-code)}"
    return f"exited with code {code}"


def signal_name(number: int) -> str:
    """The signal's name ("SIGINT"), or "signal 99" for a number that has none."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class LogWriter:
    """Writes output to a log file, keeping only the last state of carriage-return lines."""

    MAX_QUEUED = 10_000

    def __init__(self, path: Path):
        self.path = path
        self._queue: queue.Queue[bytes | None] = queue.Queue(self.MAX_QUEUED)
        self._partial = b""
        self.dropped = 0
        self._failed = False
        self._thread = threading.Thread(target=self._drain, name="bootstrap-log", daemon=True)
        self._thread.start()

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._put(_last_state(line) + b"\n")

    def close(self, timeout: float = 10.0) -> None:
        if self._partial:
            self._put(_last_state(self._partial) + b"\n")
            self._partial = b""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _put(self, line: bytes) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        handle = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "ab")  # noqa: SIM115 - closed in finally
        except OSError as exc:
            self._warn(exc)
        try:
            while (line := self._queue.get()) is not None:
                if handle is None:
                    continue
                try:
                    handle.write(line)
                    if self._queue.empty():
                        handle.flush()
                except OSError as exc:
                    self._warn(exc)
        finally:
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()

    def _warn(self, exc: OSError) -> None:
        if not self._failed:
            self._failed = True
            log.warning("cannot write the training log %s (%s); output still shown", self.path, exc)


def read_output(fd: int) -> bytes:
    """Read what the child wrote to its pipe or pty; b"" at the end of its output.

    A pty master reads EIO on Linux, not b"", once every copy of the child's side is closed
    and everything written to it was read: that is the end of the output too.
    """
    while True:
        select.select([fd], [], [])
        try:
            return os.read(fd, 65536)
        except BlockingIOError:  # the pty master is non-blocking
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


# Terminal control sequences: CSI (colours, cursor moves, erase line), OSC (window titles,
# hyperlinks), character set choices (ESC ( B) and the two-byte ones. The training draws for
# a terminal; the log is for reading.
_ESCAPES = re.compile(
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]+[0-~]|[@-Z\\-_])"
)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:  # gone
        return None


def _last_state(line: bytes) -> bytes:
    line = _ESCAPES.sub(b"", line).rstrip(b"\r")
    return line.rsplit(b"\r", 1)[-1]


class TrainingProcess:
    """One attempt of the training: a child process group with its output teed.

    ``on_terminal`` (run.stdin: terminal, the default) gives the child one pseudo-terminal
    as stdin, stdout and stderr, and, when our own stdin is a terminal, forwards what the user
    types to it; otherwise its stdin is closed and its stdout and stderr one pipe.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        output: OutputSink,
        on_terminal: bool = True,
    ):
        self.argv = list(argv)
        self.log = LogWriter(log_path)
        self._output = output
        self._terminal: Terminal | None = None
        self._forwarder: InputForwarder | None = None
        if on_terminal:
            self.proc, self._terminal = self._spawn_on_terminal(cwd, env)
            self._source = self._terminal.master
        else:
            self.proc = self._spawn(cwd, env, subprocess.DEVNULL, subprocess.PIPE)
            assert self.proc.stdout is not None  # set by Popen(stdout=PIPE)
            self._source = self.proc.stdout.fileno()
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._pump, name="bootstrap-tee", daemon=True)
        self._reader.start()

    def _spawn_on_terminal(
        self, cwd: Path, env: Mapping[str, str]
    ) -> tuple[subprocess.Popen[bytes], Terminal]:
        from bootstrap.terminal import InputForwarder, Terminal

        # Someone can type only when our own stdin is a terminal (a Colab cell, a shell).
        typing = os.isatty(0)
        terminal = Terminal(echo=not typing)
        try:
            proc = self._spawn(cwd, env, terminal.slave, terminal.slave)
        except BaseException:
            terminal.close()
            self.log.close()
            raise
        terminal.close_slave()  # the child holds its own copies
        if typing:
            self._forwarder = InputForwarder(0, terminal)
        else:
            # Nobody can type (CI, a notebook kernel, nohup): a prompt ends at once with
            # EOFError, as with stdin closed, instead of waiting forever.
            terminal.send_eof()
        return proc, terminal

    def _spawn(
        self, cwd: Path, env: Mapping[str, str], stdin: int, stdout: int
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=stdin,
            stdout=stdout,
            # one stream, in the order written: the same pty, or the stdout pipe
            stderr=stdout if stdout != subprocess.PIPE else subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )

    def _pump(self) -> None:
        while chunk := read_output(self._source):
            with contextlib.suppress(Exception):
                self._output(chunk)
            self.log.feed(chunk)

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        """Signal the whole process group (the training and any workers it started), and the
        processes below it in groups of their own (torchrun starts each rank in a session of
        its own: killing torchrun alone would leave them running, holding the GPU)."""
        elsewhere = [pid for pid in descendants(self.pid) if _group_of(pid) != self.pid]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        for pid in elsewhere:  # once each: the group's members have it already
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def signal_leader(self, sig: int) -> None:
        """Signal the process the tool started only (torchrun, which forwards it to its ranks:
        signalled through the group too, each rank would get it twice)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, sig)

    def finish(self) -> None:
        """After exit: stop forwarding input, end leftover workers, drain the remaining output,
        close the log."""
        # First, so that no line typed from now on is taken: it belongs to what runs next.
        if self._forwarder is not None:
            self._forwarder.stop()
            self._forwarder = None
        # Workers that outlived the training would hold the GPU and keep the pipe or pty open.
        self.signal(signal.SIGKILL)
        # All of the output, up to the end: closing before would lose its last lines.
        self._reader.join(timeout=10)
        if self._reader.is_alive():
            # Something outside the process group still holds the child's side. Closing now
            # would let the reader's fd number be reused, and read someone else's data.
            log.debug("output of %s still open after its exit; left open", self.argv[0])
        else:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            if self._terminal is not None:
                self._terminal.close()
                self._terminal = None
        self.log.close()
