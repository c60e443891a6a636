"""``python -m bootstrap.training.ranked``: one torchrun rank, its output marked with its rank.

Under ``run.launcher: torchrun`` every rank inherits torchrun's stdout and stderr, the tool's
terminal: the ranks' lines would reach the console and the attempt log interleaved, with
nothing to tell them apart. So each rank runs this wrapper, which gives the training a
pseudo-terminal of its own (it still sees a terminal, as under ``python``: isatty, a window
size, progress bars), reads it, and writes what the training wrote to the real output with
each line, and each carriage-return redraw, marked ``[rank N] `` (``MARK``), a whole line at a
time so that ranks do not cut into each other's lines. The supervisor
(``bootstrap.runner.ranks``) shows rank 0's text on the console and keeps every rank's, marked,
in the attempt log.

Then it runs the training in this same process, as ``python`` would have::

    python -m bootstrap.training.ranked script PATH [ARG ...]    # python PATH ARG ...
    python -m bootstrap.training.ranked module NAME [ARG ...]    # python -m NAME ARG ...
    python -m bootstrap.training.ranked child                    # run.callable, loop mode

Nothing here imports torch.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import runpy
import select
import signal
import sys
import threading
import types
from collections.abc import Sequence

MARK = b"[rank %d] "
MARK_PATTERN = re.compile(rb"\[rank (\d+)\] ")
_SEGMENT = re.compile(rb"[^\r\n]*[\r\n]")  # a line, or a redraw ending in a carriage return
# A partial line (a prompt, print(end="")) is written after this long without its end.
_PARTIAL_AFTER = 0.2
_DRAIN_TIMEOUT = 2.0  # at exit, for workers the training started that still hold the pty


class RankOutput:
    """Makes fds 1 and 2 a pseudo-terminal whose output a thread copies, marked, to what fd 1
    was. ``close`` (registered with atexit) puts the real output back and drains the rest."""

    def __init__(self, rank: int):
        from bootstrap.terminal import Terminal, window_size

        self._mark = MARK % rank
        self._out = os.dup(1)
        # The outer terminal's size (0x0 on Colab is left to Terminal, which then picks one).
        self._terminal = Terminal(echo=False, size=window_size())
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._terminal.slave, 1)
        os.dup2(self._terminal.slave, 2)
        self._terminal.close_slave()
        self._at_line_start = True
        self._thread = threading.Thread(target=self._pump, name="rank-output", daemon=True)
        self._thread.start()

    def close(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        # The pty ends (reads EIO) once no process holds it: ours are fds 1 and 2.
        os.dup2(self._out, 1)
        os.dup2(self._out, 2)
        self._thread.join(_DRAIN_TIMEOUT)

    def _pump(self) -> None:
        # Signals sent to the process are the training's: a thread of ours that took one
        # would hide it from code that waits for it in a thread of its own (sigwait).
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        master = self._terminal.master
        pending = b""
        while True:
            ready, _, _ = select.select([master], [], [], _PARTIAL_AFTER)
            if not ready:
                if pending:  # a line that has not ended yet: show what there is
                    self._write(self._marked([pending]))
                    self._at_line_start = False
                    pending = b""
                continue
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                continue
            except OSError as error:
                if error.errno != errno.EIO:  # EIO: every copy of the pty is closed
                    raise
                data = b""
            if not data:
                break
            pending += data
            segments = _SEGMENT.findall(pending)
            pending = pending[sum(map(len, segments)) :]
            if segments:
                self._write(self._marked(segments))
        if pending:
            self._write(self._marked([pending]) + b"\n")

    def _marked(self, segments: Sequence[bytes]) -> bytes:
        out = []
        for segment in segments:
            out.append(self._mark + segment if self._at_line_start else segment)
            self._at_line_start = True
        return b"".join(out)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._out, view) :]
            except OSError:  # the tool is gone: nobody reads any more
                return


def _without_wrapper_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback from the training's first frame on: the frames down to ``_run`` and
    runpy's under it are this wrapper's, and `python train.py` would not show them."""
    entry = tb
    while entry is not None and entry.tb_frame.f_code is not _run.__code__:
        entry = entry.tb_next
    if entry is None:  # the wrapper itself failed: show all of it
        return tb
    entry = entry.tb_next
    while entry is not None and entry.tb_next is not None and _is_runpy(entry):
        entry = entry.tb_next
    return entry or tb


def _is_runpy(entry: types.TracebackType) -> bool:
    return entry.tb_frame.f_code.co_filename in ("<frozen runpy>", runpy.__file__)


def _report_as_python_would(
    kind: type[BaseException], error: BaseException, tb: types.TracebackType | None
) -> None:
    tb = _without_wrapper_frames(tb)
    # Python prints the traceback the exception holds, not the one it is given.
    sys.__excepthook__(kind, error.with_traceback(tb), tb)


def _run(argv: Sequence[str]) -> None:
    kind, *rest = argv
    if kind == "script" and rest:
        path, *args = rest
        sys.argv = [path, *args]
        # `python PATH` puts the script's folder first; `-m` put the working folder there.
        sys.path[0] = os.path.dirname(os.path.abspath(path))
        runpy.run_path(path, run_name="__main__")
    elif kind == "module" and rest:
        name, *args = rest
        sys.argv = [name, *args]
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    elif kind == "child" and not rest:
        from bootstrap.training.child import main

        sys.exit(main())
    else:
        sys.stderr.write(
            "usage: python -m bootstrap.training.ranked (script PATH | module NAME) [ARG ...]"
            " | child\n(started by `python -m bootstrap RECIPE` for run.launcher: torchrun)\n"
        )
        sys.exit(2)


def main() -> None:
    if sys.platform == "linux":
        from bootstrap.procs import die_with_parent

        die_with_parent()  # with torchrun, which the tool's own child dies with
        if os.getppid() == 1:  # torchrun died before that took hold: we are init's now
            sys.exit(1)
    rank = os.environ.get("RANK", "0")
    output = RankOutput(int(rank) if rank.isdigit() else 0)
    atexit.register(output.close)
    sys.excepthook = _report_as_python_would
    _run(sys.argv[1:])


if __name__ == "__main__":
    main()
