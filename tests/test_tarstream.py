"""The tar fast path's own parts: the rewriter's quick path for plain files and the guard's
quick check give exactly what their general paths give; members survive reads of any size;
several GNU tar writers extract the same tree as GNU tar alone does, and a failing tar is
reported by its first complaint. Archives are built here with tarfile; GNU tar is real."""

from __future__ import annotations

import io
import os
import random
import re
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from bootstrap.data import memberguard
from bootstrap.data.gnutar import extract as gnutar
from bootstrap.data.gnutar.rewriter import TarRewriter
from bootstrap.data.memberguard import MemberGuard
from bootstrap.data.stage import stage_data
from bootstrap.errors import DataError

needs_gnu_tar = pytest.mark.skipif(
    gnutar.tools_for("tar") is None, reason="no GNU tar here; the tarfile path is used instead"
)


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _odd_archive(fmt: int) -> bytes:
    """Members that the quick path takes, and members that it must leave to the general one."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        _add(tar, "./top.txt", b"top\n")
        _add(tar, "plain", type=tarfile.DIRTYPE, mode=0o750)
        for size in (0, 1, 511, 512, 513, 70_000):
            _add(tar, f"plain/{size}.bin", os.urandom(size))
        _add(tar, "plain/.hidden", b"h")
        _add(tar, "n" * 100, b"exactly 100 bytes of name")
        _add(tar, "ü-unicode.txt", b"u")
        _add(tar, "modes/setuid", b"s", mode=0o4755)
        _add(tar, "modes/open", b"o", mode=0o777)
        _add(tar, "modes/none", b"n", mode=0)
        _add(tar, "times/epoch", b"e", mtime=0)
        _add(tar, "times/late", b"l", mtime=8**11 - 1)
        _add(tar, "links/sym", type=tarfile.SYMTYPE, linkname="../top.txt")
        _add(tar, "links/hard", type=tarfile.LNKTYPE, linkname="plain/1.bin")
        _add(tar, "dup.txt", b"first")
        _add(tar, "dup.txt", b"second wins")
        _add(tar, "deep/" + "d" * 90 + "/" + "f" * 40, b"long name")
    return buffer.getvalue()


def _rewrite(data: bytes, *, quick: bool) -> tuple[bytes, int]:
    out: list[bytes] = []
    rewriter = TarRewriter(io.BytesIO(data).read, [out.append], "odd.tar")
    taken = 0
    general = rewriter._plain_file

    def plain_file(block: bytes) -> bool:
        nonlocal taken
        if not quick:
            return False
        handled = general(block)
        taken += handled
        return handled

    rewriter._plain_file = plain_file  # type: ignore[method-assign]
    rewriter.run()
    return b"".join(out), taken


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_quick_path_writes_the_same_bytes_as_the_general_one(fmt: int) -> None:
    data = _odd_archive(fmt)
    quick, taken = _rewrite(data, quick=True)
    general, _ = _rewrite(data, quick=False)
    assert taken >= 10  # the plain files went the quick way...
    assert quick == general  # ...and came out byte for byte as the general path writes them
    with tarfile.open(fileobj=io.BytesIO(quick)) as rewritten:
        names = rewritten.getnames()
    assert "top.txt" in names and "./top.txt" not in names


_NAMES = [
    "a", "./a", "a/b/c", "./a/b/c", "././a", "a//b", "a/./b", "a/../b", "../a", "/a", "a/",
    ".a", "a/.b", ".", "./", "", "..", "a..b", "a/b..", "a\x00b", "é/x", "x" * 255, "x" * 256,
    "a/" + "x" * 253, "a\\b", "C:/x", "a/b/c/d/e/f", "a/.", "a/b/.", "a/b/./c", "a/b/../c",
    "a/b/", "a/b//c",
]  # fmt: skip


@pytest.mark.parametrize("known_parent", [False, True])
@pytest.mark.parametrize("backslash", [False, True])
def test_guard_quick_check_decides_as_the_general_one(
    monkeypatch: pytest.MonkeyPatch, known_parent: bool, backslash: bool
) -> None:
    def outcome(name: str) -> object:
        guard = MemberGuard("t", backslash_separators=backslash)
        if known_parent:
            guard.check("a/b/c/d/e", "dir")
        try:
            result = guard.check(name, "file", "ignored")
        except DataError as exc:
            return str(exc)
        return result, guard._seen, guard._files

    quick = {name: outcome(name) for name in _NAMES}
    monkeypatch.setattr(memberguard, "_plain", lambda path: False)
    assert {name: outcome(name) for name in _NAMES} == quick


# ---------------------------------------------------------------- several GNU tar writers


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under root: type, mode, mtime, content or target, and hardlink group."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", oct(stat.S_IMODE(info.st_mode)), int(info.st_mtime))
            else:
                first = inodes.setdefault(info.st_ino, rel)
                found[rel] = ("file", oct(stat.S_IMODE(info.st_mode)), int(info.st_mtime),
                              path.read_bytes(), first)  # fmt: skip
    return found


def _many_folders(path: Path) -> Path:
    """A data set's shape: nested folders, each member of its own, files, and the odd link."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "ds", type=tarfile.DIRTYPE, mode=0o755, mtime=1_600_000_000)
        for d in range(60):
            folder = f"ds/{d % 6}/{d}"
            if d < 6:
                _add(tar, f"ds/{d}", type=tarfile.DIRTYPE, mode=0o750, mtime=1_600_000_100 + d)
            _add(
                tar,
                folder,
                type=tarfile.DIRTYPE,
                mode=0o700 + 0o55 * (d % 2),
                mtime=1_650_000_000 + d,
            )
            for f in range(8):
                _add(tar, f"{folder}/{f}.bin", os.urandom(64 * f), mtime=1_700_000_000 + f)
        _add(tar, "ds/0/0/hard", type=tarfile.LNKTYPE, linkname="ds/5/59/7.bin")
        _add(tar, "ds/1/1/sym", type=tarfile.SYMTYPE, linkname="../../2/2/3.bin")
        _add(tar, "ds/3/3/1.bin", b"a later copy replaces the first")
        _add(tar, "implicit/parent/only.txt", b"its folders have no member")
    return path


@needs_gnu_tar
@pytest.mark.parametrize("writers", [1, 2, 4])
def test_several_writers_extract_what_gnu_tar_extracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writers: int
) -> None:
    source = _many_folders(tmp_path / "many.tar")
    reference = tmp_path / "reference"
    reference.mkdir()
    subprocess.run(["tar", "-xf", str(source), "-C", str(reference), "-p", "--no-same-owner"],
                   check=True)  # fmt: skip
    with tarfile.open(source) as tar:
        folder_times = {member.name: member.mtime for member in tar if member.isdir()}

    def comparable(tree: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
        # A folder gets its mtime from the archive, where GNU tar alone sometimes leaves the
        # time of extraction; one without a member of its own only shows when it was made.
        for path, entry in tree.items():
            if entry[0] == "dir":
                tree[path] = (*entry[:2], folder_times.get(path))
        return tree

    expected = comparable(_tree(reference))
    monkeypatch.setattr(gnutar, "writer_count", lambda: writers)
    for attempt in range(3):  # several tars racing for the same folders: more than one chance
        dest = tmp_path / f"staged-{attempt}"
        assert stage_data(str(source), dest, state_dir=tmp_path / f"state-{attempt}").files == 483
        staged = _tree(dest)
        assert [staged[path][2] for path in folder_times] == list(folder_times.values())
        assert comparable(staged) == expected


class _Pieces:
    """A reader that returns pieces of random length, shorter or longer than asked for, as
    the inflater does (it hands out whole inflated pieces)."""

    def __init__(self, data: bytes, seed: int):
        self._data, self._pos = data, 0
        self._rng = random.Random(seed)

    def read(self, size: int = -1, /) -> bytes:
        want = self._rng.choice([1, 511, 4096, size, 2 * size + 7, 3 << 20])
        piece = self._data[self._pos : self._pos + max(1, want)]
        self._pos += len(piece)
        return piece


@pytest.mark.parametrize("seed", range(4))
def test_big_and_small_members_survive_any_read_sizes(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [0, 1, 511, 512, 513, (5 << 20) + 3, 9 << 20, 700, (4 << 20) - 1, 4 << 20, 3]
    files = {f"d{i % 3}/m{i}.bin": rng.randbytes(size) for i, size in enumerate(sizes)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            _add(tar, name, data)
    source = buffer.getvalue()
    outputs: list[list[bytes]] = [[], []]
    rewriter = TarRewriter(_Pieces(source, seed).read, [o.append for o in outputs], "big.tar")
    rewriter.run()
    assert rewriter.offset == _end_of_archive(source)  # the stream was read up to its end
    got: dict[str, bytes] = {}
    for output in outputs:
        with tarfile.open(fileobj=io.BytesIO(b"".join(output))) as tar:
            for member in tar:
                got[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    assert got == files
    assert rewriter.stats.files == len(files) and rewriter.stats.bytes == sum(sizes)


def _end_of_archive(data: bytes) -> int:
    """The offset just after the first all-zero header block."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + -(-last.size // 512) * 512 + 512


@needs_gnu_tar
@pytest.mark.parametrize("writers", [1, 2])
def test_a_failing_tar_is_reported_by_its_first_complaint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writers: int
) -> None:
    """A file where a later member needs a folder: GNU tar cannot create it and says why.
    (With two writers, which of the two members it fails on depends on who comes first.)"""
    source = tmp_path / "clash.tar"
    with tarfile.open(source, "w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "a", b"a file")
        _add(tar, "a/b", b"needs a folder named a")
    monkeypatch.setattr(gnutar, "writer_count", lambda: writers)
    with pytest.raises(DataError) as caught:
        stage_data(str(source), tmp_path / "dest", state_dir=tmp_path / "state")
    message = str(caught.value)
    if writers == 1:
        assert "tar: a/b: Cannot open: Not a directory" in message
    assert re.search(r"tar: a(/b)?: Cannot open: ", message), message
    assert "previous errors" not in message
    assert not (tmp_path / "dest").exists()
