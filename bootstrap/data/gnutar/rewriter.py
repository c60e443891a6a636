"""Read a tar stream header by header, validate each member, and re-emit it canonically.

``TarRewriter`` is the checking half of the GNU tar fast path (``extract`` beside this). It parses
the (decompressed) archive itself, with the field readers of ``headers``: ustar, GNU (``L``/``K``
long names, base-256 numbers) and pax (``path``, ``linkpath``, ``size``) headers. Each member
passes ``MemberGuard`` and only then is written out, with a header built from the validated
values (``headers.header``): the normalised path and link target, the mode with
setuid/setgid/sticky and group/other write dropped (as tarfile's ``data`` filter does), no owner,
and the original data blocks. So GNU tar never parses a byte of header that the guard did not
approve, and a parser difference between us and GNU tar cannot smuggle a member past the guard.
GNU sparse members are left to the tarfile path (``NeedsFallback``); devices, fifos and unknown
types are refused like ``extract_tar`` does. Which writer tar gets a member: ``routing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from zlib import adler32

from bootstrap.data.extract import ExtractStats
from bootstrap.data.gnutar.headers import (
    BLOCK,
    CHECKSUM_BASE,
    EMPTY_LINK_AND_REST,
    IDS,
    KINDS,
    PLAIN_FILE,
    REFUSED,
    TYPEFLAGS,
    ZERO_BLOCK,
    CorruptTar,
    byte_sum,
    field_text,
    header,
    number,
    padded_size,
    pax_records,
)
from bootstrap.data.gnutar.routing import OUT_BATCH, Outlet, Router
from bootstrap.data.memberguard import MemberGuard

_BIG_PIECE = 4 * OUT_BATCH  # a big member's data is read and passed on in pieces this size
_MODE_CACHE_MAX = 64


class NeedsFallback(Exception):
    """The archive uses a feature this parser leaves to tarfile (sparse files)."""


class TarRewriter:
    """Pull a tar stream from ``read`` and push validated, re-headed members to ``outputs``.

    With several outputs (one GNU tar each, so that file creation runs on several cores), each
    member goes to one of them, chosen by a ``Router``; ``make_folder`` creates each member's
    folder before the member is passed on, so no two tars race to create one.

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
        router = Router(outputs, make_folder)
        self._outlets = router.outlets
        self._outlet = router.outlet  # bound once: it is called for every member
        self.guard = MemberGuard(name)
        self.stats = ExtractStats()
        self.folder_times: dict[str, int] = {}
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
            more = self._read(max(OUT_BATCH, size - have))
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

    def _copy(self, size: int, out: Outlet | None) -> None:
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

    def run(self) -> None:
        """Process members up to the end-of-archive block; raises DataError for a bad one."""
        long: dict[bytes, str] = {}
        pax: dict[str, str] = {}
        take, member, plain_file = self._take, self._member, self._plain_file
        while True:
            block = take(BLOCK)
            if len(block) < BLOCK:
                raise CorruptTar("unexpected end of data: no end-of-archive block")
            if block == ZERO_BLOCK:
                break
            field = block[148:156]
            # adler32's low half is 1 + the byte sum (see byte_sum), inlined for speed
            total = (adler32(block[:256]) & 0xFFFF) + (adler32(block[256:]) & 0xFFFF) - 2
            if number(field) != total - byte_sum(field) + 256:
                raise CorruptTar(f"bad header checksum at byte {self.offset - BLOCK}")
            if not long and not pax and plain_file(block):
                continue
            flag = block[156:157]
            size = number(block[124:136])
            if size < 0:
                raise CorruptTar("negative member size")
            if flag in (b"L", b"K", b"x", b"g"):
                data = take(padded_size(size))
                if len(data) < padded_size(size):
                    raise CorruptTar("unexpected end of data inside a header")
                if flag in (b"L", b"K"):
                    long[flag] = field_text(data[:size])
                    continue
                records = pax_records(data[:size])
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
            out.add(ZERO_BLOCK * 2)
            out.flush()

    def _plain_file(self, block: bytes) -> bool:
        """The usual member, a regular file with a short name and plain numbers, passed on with
        fewer steps than ``_member`` takes; False (nothing consumed) for any other."""
        fields = PLAIN_FILE.fullmatch(block, 100, 157)
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
        head = b"%s%s%s%s" % (name.ljust(100, b"\0"), mode, IDS, fields[2])
        check = CHECKSUM_BASE + byte_sum(head) + 48  # 48: the type flag b"0"
        size = int(fields[3], 8)
        padded = -(-size // BLOCK) * BLOCK
        out = self._outlet(path, "", "file")
        out.add(b"%s%06o\0 0%s" % (head, check, EMPTY_LINK_AND_REST))
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
            name = field_text(block[0:100])
            if block[345] and block[257:265] == b"ustar\x0000":
                prefix = field_text(block[345:500])
                name = f"{prefix}/{name}" if prefix else name
        kind = KINDS.get(flag)
        if kind is None:
            if flag == b"S":
                raise NeedsFallback("GNU sparse file")
            what = REFUSED.get(flag, f"type {flag.decode('latin-1')!r}")
            raise self.guard.reject(name, f"it is a {what}; only files, folders and links")
        if kind == "file":
            if flag == b"\0" and name.endswith("/"):
                kind = "dir"  # the old v7 way of storing a folder
            link = ""  # only links have a target; a file's link field is never passed on
        elif kind == "dir":
            link = ""
        elif link is None:
            link = field_text(block[157:257])
        checked = self.guard.check(name, kind, link)
        data = size if kind == "file" else 0  # as tarfile: only files carry data blocks
        padded = -(-data // BLOCK) * BLOCK
        if checked is None:
            self._copy(padded, None)
            return
        path, target = checked
        mode = (number(block[100:108]) & 0o755) | (0o700 if kind == "dir" else 0o600)
        mtime = number(block[136:148])
        head = header(
            path.encode("utf-8", "surrogateescape"),
            target.encode("utf-8", "surrogateescape"),
            TYPEFLAGS[kind],
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
