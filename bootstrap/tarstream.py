"""Read a tar stream header by header, validate each member, and re-emit it canonically.

``TarRewriter`` is the checking half of the GNU tar fast path (``bootstrap.gnutar``). It parses
the (decompressed) archive itself: ustar, GNU (``L``/``K`` long names, base-256 numbers) and pax
(``path``, ``linkpath``, ``size``) headers. Each member passes ``MemberGuard`` and only then is
written out, with a header this module builds from the validated values: the normalised path
and link target, the mode with setuid/setgid/sticky and group/other write dropped (as tarfile's
``data`` filter does), no owner, and the original data blocks. So GNU tar never parses a byte of
header that the guard did not approve, and a parser difference between us and GNU tar cannot
smuggle a member past the guard. GNU sparse members are left to the tarfile path
(``NeedsFallback``); devices, fifos and unknown types are refused like ``extract_tar`` does.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from zlib import adler32

from bootstrap.extract import ExtractStats
from bootstrap.memberguard import MemberGuard

BLOCK = 512
_ZERO = bytes(BLOCK)
_MAX_OCTAL = 8**11  # the largest size and mtime an 11-digit octal field holds
_OUT_BATCH = 1024 * 1024
_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
          b"5": "dir"}  # fmt: skip
_REFUSED = {b"3": "character device", b"4": "block device", b"6": "fifo"}


class NeedsFallback(Exception):
    """The archive uses a feature this parser leaves to tarfile (sparse files)."""


class CorruptTar(Exception):
    """The stream is not a well-formed tar (bad checksum, truncated, bad number)."""


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _number(field: bytes) -> int:
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


def _bsum(data: bytes) -> int:
    """The sum of up to 256 bytes, exactly: adler32's low half is 1 + that sum modulo 65521,
    and 256 bytes sum to at most 65280. Five times faster than ``sum`` (per member, that counts).
    """
    return (zlib.adler32(data) & 0xFFFF) - 1


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
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


_IDS = b"0000000\x000000000\x00"
_MAGIC = b"ustar  \x00" + bytes(247)
_CONSTANT = sum(_MAGIC) + 8 * 32  # the checksum field counts as spaces
_TYPEFLAGS = {"file": b"0", "dir": b"5", "symlink": b"2", "hardlink": b"1"}


def header(name: bytes, link: bytes, typeflag: bytes, mode: int, size: int, mtime: int) -> bytes:
    """GNU-format header block(s) for one member, with ``L``/``K`` blocks for long names."""
    out = b""
    if len(name) > 100 or len(link) > 100:
        for flag, value in ((b"L", name), (b"K", link)):
            if len(value) > 100:
                out += header(b"././@LongLink", b"", flag, 0o644, len(value) + 1, 0)
                out += (value + b"\0").ljust(_padded(len(value) + 1), b"\0")
        name, link = name[:100], link[:100]
    stamp = min(max(mtime, 0), _MAX_OCTAL - 1)
    if 0 <= size < _MAX_OCTAL:  # mode, owner ids, size and mtime: 48 bytes
        middle = b"%07o\0%s%011o\0%011o\0" % (mode, _IDS, size, stamp)
    else:
        middle = b"%07o\0%s%s%011o\0" % (mode, _IDS, _field(size, 12), stamp)
    # Summed piecewise, each piece at most 100 bytes as _bsum needs; a link is mostly empty.
    check = _CONSTANT + _bsum(name) + _bsum(middle) + typeflag[0] + (_bsum(link) if link else 0)
    return b"".join((out, name.ljust(100, b"\0"), middle, b"%06o\0 " % check, typeflag,
                     link.ljust(100, b"\0"), _MAGIC))  # fmt: skip


class TarRewriter:
    """Pull a tar stream from ``read`` and push validated, re-headed members to ``write``.

    Per member this is the hot loop of staging many small files (20,000 members take a few
    hundred milliseconds here), hence the plain local-variable style of ``run``.
    """

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], object], name: str):
        self._read, self._write = read, write
        self.guard = MemberGuard(name)
        self.stats = ExtractStats()
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]
        self._out: list[bytes] = []
        self._pending = 0

    @property
    def offset(self) -> int:
        """Bytes of the tar stream consumed."""
        return self._base + self._pos

    def _take(self, size: int) -> bytes:
        """Exactly ``size`` bytes (short only at the end of the stream)."""
        pos = self._pos
        if pos + size <= len(self._buf):
            self._pos = pos + size
            return self._buf[pos : pos + size]
        parts = [self._buf[pos:]]
        have = len(parts[0])
        self._base += len(self._buf)
        self._buf, self._pos = b"", 0
        while have < size:
            more = self._read(max(_OUT_BATCH, size - have))
            if not more:
                break
            need = size - have
            if len(more) > need:
                self._buf, self._pos = more, need
                more = more[:need]
            else:
                self._base += len(more)
            parts.append(more)
            have += len(more)
        return b"".join(parts)

    def _emit(self, data: bytes) -> None:
        self._out.append(data)
        self._pending += len(data)
        if self._pending >= _OUT_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._out:
            self._write(b"".join(self._out))
            self._out, self._pending = [], 0

    def _copy(self, size: int, emit: bool) -> None:
        """Pass on (or skip) ``size`` bytes of member data, big members in big pieces."""
        while size:
            piece = self._take(min(size, 4 * _OUT_BATCH))
            if not piece:
                raise CorruptTar("unexpected end of data inside a member")
            if emit:
                self._emit(piece)
            size -= len(piece)

    def run(self) -> None:
        """Process members up to the end-of-archive block; raises DataError for a bad one."""
        long: dict[bytes, str] = {}
        pax: dict[str, str] = {}
        take, member = self._take, self._member
        while True:
            block = take(BLOCK)
            if len(block) < BLOCK:
                raise CorruptTar("unexpected end of data: no end-of-archive block")
            if block == _ZERO:
                break
            field = block[148:156]
            # adler32's low half is 1 + the byte sum (see _bsum), inlined for speed
            total = (adler32(block[:256]) & 0xFFFF) + (adler32(block[256:]) & 0xFFFF) - 2
            if _number(field) != total - _bsum(field) + 256:
                raise CorruptTar(f"bad header checksum at byte {self.offset - BLOCK}")
            flag = block[156:157]
            size = _number(block[124:136])
            if size < 0:
                raise CorruptTar("negative member size")
            if flag in (b"L", b"K", b"x", b"g"):
                data = take(_padded(size))
                if len(data) < _padded(size):
                    raise CorruptTar("unexpected end of data inside a header")
                if flag in (b"L", b"K"):
                    long[flag] = _text(data[:size])
                    continue
                records = _pax(data[:size])
                if any(key.startswith("GNU.sparse") for key in records):
                    raise NeedsFallback("pax sparse file")
                if flag == b"x":
                    pax.update(records)
                elif {"path", "linkpath", "size"} & records.keys():
                    raise NeedsFallback("global pax header with a path or size")
                continue
            member(block, flag, size, long, pax)
            if long or pax:
                long, pax = {}, {}
        self._emit(_ZERO * 2)
        self.flush()

    def _member(
        self, block: bytes, flag: bytes, size: int, long: dict[bytes, str], pax: dict[str, str]
    ) -> None:
        if long or pax:
            name = long.get(b"L") or pax.get("path")
            link = long.get(b"K") or pax.get("linkpath")
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise CorruptTar("bad pax size") from None
        else:
            name = link = None
        if name is None:
            name = _text(block[0:100])
            if block[345] and block[257:265] == b"ustar\x0000":
                prefix = _text(block[345:500])
                name = f"{prefix}/{name}" if prefix else name
        kind = _KINDS.get(flag)
        if kind is None:
            if flag == b"S":
                raise NeedsFallback("GNU sparse file")
            what = _REFUSED.get(flag, f"type {flag.decode('latin-1')!r}")
            raise self.guard.reject(name, f"it is a {what}; only files, folders and links")
        if kind == "file":
            if flag == b"\0" and name.endswith("/"):
                kind = "dir"  # the old v7 way of storing a folder
            link = ""  # only links have a target; a file's link field is never passed on
        elif kind == "dir":
            link = ""
        elif link is None:
            link = _text(block[157:257])
        checked = self.guard.check(name, kind, link)
        data = size if kind == "file" else 0  # as tarfile: only files carry data blocks
        padded = -(-data // BLOCK) * BLOCK
        if checked is None:
            self._copy(padded, emit=False)
            return
        path, target = checked
        mode = (_number(block[100:108]) & 0o755) | (0o700 if kind == "dir" else 0o600)
        head = header(
            path.encode("utf-8", "surrogateescape"),
            target.encode("utf-8", "surrogateescape"),
            _TYPEFLAGS[kind],
            mode,
            data,
            _number(block[136:148]),
        )
        pos = self._pos
        if pos + padded <= len(self._buf):  # the usual small member: all in the buffer
            self._pos = pos + padded
            self._out += (head, self._buf[pos : pos + padded])
            self._pending += 512 + padded
            if self._pending >= _OUT_BATCH:
                self.flush()
        else:
            self._emit(head)
            self._copy(padded, emit=True)
        if kind != "dir" and kind != "symlink":
            self.stats.files += 1
            self.stats.bytes += size
