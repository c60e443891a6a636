"""Where a stage is built and how it lands: a private work folder beside ``dest``, the merge of
the finished tree into ``dest`` by rename, and hints for the OS errors staging meets.

The work folder is on the same filesystem as ``dest`` (inside ``dest`` when that is a mount
point), so the merge is renames only and a half-written file never shows under its final name.
A hard kill can leave the work folder behind (a dot-folder named with the process id); the next
stage removes it once that process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bootstrap.errors import DataError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def work_folder(dest: Path) -> Iterator[Path]:
    prefix = f".{dest.name or 'data'}.staging-"
    _remove_stale(dest, prefix)
    base = dest.parent
    if dest.is_dir() and os.stat(dest).st_dev != os.stat(base).st_dev:
        base = dest  # dest is a mount point: renames only work within its filesystem
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remove_stale(dest: Path, prefix: str) -> None:
    """Remove work folders left by a stage whose process is gone (a hard kill)."""
    for base in (dest.parent, dest):
        with contextlib.suppress(OSError):
            for entry in os.scandir(base):
                pid = entry.name[len(prefix) :].split("-", 1)[0]
                if entry.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
                    log.info("removing %s, left by an interrupted stage", entry.path)
                    shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but is not ours
    return True


def merge_into(tree: Path, dest: Path) -> None:
    """Move everything in ``tree`` into ``dest`` by rename; the source wins for files."""
    if not os.path.lexists(dest):
        os.replace(tree, dest)
        return
    stack = [(str(tree), str(dest))]
    while stack:
        src, dst = stack.pop()
        with os.scandir(src) as scan:
            entries = list(scan)
        for entry in entries:
            target = os.path.join(dst, entry.name)
            try:
                existing = os.lstat(target).st_mode
            except FileNotFoundError:
                os.replace(entry.path, target)
                continue
            incoming_dir = entry.is_dir(follow_symlinks=False)
            if incoming_dir and stat.S_ISDIR(existing):
                stack.append((entry.path, target))
            elif incoming_dir or stat.S_ISDIR(existing):
                here = "a folder" if stat.S_ISDIR(existing) else "a file or link"
                there = "a folder" if incoming_dir else "a file"
                raise DataError(
                    f"cannot merge into {dest}: {target} is {here} there but "
                    f"{there} in the data source",
                    hint=f"move or delete {target}, then run again",
                )
            else:
                os.replace(entry.path, target)


def os_hint(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full: free space on scratch, or stage less data"
    if exc.errno == errno.ENOTCONN:
        return (
            "Google Drive disconnected: run drive.mount('/content/drive', "
            "force_remount=True) in a cell, then run again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the permissions of the source and the destination"
    return "check the data source and destination, then run again"
