"""The training's pseudo-terminal: what a Colab `!` cell gives any command.

Colab runs every `!` command with one pseudo-terminal as its stdin, stdout and stderr (ONLCR
and ECHOCTL off) and writes what the user types into the cell's input box to it. The training
gets the same here, on Colab, in a terminal and in CI alike, so that code which checks isatty(),
asks `stty size` or draws progress bars behaves as when typed by hand.

Two settings differ from Colab's on purpose:

- The window size. Colab leaves it 0x0, and tqdm then draws nothing at all (no rows) or a
  one-character bar (no columns); the training gets our own terminal's size when we have one,
  else 24x120.
- ECHO, when we forward what the user types (our stdin is a terminal). The terminal we run on
  already echoes each line as it is typed (Colab's pty and a shell's terminal both have ECHO
  on), so the training's pty does not echo it again. This never touches the user's own terminal
  (a hard kill cannot leave it without echo), and what is typed, a token say, is not copied
  into the attempt log on persist. The cost: a getpass() in the training cannot hide what is
  typed, since the echo is not its to turn off (secrets belong in environment variables).

The pty is not made the training's controlling terminal. Colab's `!` does not make it one
either (no new session, no TIOCSCTTY), and a controlling terminal would add job-control signals
(SIGHUP to the training's workers when it exits, SIGINT from a ^C written to it) beside the
supervisor's, which alone decides what the training's process group is sent. Without one,
/dev/tty cannot be opened in the training, as on Colab; getpass() then uses stdin.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import struct
import termios
import threading

log = logging.getLogger(__name__)

DEFAULT_SIZE = (24, 120)  # rows, columns
_EXCEPTIONAL = select.POLLHUP | select.POLLERR | select.POLLNVAL


def window_size(fds: tuple[int, ...] = (1, 2, 0)) -> tuple[int, int]:
    """Our own terminal's (rows, columns), or DEFAULT_SIZE when we have none or it is 0x0."""
    for fd in fds:
        try:
            columns, rows = os.get_terminal_size(fd)
        except (OSError, ValueError):
            continue
        if rows and columns:
            return rows, columns
    return DEFAULT_SIZE


class Terminal:
    """A pseudo-terminal pair: ``slave`` for the child's stdin, stdout and stderr, ``master``
    for us. The master is non-blocking: the reader and the forwarder wait with poll()."""

    def __init__(self, *, echo: bool, size: tuple[int, int] | None = None):
        import pty

        self.master, self.slave = pty.openpty()
        try:
            attrs = termios.tcgetattr(self.slave)
            attrs[1] &= ~termios.ONLCR  # "\n" stays "\n", as on Colab
            attrs[3] &= ~termios.ECHOCTL
            if not echo:
                attrs[3] &= ~termios.ECHO
            termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
            rows, columns = size or window_size()
            winsize = struct.pack("HHHH", rows, columns, 0, 0)
            fcntl.ioctl(self.slave, termios.TIOCSWINSZ, winsize)
            os.set_blocking(self.master, False)
            self._eof = attrs[6][termios.VEOF]
        except BaseException:
            self.close()
            raise

    def close_slave(self) -> None:
        """Close ours once the child holds its copies: the master reads EIO when those close."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def send_eof(self) -> None:
        """Make the child's next read of its stdin return end of file (the VEOF character)."""
        if isinstance(self._eof, bytes):
            self.write(self._eof)

    def write(self, data: bytes, stop: threading.Event | None = None) -> None:
        """Send input to the child; given up when ``stop`` is set or the child side is gone."""
        while data and not (stop is not None and stop.is_set()):
            try:
                data = data[os.write(self.master, data) :]
            except BlockingIOError:  # its input queue is full: wait until it reads
                select.select([], [self.master], [], 0.1)
            except OSError:  # EIO: the child side is closed; nobody will read this
                return

    def close(self) -> None:
        self.close_slave()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


class InputForwarder:
    """Copies what the user types on our stdin (a terminal) to the training, for one attempt.

    Reads only when poll() says a line is there and the attempt is not over, so it never blocks
    in a read and never takes a line typed after the attempt ended (the next attempt's forwarder
    gets it). While we are a background job of our terminal it reads nothing: a read would stop
    the whole tool with SIGTTIN. A daemon thread, so it can never hold up the tool's exit.
    """

    def __init__(self, source: int, terminal: Terminal):
        self._source = source
        self._terminal = terminal
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="bootstrap-stdin", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop before the attempt's pty closes; returns within ``timeout`` whatever happens."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        self._thread.join(timeout)
        if not self._thread.is_alive():  # else it may still poll them: leave them open
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._source, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll())
                if self._stopping.is_set():
                    return
                ready = events.get(self._source, 0)
                if ready & _EXCEPTIONAL:  # our terminal hung up or went away
                    return
                if not ready:
                    continue
                if self._in_background():  # not ours to read now: look again in a while
                    select.select([self._wake_read], [], [], 0.25)
                    continue
                data = os.read(self._source, 4096)
                if self._stopping.is_set():
                    return
                if data:
                    self._terminal.write(data, self._stopping)
                else:  # the user typed Ctrl-D: the training sees the end of file too
                    self._terminal.send_eof()
        except OSError as exc:
            log.debug("stopped forwarding input to the training: %s", exc)

    def _in_background(self) -> bool:
        """Whether our stdin is our controlling terminal and another process group has it."""
        try:
            return os.tcgetpgrp(self._source) != os.getpgrp()
        except OSError:  # not our controlling terminal: no job control applies to reading it
            return False
