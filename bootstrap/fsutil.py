"""Atomic file writes and step markers.

Every state file is written atomically: a temp file in the same folder, flushed and fsynced,
moved over the target with ``os.replace``, then the folder fsynced. A reader never sees half a
file, and a hard kill at any instant leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable. A no-op where folders can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (e.g. Drive's FUSE) refuse fsync on folders
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``target`` atomically when the block exits cleanly.

    On an exception the temp file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_writer(target) as handle:
        handle.write(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, value: Any) -> None:
    atomic_write_text(target, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON value stored in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Marker:
    """A "this step is done" file keyed by what the step depends on.

    ``is_done(key)`` is true only when the marker exists and was written with an equal key, so
    changing anything the step depends on (a commit, a requirements file's hash, an archive's
    size) makes the step run again. The marker is written last, atomically, so an interrupted
    step never leaves one behind.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def is_done(self, key: Mapping[str, Any]) -> bool:
        stored = read_json(self.path)
        return isinstance(stored, dict) and stored.get("key") == _normalise(key)

    def mark_done(self, key: Mapping[str, Any], **info: Any) -> None:
        atomic_write_json(self.path, {"key": _normalise(key), **info})

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _normalise(key: Mapping[str, Any]) -> Any:
    # Round-trip through JSON so that tuples and lists, Paths and strings compare equal.
    return json.loads(json.dumps(dict(key), sort_keys=True, default=str))
