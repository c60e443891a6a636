"""The console: a step list with status and timing, progress bars, the closing summary.

Tool messages go to stderr and the training's own output to stdout, untouched. When stderr is
not a terminal (CI logs, files) everything is plain lines: no escape codes, and progress is a
line every few seconds instead of a redrawn bar. A Colab cell is not a terminal but renders
carriage returns, so bars are drawn there too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import IO

from rich.console import Console
from rich.markup import escape

from bootstrap.progress import ProgressBar

_MIN_LINE_INTERVAL = 5.0


def _human(amount: float, unit: str) -> str:
    if unit != "B":
        return f"{int(amount)} {unit}"
    for suffix in ("B", "KB", "MB", "GB", "TB"):
        if abs(amount) < 1024 or suffix == "TB":
            return f"{amount:.0f} {suffix}" if suffix == "B" else f"{amount:.1f} {suffix}"
        amount /= 1024
    return f"{amount:.1f} TB"


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
            self._console.print(f"  {escape(self._desc)}: {self._status()}", highlight=False)

    def set_total(self, total: int | None) -> None:
        self._total = total

    def set_description(self, text: str) -> None:
        self._desc = text

    def close(self) -> None:
        if time.monotonic() - self._started >= _MIN_LINE_INTERVAL:
            self._console.print(f"  {escape(self._desc)}: {self._status()}", highlight=False)

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
        self._bar = tqdm(
            total=total,
            desc=f"  {description}",
            unit=unit,
            unit_scale=scale,
            unit_divisor=1024 if scale else 1000,
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


class _Step:
    def __init__(self) -> None:
        self.skipped: str | None = None
        self.detail: str | None = None

    def skip(self, reason: str) -> None:
        self.skipped = reason

    def note(self, detail: str) -> None:
        self.detail = detail


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
        self.console = Console(file=self._stream, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self._bars = self.console.is_terminal if bars is None else bars

    def progress(self, description: str, total: int | None = None, unit: str = "B") -> ProgressBar:
        if self.quiet:
            from bootstrap.progress import no_progress

            return no_progress(description, total, unit)
        if self._bars:
            return _TqdmBar(self._stream, description, total, unit)
        return _LineBar(self.console, description, total, unit)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[_Step]:
        step = _Step()
        started = time.monotonic()
        if title == "train" and not self.quiet:
            self.console.print(f"[bold]▸ {title}[/bold]")
        try:
            yield step
        except BaseException:
            self._line("[red]✗[/red]", title, "failed", time.monotonic() - started)
            raise
        seconds = time.monotonic() - started
        if step.skipped is not None:
            self._line("[dim]–[/dim]", title, f"skipped: {step.skipped}", seconds)
        else:
            self._line("[green]✓[/green]", title, step.detail or "done", seconds)

    def _line(self, mark: str, title: str, text: str, seconds: float) -> None:
        if self.quiet:
            return
        self.console.print(f"{mark} {title:<12} {escape(text)} [dim]({seconds:.1f} s)[/dim]")

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
        self.console.print(f"[{style}]{escape(text)}[/{style}]" if style else escape(text))


class ConsoleLogHandler(logging.Handler):
    """Log records as short plain lines on the console: warnings stand out, info is quiet."""

    _STYLES = {logging.DEBUG: "dim", logging.INFO: "dim", logging.WARNING: "yellow"}

    def __init__(self, console: Console, level: int = logging.INFO):
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = escape(record.getMessage())
            style = self._STYLES.get(record.levelno, "bold red")
            prefix = "! " if record.levelno >= logging.WARNING else "  "
            self.console.print(f"[{style}]{prefix}{text}[/{style}]")
        except Exception:  # a log line must never take the run down
            self.handleError(record)
