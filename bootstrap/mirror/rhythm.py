"""Telling the user, once per file, when the training saves a checkpoint faster than the mirror
can take it to persist: persist then holds only some of its versions, and saving less often
(or to a new name each time) is the fix only the user can make.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bootstrap.mirror.files import stamp
from bootstrap.values import format_bytes

log = logging.getLogger(__name__)


class SaveRhythm:
    """What the uploads of each file found about its saves; one warning per file at most."""

    def __init__(self) -> None:
        self._said: set[Path] = set()
        self._overtaken: dict[Path, int] = {}  # uploads in a row that a newer save overtook

    def uploaded(self, source: Path, version: tuple[int, int], seconds: float) -> None:
        """An upload of ``version`` (size, mtime_ns) of ``source`` ended after ``seconds``.
        Says so when the training saved again before it ended, two uploads in a row: persist
        then gets only some versions, each up to about two uploads late. One overtaken upload
        is a save that happened to fall during it."""
        try:
            now = stamp(source.stat())
        except OSError:
            return
        overtaken = now != version and now[1] > version[1]
        self._overtaken[source] = self._overtaken.get(source, 0) + 1 if overtaken else 0
        if self._overtaken[source] < 2 or not self._first_time(source):
            return
        log.warning(
            "%s (%s) is saved again before its upload to persist ends: each upload takes "
            "%.1f s, and twice in a row the training saved a newer version while one ran. "
            "Persist keeps the newest whole version it has, so it holds only some of the saves, "
            "each up to about two uploads (%.0f s) behind. Saving it less often, or to a new "
            "file name each time, lets every checkpoint reach persist.",
            source,
            format_bytes(version[0]),
            seconds,
            2 * seconds,
        )

    def never_whole(self, source: Path, spent: list[float]) -> None:
        """Every snapshot of ``source`` in one pass found it changing (each gave up after the
        seconds in ``spent``)."""
        if not self._first_time(source):
            return
        try:
            size = f" ({format_bytes(source.stat().st_size)})"
        except OSError:
            size = ""
        log.warning(
            "%s%s is rewritten faster than it can be read whole: %d snapshots on scratch, each "
            "given up after %.2f s on average, found it changing; persist keeps its newest good "
            "copy and the mirror keeps trying. Saving it less often, or to a new file name each "
            "time, lets every checkpoint reach persist.",
            source,
            size,
            len(spent),
            sum(spent) / max(1, len(spent)),
        )

    def _first_time(self, source: Path) -> bool:
        if source in self._said:
            return False
        self._said.add(source)
        return True
