"""Where a stage is built and how it lands: a private work folder beside ``dest``, the merge of
the finished tree into ``dest`` by rename, and hints for the OS errors staging meets.

The work folder is on the same filesystem as ``dest`` (inside ``dest`` when that is a mount
point), so the merge is renames only and a half-written file never shows under its final name.
A hard kill can leave the work folder behind (a dot-folder named with the process id); the next
stage removes it once that process is gone.

A full scratch disk shows up in many shapes: ENOSPC or EDQUOT from a write, EFBIG when a file
passes the file size limit (``ulimit -f``, or a filesystem's own), GNU tar reporting "Cannot
write: No space left on device", or tar killed by SIGXFSZ. ``space_problem`` recognises them all
(the GNU tar path turns its shapes into an ``OSError`` with the errno) and ``no_space`` makes the
one message the user sees. ``check_room`` is the cheap pre-flight check for archives whose
extracted size is known or bounded before extraction.
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
from bootstrap.values import format_bytes

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


_SPACE_PROBLEMS = {
    errno.ENOSPC: "no space left on scratch",
    errno.EDQUOT: "disk quota exceeded on scratch",
    errno.EFBIG: "file too large for scratch (over the file size limit of its filesystem "
    "or of `ulimit -f`)",
}


def space_problem(exc: BaseException) -> str | None:
    """What a full scratch disk looks like, said plainly, or None for any other error."""
    return _SPACE_PROBLEMS.get(exc.errno) if isinstance(exc, OSError) and exc.errno else None


def no_space(
    exc: OSError, source: str, dest: Path, *, label: str = "", merging: bool = False
) -> DataError:
    """The one message for every shape of a full scratch disk while staging into ``dest``;
    ``merging``: it struck while moving the finished tree in, so some of it may be there."""
    number = exc.errno or errno.ENOSPC
    problem = _SPACE_PROBLEMS.get(number, _SPACE_PROBLEMS[errno.ENOSPC])
    said = exc.strerror or ""
    detail = f" {said}" if said and said != os.strerror(number) else ""  # check_room's figures
    free = free_bytes(dest)
    room = f" ({format_bytes(free)} free there now)" if free is not None else ""
    limit = ", or raise the file size limit (`ulimit -f`)" if number == errno.EFBIG else ""
    kept = "part of it may be there, not marked as staged" if merging else "nothing of it was kept"
    return DataError(
        f"{label + ': ' if label else ''}{problem}: staging {source} into {dest} stopped"
        f"{detail}; {kept}",
        hint=f"free space on scratch{room} or choose --scratch elsewhere, a disk with room for "
        f"the data{limit}; then run again",
    )


def check_room(folder: Path, *, holds: int, least: int) -> None:
    """Raise ENOSPC before extracting when ``folder``'s disk has less than ``least`` bytes free
    for data of about ``holds`` bytes; a cheap early stop, never a guarantee."""
    free = free_bytes(folder)
    if free is not None and free < least:
        raise OSError(
            errno.ENOSPC,
            f"before extracting: the archive holds about {format_bytes(holds)}, "
            f"{format_bytes(free)} is free",
        )


def free_bytes(path: Path) -> int | None:
    """Free bytes on the disk of ``path`` (or of its nearest existing parent), as we may use."""
    if not hasattr(os, "statvfs"):
        return None
    for folder in (path, *path.parents):
        try:
            info = os.statvfs(folder)
        except OSError:
            continue
        # Root may use the blocks reserved for it (we are root on Colab); others may not.
        blocks = info.f_bfree if os.geteuid() == 0 else info.f_bavail
        return blocks * info.f_frsize
    return None


def os_hint(exc: OSError) -> str:
    if space_problem(exc):
        return "the disk is full: free space on scratch, or stage less data"
    if exc.errno == errno.ENOTCONN:
        return (
            "Google Drive disconnected: run drive.mount('/content/drive', "
            "force_remount=True) in a cell, then run again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the permissions of the source and the destination"
    return "check the data source and destination, then run again"
