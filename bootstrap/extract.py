"""Recognise archives and extract them safely into an empty folder.

Safety. Every member passes ``MemberGuard`` before anything is written: no absolute paths, no
``..``, no NUL bytes or over-long names, no device, fifo or unknown member types, no member whose
path is or passes through an earlier symlink, no link that replaces an earlier member, no hardlink
to anything but a regular file already extracted, and no symlink whose target leaves the folder.
The last is checked twice: lexically as each link arrives, and after extraction by resolving every
link through the archive's own links in memory (a later link can change where an earlier one
points, and an in-memory walk does not depend on PATH_MAX as ``os.path.realpath`` does). Nothing
follows a link during extraction, so a bad link is caught before the caller moves the tree into
place. On top of that, tar uses tarfile's ``data`` filter where Python has it (3.10.12+,
3.11.4+, 3.12+): modes lose setuid/setgid/sticky and group/other write, ownership is ignored.
Older Pythons have had filter bypasses (CVE-2025-4517, -4330, -4138, -4435), hence the guard.

Speed. Tar is streamed straight from its source (``r|gz`` and friends; the caller reads the
source in 1 MiB chunks), so a local archive is read once and a download is never stored. Without
links the guard costs a few set operations per member. On 20,000 small files the ``data``
filter's two ``realpath`` calls per member are about 40% of the time and header parsing about
20%; dropping the filter (the guard already enforces all it checks, and ``_checked`` applies its
mode rules) is the first speed-up to take. Beyond that, GNU tar (or pigz | tar) could write the
files after the member list is validated here, which the guard makes safe for a fresh, empty
folder. Zip needs random access, so it is read from a local file and written with our own loop
(zipfile would drop symlinks and modes, and silently rewrite ``..`` instead of refusing it).
"""

from __future__ import annotations

import bz2
import lzma
import os
import re
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

from bootstrap.errors import DataError

EXTENSIONS = {
    ".tar": "tar", ".tar.gz": "tar.gz", ".tgz": "tar.gz", ".tar.bz2": "tar.bz2",
    ".tbz2": "tar.bz2", ".tbz": "tar.bz2", ".tar.xz": "tar.xz", ".txz": "tar.xz", ".zip": "zip",
}  # fmt: skip
HEAD_SIZE = 64 * 1024  # enough to see a tar header inside gzip or xz
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
_MAX_COMPONENT = 255  # bytes, the usual NAME_MAX
_MAX_PATH = 3072  # bytes, leaving room under PATH_MAX for the destination's own path
_MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit
_DRIVE = re.compile(r"^[A-Za-z]:")
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (tarfile.FilterError,) if _HAS_DATA_FILTER else ()


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass
class ExtractStats:
    files: int = 0  # regular files and hardlinks written
    bytes: int = 0  # their total size


def extension_kind(name: str) -> str | None:
    """The archive kind a file name promises, e.g. "tar.gz" for ``x.tgz``."""
    lower = name.lower()
    for ext, kind in sorted(EXTENSIONS.items(), key=lambda item: -len(item[0])):
        if lower.endswith(ext):
            return kind
    return None


def kind_of_head(head: bytes) -> str | None:
    """The archive kind of a file from its first bytes (``HEAD_SIZE`` is plenty), or None."""
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz" if _inner_is_tar(zlib.decompressobj(31).decompress, head) else None
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz" if _inner_is_tar(lzma.LZMADecompressor().decompress, head) else None
    if head.startswith(b"BZh"):
        return "tar.bz2" if _inner_is_tar(bz2.BZ2Decompressor().decompress, head) else None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    return "tar" if _looks_like_tar(head[:512]) else None


def describe_head(head: bytes) -> str:
    """What a file that is not a supported archive seems to be, for an error message."""
    lower = head[:256].lstrip().lower()
    if not head:
        return "it is empty"
    if lower.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page (a login or error page saved instead of the file?)"
    for magic, what in (
        (b"\x28\xb5\x2f\xfd", "zstd-compressed, which is not supported (use .tar.gz or .zip)"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive, which is not supported (use .tar.gz or .zip)"),
        (b"Rar!", "a RAR archive, which is not supported (use .tar.gz or .zip)"),
        (b"\x1f\x8b", "gzip-compressed but holds no tar archive (one .gz file is not supported)"),
        (b"BZh", "bzip2-compressed but holds no tar archive"),
        (b"\xfd7zXZ\x00", "xz-compressed but holds no tar archive"),
    ):
        if head.startswith(magic):
            return f"it is {what}"
    return f"it starts with {head[:16]!r}"


def archive_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind of archive at ``path`` by content ("tar", "tar.gz", ...), or None."""
    try:
        with open(path, "rb") as handle:
            return kind_of_head(handle.read(HEAD_SIZE))
    except OSError:  # a folder, a missing or unreadable file: not an archive we can use
        return None


def is_archive(path: str | os.PathLike[str]) -> bool:
    return archive_kind(path) is not None


def _inner_is_tar(decompress: Callable[[bytes, int], bytes], head: bytes) -> bool:
    try:
        inner = decompress(head, 512)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return True  # corrupt: let extraction report it as such rather than "not an archive"
    # bzip2 emits nothing before a whole block (up to 900 kB), so a short answer is no verdict.
    return len(inner) < 512 or _looks_like_tar(inner)


def _looks_like_tar(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar" or block.count(0) == 512:
        return True
    try:  # a pre-POSIX (v7) header has no magic, only a checksum
        stored = int(block[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:512])
    signed = 256 + sum(b - 256 if b > 127 else b for b in block[:148] + block[156:512])
    return stored in (unsigned, signed)


class MemberGuard:
    """Checks members in archive order, remembering what was extracted before them.

    ``check`` returns the member's normalised relative path (and link target), or None for the
    archive's root entry; it raises DataError for anything unsafe. Call ``finish`` after the
    last member to verify every symlink with the whole archive known.
    """

    def __init__(self, archive: str, *, backslash_separators: bool = False):
        self.archive = archive
        self._backslash = backslash_separators
        self._seen: set[str] = set()  # member paths and their parent folders
        self._files: set[str] = set()  # regular files, the only valid hardlink targets
        self._links: dict[str, str] = {}  # symlink path -> raw target

    def reject(self, member: str, reason: str) -> DataError:
        return DataError(
            f"{self.archive}: refusing unsafe member {member!r}: {reason}",
            hint="the archive is broken or malicious; nothing from it was placed in the "
            "destination. Rebuild it with relative paths and links that stay inside it",
        )

    def check(self, name: str, kind: str, link: str = "") -> tuple[str, str] | None:
        parts = self._split(name, name)
        if not parts:
            if kind == "dir":
                return None
            raise self.reject(name, "it has an empty name")
        path = "/".join(parts)
        if self._links:
            for i in range(1, len(parts) + 1):
                through = "/".join(parts[:i])
                if through in self._links:
                    how = "would overwrite" if through == path else "goes through"
                    raise self.reject(name, f"it {how} the symlink {through!r}")
        if kind in ("symlink", "hardlink") and path in self._seen:
            raise self.reject(name, "a link may not replace an earlier member")
        if kind == "symlink":
            link = self._check_symlink(name, parts, link)
            self._links[path] = link
        elif kind == "hardlink":
            target = "/".join(self._split(link, name, f"its target {link!r}"))
            if target not in self._files:
                raise self.reject(name, f"hardlink to {link!r}, not a file extracted before it")
            link = target
        if kind in ("file", "hardlink"):
            self._files.add(path)
        self._seen.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return path, link

    def finish(self) -> None:
        for path, target in self._links.items():
            problem = self._resolves_outside(path, target)
            if problem:
                raise self.reject(path, problem)

    def _split(self, text: str, member: str, what: str = "its path") -> list[str]:
        if "\x00" in text:
            raise self.reject(member, f"{what} contains a NUL byte")
        if self._backslash:
            text = text.replace("\\", "/")
            if _DRIVE.match(text):
                raise self.reject(member, f"{what} starts with a drive letter")
        if text.startswith("/"):
            raise self.reject(member, f"{what} is absolute")
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.reject(member, f"{what} contains '..'")
        if len(os.fsencode(text)) > _MAX_PATH:
            raise self.reject(member, f"{what} is longer than {_MAX_PATH} bytes")
        if any(len(os.fsencode(p)) > _MAX_COMPONENT for p in parts):
            raise self.reject(member, f"{what} has a name longer than {_MAX_COMPONENT} bytes")
        return parts

    def _check_symlink(self, name: str, parts: list[str], target: str) -> str:
        if not target or "\x00" in target or len(os.fsencode(target)) > _MAX_PATH:
            raise self.reject(name, f"symlink with an invalid target {target[:80]!r}")
        if self._backslash:
            target = target.replace("\\", "/")
        if target.startswith("/") or (self._backslash and _DRIVE.match(target)):
            raise self.reject(name, f"symlink to the absolute path {target!r}")
        depth = len(parts) - 1
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise self.reject(name, f"symlink to {target!r}, outside the archive")
            elif part not in ("", "."):
                depth += 1
        return target

    def _resolves_outside(self, path: str, target: str) -> str | None:
        """Resolve ``target`` as the kernel would, through the archive's own symlinks."""
        resolved = path.split("/")[:-1]
        todo = list(reversed(target.split("/")))
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    return f"symlink to {target!r}, which leads outside the archive"
                resolved.pop()
                continue
            resolved.append(part)
            inner = self._links.get("/".join(resolved))
            if inner is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    return f"symlink to {target!r} loops"
                resolved.pop()
                todo.extend(reversed(inner.split("/")))
        return None


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
        if info.file_size > _MAX_PATH:
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
