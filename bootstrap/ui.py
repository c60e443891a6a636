"""The console: a step list with status and timing, progress bars, the closing summary.

Tool messages go to stderr and the training's own output to stdout, untouched. When stderr is
not a terminal (CI logs, files) everything is plain lines: no escape codes, and progress is a
line every few seconds instead of a redrawn bar. A Colab `!` cell is a terminal whose window is
0 columns by 0 rows, and its output area honours carriage returns: bars are drawn there at a
fixed width. Styling is a handful of ANSI codes written by ``Console`` here: a rendering library
would cost more start-up time than the whole warm re-run's own work, and one more package pinned
in the user's environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

from bootstrap.errors import StepCancelled
from bootstrap.progress import ProgressBar
from bootstrap.values import format_bytes

_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "bold red": "1;31"}


class Console:
    """Whole lines on a text stream, styled only where the stream is a terminal that wants it.

    ``NO_COLOR`` (set and not empty, as https://no-color.org defines it) and ``TERM=dumb`` turn
    styling off.
    """

    def __init__(self, file: IO[str]):
        self.file = file
        isatty = getattr(file, "isatty", None)
        self.is_terminal = bool(isatty and isatty())
        self.color = (
            self.is_terminal and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        )
        # Setup steps run in threads: a line is written whole, and around the progress shown.
        self.lock = threading.RLock()
        self.status: _StatusLine | None = None

    def style(self, text: str, style: str) -> str:
        code = _SGR.get(style) if self.color else None
        return f"\x1b[{code}m{text}\x1b[0m" if code else text

    def print(self, text: str, style: str = "") -> None:
        line = self.style(text, style) + "\n"
        with self.lock:
            if self.status is not None:
                self.status.clear()
            tqdm = sys.modules.get("tqdm")  # bars are open, or were: print above them
            above = (
                tqdm.tqdm.external_write_mode(file=self.file) if tqdm else contextlib.nullcontext()
            )
            with above:
                self.file.write(line)
                self.file.flush()
            if self.status is not None:
                self.status.draw(force=True)


_MIN_LINE_INTERVAL = 5.0
# A bar's width where the terminal reports none: a Colab cell's output area is about this wide,
# and wraps a longer line rather than breaking the carriage-return redraw.
_FALLBACK_COLUMNS = 100


def window_size(stream: IO[str]) -> tuple[int, int] | None:
    """The (columns, rows) of the terminal behind ``stream``, or None where it has no usable
    size: not a terminal, or a window of 0x0 as Colab leaves it on a `!` cell's pty."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is an OSError
        return None
    return (columns, rows) if columns > 0 and rows > 0 else None


def _fallback_columns() -> int:
    # COLUMNS is the usual way to tell a program the width it cannot read (shutil honours it).
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isdigit() and int(value) > 0 else _FALLBACK_COLUMNS


def _human(amount: float, unit: str) -> str:
    return format_bytes(amount) if unit == "B" else f"{int(amount)} {unit}"


class _LineBar:
    """Progress as occasional plain lines, for logs that are not terminals."""

    def __init__(self, console: Console, description: str, total: int | None, unit: str):
        self._console, self._desc, self._total, self._unit = console, description, total, unit
        self._done = 0
        self._last = time.monotonic()
        self._started = self._last

    def advance(self, amount: int) -> None:
        self._done += amount
        now = time.monotonic()
        if now - self._last >= _MIN_LINE_INTERVAL:
            self._last = now
            self._console.print(f"  {self._desc}: {self._status()}")

    def set_total(self, total: int | None) -> None:
        self._total = total

    def set_description(self, text: str) -> None:
        self._desc = text

    def close(self) -> None:
        if time.monotonic() - self._started >= _MIN_LINE_INTERVAL:
            self._console.print(f"  {self._desc}: {self._status()}")

    def _status(self) -> str:
        done = _human(self._done, self._unit)
        if self._total:
            pct = 100 * self._done / self._total
            return f"{done} of {_human(self._total, self._unit)} ({pct:.0f}%)"
        return done


class _TqdmBar:
    def __init__(self, stream: IO[str], description: str, total: int | None, unit: str):
        from tqdm import tqdm

        scale = unit == "B"
        # Only where the terminal has a size (a Colab cell's 0x0 window gets a _StatusLine):
        # tqdm's dynamic_ncols reads the window's size less one, and drew nothing on a 0x0 one.
        self._bar = tqdm(
            total=total,
            desc=f"  {description}",
            unit=unit,
            unit_scale=scale,  # powers of 1000, as format_bytes writes sizes in messages
            file=stream,
            leave=False,
            dynamic_ncols=True,
        )

    def advance(self, amount: int) -> None:
        self._bar.update(amount)

    def set_total(self, total: int | None) -> None:
        self._bar.total = total
        self._bar.refresh()

    def set_description(self, text: str) -> None:
        self._bar.set_description_str(f"  {text[:60]}", refresh=True)

    def close(self) -> None:
        self._bar.close()


class _StatusLine:
    """Every open bar as a part of one line, redrawn with a carriage return.

    For a terminal that reports no size: a Colab cell, whose output area honours ``\r`` but not
    the cursor movements that bars on lines of their own need (several setup steps run at once),
    so those would pile up as new lines. Drawn at most every ``_REDRAW`` seconds.
    """

    _REDRAW = 0.2

    def __init__(self, console: Console):
        self._console = console
        self._parts: list[_Part] = []
        self._drawn = 0.0
        self._width = 0  # of what is on the line now, to blank out when it gets shorter

    def open(self, description: str, total: int | None, unit: str) -> _Part:
        part = _Part(self, description, total, unit)
        with self._console.lock:
            self._parts.append(part)
            self.draw(force=True)
        return part

    def close(self, part: _Part) -> None:
        with self._console.lock:
            self._parts.remove(part)
            self.clear()
            self.draw(force=True)

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._parts or (not force and now - self._drawn < self._REDRAW):
            return
        with self._console.lock:
            self._drawn = now
            columns = _fallback_columns() - 1
            text = "  " + " · ".join(part.text() for part in self._parts)
            text = text if len(text) <= columns else text[: columns - 1] + "…"
            self._console.file.write("\r" + text.ljust(self._width))  # blanks a longer one
            self._console.file.flush()
            self._width = len(text)

    def clear(self) -> None:
        if self._width:
            self._console.file.write("\r" + " " * self._width + "\r")
            self._console.file.flush()
            self._width = 0


class _Part:
    """One bar of a ``_StatusLine``."""

    def __init__(self, line: _StatusLine, description: str, total: int | None, unit: str):
        self._line, self._desc, self._total, self._unit = line, description, total, unit
        self._done = 0

    def text(self) -> str:
        desc = self._desc if len(self._desc) <= 40 else self._desc[:39] + "…"
        done = _human(self._done, self._unit)
        if self._total:
            return f"{desc} {100 * self._done / self._total:.0f}% ({done})"
        return f"{desc} {done}"

    def advance(self, amount: int) -> None:
        self._done += amount
        self._line.draw()

    def set_total(self, total: int | None) -> None:
        self._total = total
        self._line.draw(force=True)

    def set_description(self, text: str) -> None:
        self._desc = text.strip()
        self._line.draw()

    def close(self) -> None:
        self._line.close(self)


class _Step:
    def __init__(self) -> None:
        self.skipped: str | None = None
        self.detail: str | None = None
        self.mark = ("✓", "green")

    def skip(self, reason: str) -> None:
        self.skipped = reason

    def note(self, detail: str) -> None:
        self.detail = detail

    def failed(self, detail: str) -> None:
        self.detail, self.mark = detail, ("✗", "red")

    def stopped(self, detail: str) -> None:
        self.detail, self.mark = detail, ("■", "yellow")


class ConsoleReporter:
    def __init__(
        self,
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        out: IO[bytes] | None = None,
        bars: bool | None = None,
    ):
        self._stream = stream or sys.stderr
        self._out = out
        self.console = Console(self._stream)
        self.quiet = quiet
        self._bars = self.console.is_terminal if bars is None else bars

    def progress(self, description: str, total: int | None = None, unit: str = "B") -> ProgressBar:
        if self.quiet:
            from bootstrap.progress import no_progress

            return no_progress(description, total, unit)
        if not self._bars:
            return _LineBar(self.console, description, total, unit)
        if window_size(self._stream):  # a real terminal: each bar on a line of its own
            return _TqdmBar(self._stream, description, total, unit)
        with self.console.lock:
            if self.console.status is None:
                self.console.status = _StatusLine(self.console)
            return self.console.status.open(description, total, unit)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[_Step]:
        step = _Step()
        started = time.monotonic()
        if title == "train" and not self.quiet:
            self.console.print(f"▸ {title}", "bold")
        try:
            yield step
        except StepCancelled:  # another step failed, or Stop was pressed
            self._line(("■", "yellow"), title, "stopped", time.monotonic() - started)
            raise
        except BaseException:
            self._line(("✗", "red"), title, "failed", time.monotonic() - started)
            raise
        seconds = time.monotonic() - started
        if step.skipped is not None:
            self._line(("–", "dim"), title, f"skipped: {step.skipped}", seconds)
        else:
            self._line(step.mark, title, step.detail or "done", seconds)

    def _line(self, mark: tuple[str, str], title: str, text: str, seconds: float) -> None:
        if self.quiet:
            return
        style = self.console.style
        took = style(f"({seconds:.1f} s)", "dim")
        self.console.print(f"{style(*mark)} {title:<12} {text} {took}")

    def output(self, chunk: bytes) -> None:
        if self._out is not None:
            self._out.write(chunk)
            self._out.flush()
            return
        # A notebook kernel's sys.stdout is a text stream with no byte buffer underneath.
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is not None:
            buffer.write(chunk)
            buffer.flush()
        else:
            sys.stdout.write(chunk.decode("utf-8", errors="replace"))
            sys.stdout.flush()

    def message(self, text: str, style: str = "") -> None:
        self.console.print(text, style)


class ConsoleLogHandler(logging.Handler):
    """Log records as short plain lines on the console: warnings stand out, info is quiet."""

    _STYLES = {logging.DEBUG: "dim", logging.INFO: "dim", logging.WARNING: "yellow"}

    def __init__(self, console: Console, level: int = logging.INFO):
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = self._STYLES.get(record.levelno, "bold red")
            prefix = "! " if record.levelno >= logging.WARNING else "  "
            self.console.print(prefix + record.getMessage(), style)
        except Exception:  # a log line must never take the run down
            self.handleError(record)
