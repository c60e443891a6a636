"""What the console shows of a torchrun group: rank 0's output, as one training's.

Each rank writes its lines marked ``[rank N] `` (``bootstrap.training.ranked``); the attempt
log keeps them all, marked. The console gets rank 0's text with its mark taken off, torchrun's
own unmarked lines (its errors), and nothing of the other ranks, which mostly repeat rank 0's
lines and would double every progress bar. Once the tool asked torchrun to stop, torchrun's own
lines (its shutdown, the traceback of the signal) go to the log only.

When another rank crashes, rank 0 usually fails only because its peer is gone ("Connection
closed by peer"), and torchrun's report names the rank but not its error. So the end of every
other rank's output is kept too, and ``crashes`` gives the traceback each one printed last,
for the supervisor to show when the group fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bootstrap.training.ranked import MARK_PATTERN

_LONGEST_MARK = len(b"[rank 99999] ")
_KEPT_BYTES = 16_384  # of each other rank's latest output
_CRASH_LINES = 40  # at most, of a rank's last traceback: its start and its end
# torch prefixes a rank's uncaught exception with "[rankN]: " once the process group is up.
_TRACEBACK = re.compile(rb"^(?:\[rank\d+\]: )?Traceback \(most recent call last\):", re.MULTILINE)


class RankZeroConsole:
    """An output sink for the console that passes rank 0's text on to ``output``."""

    def __init__(self, output: Callable[[bytes], None]):
        self._output = output
        self._held = b""  # the start of a segment that may be a mark cut by the chunking
        self._at_segment_start = True
        self._shown = True  # whether the current segment is shown
        self._rank: int | None = None  # whose the current segment is (None: torchrun's)
        self._launcher_shown = True
        self._latest: dict[int, bytes] = {}  # each other rank's latest output

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
                self._rank = int(mark.group(1)) if mark else None
                self._shown = self._rank == 0 if mark else self._launcher_shown
                if mark is not None:
                    position = mark.end()
            end = _segment_end(data, position)
            if self._shown:
                shown.append(data[position:end])
            elif self._rank is not None:
                latest = self._latest.get(self._rank, b"") + data[position:end]
                self._latest[self._rank] = latest[-_KEPT_BYTES:]
            self._at_segment_start = data[end - 1 : end] in (b"\n", b"\r")
            position = end
        if shown:
            self._output(b"".join(shown))

    def crashes(self) -> list[tuple[int, bytes]]:
        """(rank, the traceback it printed last, to the end of its output) for each rank
        other than 0 whose output holds one, in rank order."""
        found = []
        for rank, latest in sorted(self._latest.items()):
            starts = list(_TRACEBACK.finditer(latest))
            if starts:
                lines = latest[starts[-1].start() :].splitlines(keepends=True)
                if len(lines) > _CRASH_LINES:  # the error itself is the last line: keep it
                    lines = [lines[0], b"  ...\n", *lines[2 - _CRASH_LINES :]]
                found.append((rank, b"".join(lines)))
        return found


def _cut_mark(text: bytes) -> bool:
    """Whether ``text``, the end of a chunk, may be the start of a mark cut by the chunking."""
    return b"[rank "[: len(text)] == text or re.fullmatch(rb"\[rank \d+\]?", text) is not None


def _segment_end(data: bytes, start: int) -> int:
    """Just past the first line feed or carriage return from ``start``; the end of ``data``
    when there is none."""
    ends = [i for i in (data.find(b"\n", start), data.find(b"\r", start)) if i >= 0]
    return min(ends) + 1 if ends else len(data)
