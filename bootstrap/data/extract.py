"""Extract archives safely into an empty folder with tarfile and zipfile: the reference path.

``archives`` recognises them; ``stage`` chooses between this path and GNU tar (``gnutar``),
which writes tar members faster once each is checked by the same guard; this path takes what
GNU tar cannot (no GNU tar or decompressor here, GNU sparse files) and every zip.

Safety. Every member passes ``MemberGuard`` (``bootstrap.data.memberguard``) before anything is
written, and tar and zip members of any type other than file, folder or link are refused here.
Nothing follows a link during extraction, so a bad link is caught before the caller moves the
tree into place. On top of that, tar uses tarfile's ``data`` filter where Python has it (3.10.12+,
3.11.4+, 3.12+): modes lose setuid/setgid/sticky and group/other write, ownership is ignored.
Older Pythons have had filter bypasses (CVE-2025-4517, -4330, -4138, -4435), hence the guard.

Speed. Tar is streamed straight from its source (``r|gz`` and friends; the caller reads the
source in 1 MiB chunks), so a local archive is read once and a download is never stored. Without
links the guard costs a few set operations per member. On 20,000 small files the ``data``
filter's two ``realpath`` calls per member are about 40% of the time and header parsing about
20%; dropping the filter (the guard already enforces all it checks, and ``_checked`` applies its
mode rules) is the first speed-up to take. Zip needs random access, so it is read from a local
file and written with our own loop (zipfile would drop symlinks and modes, and silently rewrite
``..`` instead of refusing it).
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from bootstrap.data.landing import check_room
from bootstrap.data.memberguard import MAX_PATH, MemberGuard
from bootstrap.errors import DataError

__all__ = [
    "BUFSIZE",
    "TAR_BUFSIZE",
    "ExtractStats",
    "Readable",
    "corrupt",
    "extract_tar",
    "extract_zip",
]

BUFSIZE = 1024 * 1024
# tarfile's stream mode re-slices its whole buffer on every read, so a big one is slow; reads
# from the source are batched by the caller instead.
TAR_BUFSIZE = 16 * 1024
_TarMode = Literal["r|", "r|gz", "r|bz2", "r|xz"]
_TAR_MODES: dict[str, _TarMode] = {
    "tar": "r|",
    "tar.gz": "r|gz",
    "tar.bz2": "r|bz2",
    "tar.xz": "r|xz",
}
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (tarfile.FilterError,) if _HAS_DATA_FILTER else ()


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass
class ExtractStats:
    files: int = 0  # regular files and hardlinks written
    bytes: int = 0  # their total size


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile ends an archive quietly at a truncated or garbled header; we call it corrupt."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> _StrictTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            if type(exc).__name__ == "EOFHeaderError":  # the proper end: a zero block
                raise
            raise tarfile.ReadError(f"unexpected end of data or a bad header ({exc})") from exc


def extract_tar(stream: Readable, kind: str, dest: Path, *, name: str) -> ExtractStats:
    """Extract a tar of ``kind`` read sequentially from ``stream`` into the empty folder ``dest``.

    Reads up to the end-of-archive block, not to the end of ``stream``.
    """
    guard = MemberGuard(name)
    stats = ExtractStats()
    try:
        # Stream mode only ever calls read(); the stub asks for a whole file object.
        fileobj = cast(Any, stream)
        with tarfile.open(
            fileobj=fileobj, mode=_TAR_MODES[kind], bufsize=TAR_BUFSIZE, tarinfo=_StrictTarInfo
        ) as tar:
            members = _checked(tar, guard, stats)
            if _HAS_DATA_FILTER:
                tar.extractall(dest, members=members, filter="data")
            else:  # Python 3.10.0-3.10.11: the guard and _checked's mode rules stand alone
                tar.extractall(dest, members=members)
    except _FILTER_ERRORS as exc:  # the data filter caught what the guard let through
        member = getattr(exc, "tarinfo", None)
        raise guard.reject(member.name if member else "?", str(exc)) from exc
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise corrupt(name, exc) from exc
    guard.finish()
    return stats


def _checked(
    tar: tarfile.TarFile, guard: MemberGuard, stats: ExtractStats
) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        if member.isreg():
            kind = "file"
        elif member.isdir():
            kind = "dir"
        elif member.issym():
            kind = "symlink"
        elif member.islnk():
            kind = "hardlink"
        else:
            what = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
                    tarfile.FIFOTYPE: "fifo"}.get(member.type, f"type {member.type!r}")  # fmt: skip
            raise guard.reject(member.name, f"it is a {what}; only files, folders and links")
        checked = guard.check(member.name, kind, member.linkname)
        if checked is None:
            continue
        member.name, member.linkname = checked
        # What the data filter does, for Pythons without it: no setuid/setgid/sticky, no
        # group/other write, owner may read and write, and no chown to the archive's owners.
        member.mode = (member.mode & 0o755) | (0o700 if kind == "dir" else 0o600)
        member.uid = member.gid = -1
        member.uname = member.gname = ""
        if kind in ("file", "hardlink"):
            stats.files += 1
            stats.bytes += member.size
        yield member


def extract_zip(
    path: Path, dest: Path, *, name: str, advance: Callable[[int], None] | None = None
) -> ExtractStats:
    """Extract the zip file at ``path`` into the empty folder ``dest``; ``advance`` gets the
    compressed bytes of each member as it is done."""
    guard = MemberGuard(name, backslash_separators=True)
    stats = ExtractStats()
    made: set[str] = {str(dest)}
    try:
        with zipfile.ZipFile(path) as archive:
            # The central directory says how much the files take; stop before writing any of
            # it when the disk clearly lacks the room (a lie only makes a bad zip fail early).
            need = sum(info.file_size for info in archive.infolist())
            check_room(dest, holds=need, least=need)
            for info in archive.infolist():
                _extract_zip_member(archive, info, guard, str(dest), made, stats)
                if advance:
                    advance(info.compress_size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, lzma.LZMAError,
            NotImplementedError, RuntimeError) as exc:  # fmt: skip
        # RuntimeError: encrypted member; NotImplementedError: an unsupported compression.
        raise corrupt(name, exc) from exc
    guard.finish()
    return stats


def _extract_zip_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    guard: MemberGuard,
    dest: str,
    made: set[str],
    stats: ExtractStats,
) -> None:
    mode = info.external_attr >> 16
    link = ""
    if info.is_dir() or info.filename.endswith("\\"):
        kind = "dir"
    elif stat.S_ISLNK(mode):
        kind = "symlink"
        if info.file_size > MAX_PATH:
            raise guard.reject(info.filename, "symlink with an over-long target")
        link = archive.read(info).decode("utf-8", "surrogateescape")
    elif stat.S_IFMT(mode) in (0, stat.S_IFREG):
        kind = "file"
    else:
        raise guard.reject(info.filename, "it is a device, fifo or socket")
    checked = guard.check(info.filename, kind, link)
    if checked is None:
        return
    target = os.path.join(dest, checked[0])
    if kind == "dir":
        os.makedirs(target, exist_ok=True)
        made.add(target)
        return
    parent = os.path.dirname(target)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    if kind == "symlink":
        os.symlink(checked[1], target)
        return
    perm = ((mode & 0o755) | 0o600) if mode else 0o644
    if not perm & 0o100:
        perm &= ~0o111
    # O_NOFOLLOW: the guard already forbids writing through a link; this makes sure of it.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, perm)
    with os.fdopen(fd, "wb") as out, archive.open(info) as src:
        shutil.copyfileobj(src, out, BUFSIZE)
    try:
        stamp = time.mktime((*info.date_time, 0, 0, -1))
        os.utime(target, (stamp, stamp))
    except (OverflowError, ValueError):
        pass  # a nonsense date in the archive is no reason to fail
    stats.files += 1
    stats.bytes += info.file_size


def corrupt(name: str, exc: BaseException) -> DataError:
    return DataError(
        f"{name} is corrupt or truncated: {exc}",
        hint="download or copy the archive again; give data[].sha256 to catch this early",
    )
