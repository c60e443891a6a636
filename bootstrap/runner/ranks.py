"""What the console shows of a torchrun group: rank 0's output, as one training's.

Each rank writes its lines marked ``[rank N] `` (``bootstrap.training.ranked``); the attempt
log keeps them all, marked. The console gets rank 0's text with its mark taken off, torchrun's
own unmarked lines (its errors), and nothing of the other ranks, which mostly repeat rank 0's
lines and would double every progress bar. Once the tool asked torchrun to stop, torchrun's own
lines (its shutdown, the traceback of the signal) go to the log only.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bootstrap.training.ranked import MARK_PATTERN

_LONGEST_MARK = len(b"[rank 99999] ")


class RankZeroConsole:
    """An output sink for the console that passes rank 0's text on to ``output``."""

    def __init__(self, output: Callable[[bytes], None]):
        self._output = output
        self._held = b""  # the start of a segment that may be a mark cut by the chunking
        self._at_segment_start = True
        self._shown = True  # whether the current segment is shown
        self._launcher_shown = True

    def hide_launcher(self) -> None:
        """From now on torchrun's own lines go to the log only: once the tool has asked it to
        stop, it prints its shutdown and the traceback of the signal it was sent, which read
        like a crash."""
        self._launcher_shown = False

    def __call__(self, chunk: bytes) -> None:
        data, self._held = self._held + chunk, b""
        shown = []
        position = 0
        while position < len(data):
            if self._at_segment_start:
                rest = data[position : position + _LONGEST_MARK]
                mark = MARK_PATTERN.match(data, position)
                if mark is None and len(rest) < _LONGEST_MARK and _cut_mark(rest):
                    self._held = data[position:]  # wait for the rest of what may be a mark
                    break
                self._shown = mark.group(1) == b"0" if mark else self._launcher_shown
                if mark is not None:
                    position = mark.end()
            end = _segment_end(data, position)
            if self._shown:
                shown.append(data[position:end])
            self._at_segment_start = data[end - 1 : end] in (b"\n", b"\r")
            position = end
        if shown:
            self._output(b"".join(shown))


def _cut_mark(text: bytes) -> bool:
    """Whether ``text``, the end of a chunk, may be the start of a mark cut by the chunking."""
    return b"[rank "[: len(text)] == text or re.fullmatch(rb"\[rank \d+\]?", text) is not None


def _segment_end(data: bytes, start: int) -> int:
    """Just past the first line feed or carriage return from ``start``; the end of ``data``
    when there is none."""
    ends = [i for i in (data.find(b"\n", start), data.find(b"\r", start)) if i >= 0]
    return min(ends) + 1 if ends else len(data)
