"""Recognise archives: the kind a file name promises, the kind its first bytes prove, and what a
file that is no supported archive seems to be (for error messages).

The content decides: compressed streams are peeked into, so a lone ``.gz`` file is not taken for
a tar, and a tar without a magic (pre-POSIX) is told by its header checksum.
"""

from __future__ import annotations

import bz2
import lzma
import os
import zlib
from collections.abc import Callable

EXTENSIONS = {
    ".tar": "tar", ".tar.gz": "tar.gz", ".tgz": "tar.gz", ".tar.bz2": "tar.bz2",
    ".tbz2": "tar.bz2", ".tbz": "tar.bz2", ".tar.xz": "tar.xz", ".txz": "tar.xz", ".zip": "zip",
}  # fmt: skip
HEAD_SIZE = 64 * 1024  # enough to see a tar header inside gzip or xz


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
