"""Tar header blocks, field by field: reading them (octal, base-256, pax records) and writing ours.

The byte layout that ``TarRewriter`` (``rewriter`` beside this) parses and re-emits: ustar, GNU
(``L``/``K`` long names, base-256 numbers) and pax records on the way in, GNU-format headers
with normalised names on the way out (``header``). Kept apart from the rewriter's state machine
so that what a field means and how a member is validated and routed can be read separately.
"""

from __future__ import annotations

import re
import zlib

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
_MAX_OCTAL = 8**11  # the largest size and mtime an 11-digit octal field holds
KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
         b"5": "dir"}  # fmt: skip
REFUSED = {b"3": "character device", b"4": "block device", b"6": "fifo"}
TYPEFLAGS = {"file": b"0", "dir": b"5", "symlink": b"2", "hardlink": b"1"}

IDS = b"0000000\x000000000\x00"
_MAGIC = b"ustar  \x00" + bytes(247)
CHECKSUM_BASE = sum(_MAGIC) + 8 * 32  # the checksum field counts as spaces
EMPTY_LINK_AND_REST = bytes(100) + _MAGIC  # a file header's last 355 bytes
# Bytes 100-157 of the usual regular file's header: mode, owner ids, size, mtime, checksum
# (checked before) and type, the numbers as exactly 7 and 11 octal digits and a NUL. Size and
# mtime in this form are copied into the new header as they are: both parsers read them alike.
PLAIN_FILE = re.compile(rb"([0-7]{7})\0.{16}(([0-7]{11})\0[0-7]{11}\0).{8}[07\0]", re.DOTALL)


class CorruptTar(Exception):
    """The stream is not a well-formed tar (bad checksum, truncated, bad number)."""


def padded_size(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def number(field: bytes) -> int:
    try:  # the usual octal digits with NUL or space after them: the same value, faster
        return int(field.rstrip(b" \0"), 8)
    except ValueError:
        pass
    if field[:1] in (b"\x80", b"\xff"):  # base-256, GNU's encoding for big values
        value = int.from_bytes(field[1:], "big")
        return value if field[0] == 0x80 else value - (1 << (8 * (len(field) - 1)))
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise CorruptTar(f"bad number {field!r} in a header") from None


def byte_sum(data: bytes) -> int:
    """The sum of up to 256 bytes, exactly: adler32's low half is 1 + that sum modulo 65521,
    and 256 bytes sum to at most 65280. Five times faster than ``sum`` (per member, that counts).
    """
    return (zlib.adler32(data) & 0xFFFF) - 1


def field_text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise CorruptTar("bad pax header record") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise CorruptTar("bad pax header record")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _field(value: int, width: int) -> bytes:
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return b"\x80" + value.to_bytes(width - 1, "big")  # base-256, read by GNU tar


def header(name: bytes, link: bytes, typeflag: bytes, mode: int, size: int, mtime: int) -> bytes:
    """GNU-format header block(s) for one member, with ``L``/``K`` blocks for long names."""
    out = b""
    if len(name) > 100 or len(link) > 100:
        for flag, value in ((b"L", name), (b"K", link)):
            if len(value) > 100:
                out += header(b"././@LongLink", b"", flag, 0o644, len(value) + 1, 0)
                out += (value + b"\0").ljust(padded_size(len(value) + 1), b"\0")
        name, link = name[:100], link[:100]
    stamp = min(max(mtime, 0), _MAX_OCTAL - 1)
    if 0 <= size < _MAX_OCTAL:  # mode, owner ids, size and mtime: 48 bytes
        middle = b"%07o\0%s%011o\0%011o\0" % (mode, IDS, size, stamp)
    else:
        middle = b"%07o\0%s%s%011o\0" % (mode, IDS, _field(size, 12), stamp)
    # Summed piecewise, each piece at most 100 bytes as byte_sum needs; a link is mostly empty.
    check = CHECKSUM_BASE + byte_sum(name) + byte_sum(middle) + typeflag[0]
    if link:
        check += byte_sum(link)
    return b"".join((out, name.ljust(100, b"\0"), middle, b"%06o\0 " % check, typeflag,
                     link.ljust(100, b"\0"), _MAGIC))  # fmt: skip
