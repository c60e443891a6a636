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

from collections.abc import Callable

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
    if field[:1] in (b"\x80", b"\xff"):  # base-256, GNU's encoding for big values
        value = int.from_bytes(field[1:], "big")
        return value if field[0] == 0x80 else value - (1 << (8 * (len(field) - 1)))
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise CorruptTar(f"bad number {field!r} in a header") from None


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
_CONSTANT = sum(_IDS) + sum(_MAGIC) + 8 * 32  # the checksum field counts as spaces


def header(name: bytes, link: bytes, typeflag: bytes, mode: int, size: int, mtime: int) -> bytes:
    """GNU-format header block(s) for one member, with ``L``/``K`` blocks for long names."""
    out = b""
    for flag, value in ((b"L", name), (b"K", link)):
        if len(value) > 100:
            out += header(b"././@LongLink", b"", flag, 0o644, len(value) + 1, 0)
            out += (value + b"\0").ljust(_padded(len(value) + 1), b"\0")
    name, link = name[:100], link[:100]
    fields = b"%07o\0" % mode
    numbers = _field(size, 12) + _field(min(max(mtime, 0), _MAX_OCTAL - 1), 12)
    # Summed piecewise: a 512-byte sum per member is a measurable part of the time.
    check = _CONSTANT + sum(name) + sum(link) + sum(fields) + sum(numbers) + typeflag[0]
    return b"".join((out, name.ljust(100, b"\0"), fields, _IDS, numbers,
                     b"%06o\0 " % check, typeflag, link.ljust(100, b"\0"), _MAGIC))  # fmt: skip


class TarRewriter:
    """Pull a tar stream from ``read`` and push validated, re-headed members to ``write``."""

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], object], name: str):
        self._read, self._write = read, write
        self.guard = MemberGuard(name)
        self.stats = ExtractStats()
        self._buf = b""
        self._pos = 0
        self._out: list[bytes] = []
        self._pending = 0
        self.offset = 0  # bytes of the tar stream consumed

    def _take(self, size: int) -> bytes:
        """Exactly ``size`` bytes (short only at the end of the stream)."""
        if self._pos + size <= len(self._buf):
            self._pos += size
            self.offset += size
            return self._buf[self._pos - size : self._pos]
        parts = [self._buf[self._pos :]]
        have = len(parts[0])
        self._buf, self._pos = b"", 0
        while have < size:
            more = self._read(max(_OUT_BATCH, size - have))
            if not more:
                break
            need = size - have
            if len(more) > need:
                self._buf, self._pos = more, need
                more = more[:need]
            parts.append(more)
            have += len(more)
        self.offset += have
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
        while True:
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                raise CorruptTar("unexpected end of data: no end-of-archive block")
            if block == _ZERO:
                break
            field = block[148:156]
            if _number(field) != sum(block) - sum(field) + 256:
                raise CorruptTar(f"bad header checksum at byte {self.offset - BLOCK}")
            flag = block[156:157]
            size = _number(block[124:136])
            if size < 0:
                raise CorruptTar("negative member size")
            if flag in (b"L", b"K", b"x", b"g"):
                data = self._take(_padded(size))
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
            self._member(block, flag, size, long, pax)
            long, pax = {}, {}
        self._emit(_ZERO * 2)
        self.flush()

    def _member(
        self, block: bytes, flag: bytes, size: int, long: dict[bytes, str], pax: dict[str, str]
    ) -> None:
        name = long.get(b"L") or pax.get("path")
        if name is None:
            name = _text(block[0:100])
            prefix = _text(block[345:500]) if block[257:265] == b"ustar\x0000" else ""
            name = f"{prefix}/{name}" if prefix else name
        link = long.get(b"K") or pax.get("linkpath") or _text(block[157:257])
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise CorruptTar("bad pax size") from None
        if flag == b"S":
            raise NeedsFallback("GNU sparse file")
        kind = _KINDS.get(flag)
        if kind == "file" and flag == b"\0" and name.endswith("/"):
            kind = "dir"  # the old v7 way of storing a folder
        if kind is None:
            what = _REFUSED.get(flag, f"type {flag.decode('latin-1')!r}")
            raise self.guard.reject(name, f"it is a {what}; only files, folders and links")
        checked = self.guard.check(name, kind, link)
        data = size if kind == "file" else 0  # as tarfile: only files carry data blocks
        if checked is None:
            self._copy(_padded(data), emit=False)
            return
        path, target = checked
        mode = (_number(block[100:108]) & 0o755) | (0o700 if kind == "dir" else 0o600)
        mtime = _number(block[136:148])
        typeflag = {"file": b"0", "dir": b"5", "symlink": b"2", "hardlink": b"1"}[kind]
        self._emit(header(_encode(path), _encode(target), typeflag, mode, data, mtime))
        self._copy(_padded(data), emit=True)
        if kind in ("file", "hardlink"):
            self.stats.files += 1
            self.stats.bytes += size


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
