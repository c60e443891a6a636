"""Which writer tar gets each validated member (``Router``), and batched writes to it (``Outlet``).

With several GNU tar processes writing the files (so that file creation runs on several cores),
``TarRewriter`` (``rewriter`` beside this) asks the ``Router`` where each member goes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

OUT_BATCH = 1024 * 1024


class Outlet:
    """One output tar stream, written in batches of about ``OUT_BATCH`` bytes."""

    __slots__ = ("parts", "pending", "write")

    def __init__(self, write: Callable[[bytes], object]):
        self.write = write
        self.parts: list[bytes] = []
        self.pending = 0

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.pending += len(data)
        if self.pending >= OUT_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.write(b"".join(self.parts))
            self.parts, self.pending = [], 0

    def send(self, data: bytes) -> None:
        """Write a big piece as it is, after what was gathered before it."""
        self.flush()
        self.write(data)


class Router:
    """Sends each member to one of ``outputs``, chosen by its folder: the same path always to the
    same output, so a later member that replaces an earlier one still comes after it, and a
    hardlink to the output that wrote its target. ``make_folder`` creates each member's folder
    before the member is passed on, so no two tars race to create one.
    """

    def __init__(
        self, outputs: Sequence[Callable[[bytes], object]], make_folder: Callable[[str], object]
    ):
        self.outlets = [Outlet(write) for write in outputs]
        self._make_folder = make_folder  # given a relative path; needed with several outputs
        self._folders: dict[str, int] = {}  # folder -> the output its members go to
        self._routes: dict[str, int] = {}  # hardlinks, and paths that follow them

    def outlet(self, path: str, target: str, kind: str) -> Outlet:
        """The output for the member at ``path`` (``target``: a hardlink's, else unused)."""
        outlets = self.outlets
        count = len(outlets)
        if count == 1:
            return outlets[0]
        parent = path.rpartition("/")[0]
        index = self._folders.get(parent)
        if index is None:  # a folder's members all go to one writer, chosen by its name
            if parent:
                # Made here, before any tar sees a member inside it: GNU tar (1.34) gives up on
                # a member whose folder another process creates while it is creating it.
                self._make_folder(parent)
            index = zlib.crc32(parent.encode("utf-8", "surrogateescape")) % count
            self._folders[parent] = index
        if kind == "hardlink":  # to the writer of its target, which has made it by then
            index = self._routes.get(target, self._folders[target.rpartition("/")[0]])
            self._routes[path] = index
        elif self._routes:  # a path once a hardlink stays with that writer
            index = self._routes.get(path, index)
        return outlets[index]
