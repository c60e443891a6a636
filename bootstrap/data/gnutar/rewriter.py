"""Read a tar stream header by header, validate each member, and re-emit it canonically.

``TarRewriter`` is the checking half of the GNU tar fast path (``extract`` beside this). It parses
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

import re
import zlib
from collections.abc import Callable, Sequence
from zlib import adler32

from bootstrap.data.extract import ExtractStats
from bootstrap.data.memberguard import MemberGuard

BLOCK = 512
_ZERO = bytes(BLOCK)
_MAX_OCTAL = 8**11  # the largest size and mtime an 11-digit octal field holds
_OUT_BATCH = 1024 * 1024
_BIG_PIECE = 4 * _OUT_BATCH  # a big member's data is read and passed on in pieces this size
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
_EMPTY_LINK_AND_REST = bytes(100) + _MAGIC  # a file header's last 355 bytes
# Bytes 100-157 of the usual regular file's header: mode, owner ids, size, mtime, checksum
# (checked before) and type, the numbers as exactly 7 and 11 octal digits and a NUL. Size and
# mtime in this form are copied into the new header as they are: both parsers read them alike.
_PLAIN_FILE = re.compile(rb"([0-7]{7})\0.{16}(([0-7]{11})\0[0-7]{11}\0).{8}[07\0]", re.DOTALL)
_MODE_CACHE_MAX = 64


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


class _Outlet:
    """One output tar stream, written in batches of about ``_OUT_BATCH`` bytes."""

    __slots__ = ("parts", "pending", "write")

    def __init__(self, write: Callable[[bytes], object]):
        self.write = write
        self.parts: list[bytes] = []
        self.pending = 0

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.pending += len(data)
        if self.pending >= _OUT_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.write(b"".join(self.parts))
            self.parts, self.pending = [], 0

    def send(self, data: bytes) -> None:
        """Write a big piece as it is, after what was gathered before it."""
        self.flush()
        self.write(data)


class TarRewriter:
    """Pull a tar stream from ``read`` and push validated, re-headed members to ``outputs``.

    With several outputs (one GNU tar each, so that file creation runs on several cores), each
    member goes to one of them, chosen by its folder: the same path always to the same output,
    so a later member that replaces an earlier one still comes after it, and a hardlink to the
    output that wrote its target. ``make_folder`` creates each member's folder before the
    member is passed on, so no two tars race to create one.

    Folder mtimes are collected in ``folder_times`` for the caller to set once every writer is
    done: a folder may get entries from several writers, and even GNU tar alone leaves the
    extraction time on a folder that gets a member after it has moved on to another folder.

    Per member this is the hot loop of staging many small files (20,000 members take ~0.15 s
    here), hence the plain local-variable style of ``run`` and the quick ``_plain_file``.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        outputs: Sequence[Callable[[bytes], object]],
        name: str,
        make_folder: Callable[[str], object] = lambda path: None,
    ):
        self._read = read
        self._make_folder = make_folder  # given a relative path; needed with several outputs
        self._folders: dict[str, int] = {}  # folder -> the output its members go to
        self._outlets = [_Outlet(write) for write in outputs]
        self.guard = MemberGuard(name)
        self.stats = ExtractStats()
        self.folder_times: dict[str, int] = {}
        self._routes: dict[str, int] = {}  # hardlinks, and paths that follow them
        self._modes: dict[bytes, bytes] = {}  # the archive's mode digits -> our mode field
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]

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

    def _copy(self, size: int, out: _Outlet | None) -> None:
        """Pass on to ``out`` (or skip) ``size`` bytes of member data: what the buffer holds,
        then the rest piece by piece as it is read, never joined into one more copy (a member
        may be gigabytes, and copies were half the cost of staging big files)."""
        buf, pos = self._buf, self._pos
        have = min(len(buf) - pos, size)
        if have:
            if out is not None:
                out.add(buf[pos : pos + have])
            self._pos = pos + have
            size -= have
        if not size:
            return
        self._base += len(buf)  # the buffer is used up
        self._buf, self._pos = b"", 0
        while size:
            more = self._read(min(size, _BIG_PIECE))
            if not more:
                raise CorruptTar("unexpected end of data inside a member")
            if len(more) > size:  # a reader that hands out whole pieces (the inflater)
                self._buf, self._pos = more, size
                more = more[:size]
            else:
                self._base += len(more)
            if out is not None:
                out.send(more)
            size -= len(more)

    def _outlet(self, path: str, target: str, kind: str) -> _Outlet:
        outlets = self._outlets
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

    def run(self) -> None:
        """Process members up to the end-of-archive block; raises DataError for a bad one."""
        long: dict[bytes, str] = {}
        pax: dict[str, str] = {}
        take, member, plain_file = self._take, self._member, self._plain_file
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
            if not long and not pax and plain_file(block):
                continue
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
        for out in self._outlets:
            out.add(_ZERO * 2)
            out.flush()

    def _plain_file(self, block: bytes) -> bool:
        """The usual member, a regular file with a short name and plain numbers, passed on with
        fewer steps than ``_member`` takes; False (nothing consumed) for any other."""
        fields = _PLAIN_FILE.fullmatch(block, 100, 157)
        if fields is None or block[345]:  # block[345]: a ustar name prefix
            return False
        raw = block[:100].partition(b"\0")[0]
        if raw.endswith(b"/"):  # the old way of storing a folder: _member knows it
            return False
        checked = self.guard.check(raw.decode("utf-8", "surrogateescape"), "file")
        assert checked is not None  # None is only for the archive's own root folder
        path = checked[0]
        digits = fields[1]
        mode = self._modes.get(digits)
        if mode is None:
            mode = b"%07o\0" % ((int(digits, 8) & 0o755) | 0o600)
            if len(self._modes) < _MODE_CACHE_MAX:
                self._modes[digits] = mode
        name = path.encode("utf-8", "surrogateescape")
        head = b"%s%s%s%s" % (name.ljust(100, b"\0"), mode, _IDS, fields[2])
        check = _CONSTANT + _bsum(head) + 48  # 48: the type flag b"0"
        size = int(fields[3], 8)
        padded = -(-size // BLOCK) * BLOCK
        out = self._outlet(path, "", "file")
        out.add(b"%s%06o\0 0%s" % (head, check, _EMPTY_LINK_AND_REST))
        pos = self._pos
        if pos + padded <= len(self._buf):
            self._pos = pos + padded
            out.add(self._buf[pos : pos + padded])
        else:
            self._copy(padded, out)
        self.stats.files += 1
        self.stats.bytes += size
        return True

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
            self._copy(padded, None)
            return
        path, target = checked
        mode = (_number(block[100:108]) & 0o755) | (0o700 if kind == "dir" else 0o600)
        mtime = _number(block[136:148])
        head = header(
            path.encode("utf-8", "surrogateescape"),
            target.encode("utf-8", "surrogateescape"),
            _TYPEFLAGS[kind],
            mode,
            data,
            mtime,
        )
        out = self._outlet(path, target, kind)
        if kind == "dir":
            self.folder_times[path] = mtime
        pos = self._pos
        if pos + padded <= len(self._buf):  # the usual small member: all in the buffer
            self._pos = pos + padded
            out.add(head)
            out.add(self._buf[pos : pos + padded])
        else:
            out.add(head)
            self._copy(padded, out)
        if kind != "dir" and kind != "symlink":
            self.stats.files += 1
            self.stats.bytes += size
