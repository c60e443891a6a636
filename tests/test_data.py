"""Staging data: real archives (benign and hostile) built in tmp_path, a real local HTTP server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.data.archives import archive_kind, is_archive
from bootstrap.data.stage import StageResult, stage_data
from bootstrap.errors import DataError
from bootstrap.progress import ProgressBar

FILES = {
    "ds/a.txt": b"alpha\n",
    "ds/sub/b.bin": bytes(range(256)) * 40,
    "ds/sub/deeper/c.txt": b"gamma\n" * 1000,
    "top.txt": b"top\n",
}
TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}


# ---------------------------------------------------------------- helpers and fixtures


def make_tar(path: Path, files: dict[str, bytes] = FILES, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: dict[str, bytes] = FILES) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def hostile_tar(path: Path, *members: tuple[str, bytes | str, str]) -> Path:
    """Members as (name, type, data or link target); type is one of tarfile's type bytes."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind  # type: ignore[assignment]
            info.mode = 0o644
            data = b""
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = payload
            else:
                data = payload.encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def hostile_zip(path: Path, *members: tuple[str, str, int]) -> Path:
    """Members as (name, data, unix mode); a mode of 0 leaves external_attr alone."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode:
                info.create_system = 3
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


def assert_tree(root: Path, files: dict[str, bytes] = FILES) -> None:
    for name, data in files.items():
        assert (root / name).read_bytes() == data, name


def markers(state: Path) -> list[Path]:
    return sorted((state / "data").glob("*.json")) if (state / "data").exists() else []


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".staging-" in p.name] if folder.exists() else []


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "scratch" / ".bootstrap" / "recipe"


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "scratch" / "datasets"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _ShortHandler(_Quiet):
    """Promises more bytes than it sends, like a connection cut mid-download."""

    def do_GET(self) -> None:
        data = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data) + 1000))
        self.end_headers()
        self.wfile.write(data)


def _serve(folder: Path, handler: type[http.server.SimpleHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def www(tmp_path: Path) -> Path:
    folder = tmp_path / "www"
    folder.mkdir()
    return folder


@pytest.fixture
def server(www: Path) -> Iterator[str]:
    yield from _serve(www, _Quiet)


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", list(TAR_MODES) + ["zip"])
def test_each_archive_type_extracts(tmp_path: Path, dest: Path, state: Path, suffix: str) -> None:
    source = tmp_path / f"data.{suffix}"
    if suffix == "zip":
        make_zip(source)
    else:
        make_tar(source, mode=TAR_MODES[suffix])
    result = stage_data(str(source), dest, state_dir=state)
    assert isinstance(result, StageResult) and not result.skipped
    assert_tree(dest)
    assert result.files == len(FILES)
    assert result.bytes == sum(len(d) for d in FILES.values())
    assert result.dest == dest and result.source == str(source)
    assert archive_kind(source) == {"tgz": "tar.gz"}.get(suffix, suffix)
    assert is_archive(source)
    assert len(markers(state)) == 1 and leftovers(dest.parent) == []


def test_gnu_tar_archive_of_a_folder(tmp_path: Path, dest: Path, state: Path) -> None:
    """What users make: `tar -czf x.tgz -C folder .`, with a "./" root, links and modes."""
    src = tmp_path / "src"
    for name, data in FILES.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (src / "ds" / "latest").symlink_to("sub")
    os.link(src / "top.txt", src / "top-again.txt")
    source = tmp_path / "made-by-gnu.tgz"
    subprocess.run(["tar", "-czf", str(source), "-C", str(src), "."], check=True)
    result = stage_data(str(source), dest, state_dir=state)
    assert_tree(dest)
    assert (dest / "ds" / "latest" / "b.bin").read_bytes() == FILES["ds/sub/b.bin"]
    assert os.stat(dest / "top-again.txt").st_ino == os.stat(dest / "top.txt").st_ino
    assert result.files == len(FILES) + 1


def test_kind_comes_from_content_not_extension(tmp_path: Path, dest: Path, state: Path) -> None:
    source = make_tar(tmp_path / "really-a-tgz.zip")
    assert archive_kind(source) == "tar.gz"
    stage_data(str(source), dest, state_dir=state)
    assert_tree(dest)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    (tmp_path / "single.gz").write_bytes(gzip.compress(b"just one file\n" * 100))
    assert not is_archive(text) and not is_archive(tmp_path) and not is_archive(tmp_path / "nope")
    assert archive_kind(tmp_path / "single.gz") is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML page"),
        (b"", "empty"),
        # mtime=0: a time in the bytes would make the test id differ between
        # xdist workers that collect in different seconds, which fails the run.
        (gzip.compress(b"one plain file\n" * 200, mtime=0), "holds no tar"),
        (b"\x28\xb5\x2f\xfd" + b"\0" * 600, "zstd"),
        (b"just some text, certainly no archive" * 20, "starts with"),
    ],
    ids=["html", "empty", "gzip-of-plain-file", "zstd", "text"],
)
def test_not_an_archive_is_a_clear_error(
    tmp_path: Path, dest: Path, state: Path, content: bytes, expected: str
) -> None:
    source = tmp_path / "data.tar.gz"
    source.write_bytes(content)
    with pytest.raises(DataError) as caught:
        stage_data(str(source), dest, state_dir=state)
    assert expected in str(caught.value)
    assert "its name says tar.gz" in str(caught.value) and str(source) in str(caught.value)
    assert not dest.exists() and markers(state) == []


# ---------------------------------------------------------------- failures leave no marker


@pytest.mark.parametrize("suffix", ["tar.gz", "tar", "tar.bz2", "zip"])
def test_truncated_archive_leaves_no_marker_and_a_good_run_follows(
    tmp_path: Path, dest: Path, state: Path, suffix: str
) -> None:
    source = tmp_path / f"data.{suffix}"
    make_zip(source) if suffix == "zip" else make_tar(source, mode=TAR_MODES[suffix])
    good = source.read_bytes()
    other = tmp_path / "other"
    stage_data(str(source), other, state_dir=state)
    assert len(markers(state)) == 1
    source.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        stage_data(str(source), other, state_dir=state)
    # The earlier good stage's marker is gone too: that stage no longer describes `other`.
    assert markers(state) == []
    with pytest.raises(DataError, match="corrupt or truncated"):
        stage_data(str(source), dest, state_dir=state)
    assert markers(state) == [] and not dest.exists() and leftovers(dest.parent) == []
    source.write_bytes(good)
    assert not stage_data(str(source), dest, state_dir=state).skipped
    assert_tree(dest)


def test_staging_gives_back_the_thread_switch_interval(
    tmp_path: Path, dest: Path, state: Path
) -> None:
    """Streaming shortens the GIL switch interval for its threads; the notebook kernel that
    called it gets its own setting back, after a good stage and after a corrupt one."""
    before = sys.getswitchinterval()
    source = make_tar(tmp_path / "data.tar.gz")
    stage_data(str(source), dest, state_dir=state)
    assert sys.getswitchinterval() == before
    source.write_bytes(source.read_bytes()[:-40])
    with pytest.raises(DataError, match="corrupt or truncated"):
        stage_data(str(source), tmp_path / "other", state_dir=state)
    assert sys.getswitchinterval() == before


def test_plain_tar_cut_between_members_is_truncated(
    tmp_path: Path, dest: Path, state: Path
) -> None:
    # tarfile alone would end quietly after the second member and report success.
    source = make_tar(tmp_path / "data.tar", {"a": b"x" * 700, "b": b"y" * 700, "c": b"z"}, "w")
    source.write_bytes(source.read_bytes()[: 2 * 1536])
    with pytest.raises(DataError, match="truncated"):
        stage_data(str(source), dest, state_dir=state)
    assert markers(state) == [] and not dest.exists()


def test_interrupted_stage_cleans_up_and_leaves_no_marker(
    tmp_path: Path, dest: Path, state: Path
) -> None:
    big = {f"ds/f{i}.bin": os.urandom(64 * 1024) for i in range(40)}
    source = make_tar(tmp_path / "big.tar", big, "w")

    class Interrupting:
        def __init__(self) -> None:
            self.seen = 0

        def advance(self, amount: int) -> None:
            self.seen += amount
            if self.seen > 1024 * 1024:
                raise KeyboardInterrupt  # what the Colab Stop button does to us

        def set_total(self, total: int | None) -> None: ...
        def set_description(self, text: str) -> None: ...
        def close(self) -> None: ...

    def interrupting(description: str, total: int | None = None, unit: str = "B") -> ProgressBar:
        return Interrupting()

    (dest / "ds").mkdir(parents=True)
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        stage_data(str(source), dest, state_dir=state, progress=interrupting)
    assert markers(state) == [] and leftovers(dest.parent) == []
    assert sorted(p.name for p in dest.rglob("*")) == ["ds", "keep.txt"]  # no half of it
    stage_data(str(source), dest, state_dir=state)
    assert_tree(dest, big)


def test_work_folder_left_by_a_killed_stage_is_removed(
    tmp_path: Path, dest: Path, state: Path
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = dest.parent / f".{dest.name}.staging-{dead}-abc123"
    (stale / "tree").mkdir(parents=True)
    (stale / "tree" / "half.bin").write_bytes(b"half")
    stage_data(str(make_tar(tmp_path / "d.tgz")), dest, state_dir=state)
    assert not stale.exists() and leftovers(dest.parent) == []


# ---------------------------------------------------------------- merging


def test_archive_merges_into_existing_dest(tmp_path: Path, dest: Path, state: Path) -> None:
    (dest / "ds" / "sub").mkdir(parents=True)
    (dest / "other.txt").write_text("keep me")
    (dest / "ds" / "sub" / "mine.txt").write_text("keep me too")
    (dest / "ds" / "a.txt").write_text("old version")
    stage_data(str(make_zip(tmp_path / "d.zip")), dest, state_dir=state)
    assert_tree(dest)  # the archive wins for its own files
    assert (dest / "other.txt").read_text() == "keep me"
    assert (dest / "ds" / "sub" / "mine.txt").read_text() == "keep me too"


def test_folder_copy_merges(tmp_path: Path, dest: Path, state: Path) -> None:
    source = tmp_path / "My Data 'set'"
    for name, data in FILES.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    (dest / "ds").mkdir(parents=True)
    (dest / "ds" / "already.txt").write_text("here before")
    result = stage_data(str(source), dest, state_dir=state)
    assert_tree(dest)
    assert (dest / "ds" / "already.txt").read_text() == "here before"
    assert (result.files, result.skipped) == (len(FILES), False)
    assert stage_data(str(source), dest, state_dir=state).skipped
    (source / "ds" / "new.txt").write_text("added later")
    assert not stage_data(str(source), dest, state_dir=state).skipped
    assert (dest / "ds" / "new.txt").read_text() == "added later"


def test_merge_conflict_names_the_path(tmp_path: Path, dest: Path, state: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "ds").write_text("a file where the archive has a folder")
    with pytest.raises(DataError, match="ds") as caught:
        stage_data(str(make_tar(tmp_path / "d.tgz")), dest, state_dir=state)
    assert "move or delete" in str(caught.value) and markers(state) == []


def test_folder_source_guards(tmp_path: Path, state: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("x")
    with pytest.raises(DataError, match="inside it"):
        stage_data(str(source), source / "copy", state_dir=state)
    with pytest.raises(DataError, match="is a folder"):
        stage_data(str(source), tmp_path / "out", sha256="0" * 64, state_dir=state)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        stage_data(str(source), tmp_path / "afile", state_dir=state)


# ---------------------------------------------------------------- skipping


def test_second_stage_is_skipped_fast_until_something_changes(
    tmp_path: Path, dest: Path, state: Path
) -> None:
    source = make_tar(tmp_path / "d.tar.gz")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    first = stage_data(str(source), dest, sha256=digest, state_dir=state)
    started = time.monotonic()
    second = stage_data(str(source), dest, sha256=digest, state_dir=state)
    assert time.monotonic() - started < 0.5
    assert second.skipped and not first.skipped and second.files == first.files
    # Scratch wiped (a new VM) but the marker somehow kept: staged again, not trusted.
    for path in sorted(dest.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    assert not stage_data(str(source), dest, sha256=digest, state_dir=state).skipped
    assert_tree(dest)
    # A new archive at the same path is staged again.
    make_tar(source, {**FILES, "top.txt": b"new top\n"})
    assert not stage_data(str(source), dest, state_dir=state).skipped
    assert (dest / "top.txt").read_bytes() == b"new top\n"
    # Another destination is another item.
    assert not stage_data(str(source), tmp_path / "elsewhere", state_dir=state).skipped


# ---------------------------------------------------------------- sha256


@pytest.mark.parametrize("suffix", ["tar.xz", "zip"])
def test_sha256_ok_and_mismatch(tmp_path: Path, dest: Path, state: Path, suffix: str) -> None:
    source = tmp_path / f"d.{suffix}"
    make_zip(source) if suffix == "zip" else make_tar(source, mode=TAR_MODES[suffix])
    actual = hashlib.sha256(source.read_bytes()).hexdigest()
    wrong = "ab" * 32
    with pytest.raises(DataError) as caught:
        stage_data(str(source), dest, sha256=wrong, state_dir=state)
    assert wrong in str(caught.value) and actual in str(caught.value)
    assert markers(state) == [] and not dest.exists()
    result = stage_data(str(source), dest, sha256="SHA256:" + actual.upper(), state_dir=state)
    assert not result.skipped
    assert_tree(dest)
    with pytest.raises(DataError, match="64 hexadecimal"):
        stage_data(str(source), dest, sha256="abc", state_dir=state)


def test_sha256_covers_the_bytes_after_the_tar_end(tmp_path: Path, dest: Path, state: Path) -> None:
    source = make_tar(tmp_path / "d.tar", mode="w")
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    with source.open("ab") as handle:
        handle.write(os.urandom(3 * 1024 * 1024))  # more than tarfile reads past its end
    after = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="does not match"):
        stage_data(str(source), dest, sha256=before, state_dir=state)
    assert not stage_data(str(source), dest, sha256=after, state_dir=state).skipped


# ---------------------------------------------------------------- hostile archives

OUTSIDE = "../outside.txt"
# A member climbing out of the stage's work folder, which is made in dest (beside dest/ds, the
# destination of these tests): from the folder it is unpacked in (work/tree), "../../x" lands
# in dest, one level above the work folder, and "../../../x" in dest.parent, two levels above.
# "{dest}" in a member's name stands for dest: an absolute path to the same place.


def assert_nothing_escaped(dest: Path) -> None:
    assert os.listdir(dest) == ["ds"]  # no escaped member, and the work folder is gone
    assert sorted(os.listdir(dest.parent)) == ["datasets"]


@pytest.mark.parametrize(
    ("members", "culprit"),
    [
        ([("{dest}/evil.txt", tarfile.REGTYPE, "x")], "{dest}/evil.txt"),
        ([("ds/../../../evil.txt", tarfile.REGTYPE, "x")], "ds/../../../evil.txt"),
        ([("../../../evil.txt", tarfile.REGTYPE, "x")], "../../../evil.txt"),
        ([("link", tarfile.SYMTYPE, "/etc")], "link"),
        ([("ds/link", tarfile.SYMTYPE, "../../..")], "ds/link"),
        ([("hard", tarfile.LNKTYPE, "/etc/passwd")], "hard"),
        ([("hard", tarfile.LNKTYPE, OUTSIDE)], "hard"),
        ([("hard", tarfile.LNKTYPE, "not-yet.txt"), ("not-yet.txt", tarfile.REGTYPE, "x")],
         "hard"),
        ([("sub/f", tarfile.REGTYPE, "x"), ("l", tarfile.SYMTYPE, "sub/f"),
          ("hard", tarfile.LNKTYPE, "l")], "hard"),
        ([("sub", tarfile.DIRTYPE, ""), ("ln", tarfile.SYMTYPE, "sub"),
          ("ln/planted.txt", tarfile.REGTYPE, "x")], "ln/planted.txt"),
        ([("ln", tarfile.SYMTYPE, "."), ("ln", tarfile.REGTYPE, "x")], "ln"),
        ([("f.txt", tarfile.REGTYPE, "x"), ("f.txt", tarfile.SYMTYPE, "/etc/passwd")], "f.txt"),
        ([("a", tarfile.SYMTYPE, "b/.."), ("b", tarfile.SYMTYPE, ".")], "a"),
        ([("a", tarfile.SYMTYPE, "b"), ("b", tarfile.SYMTYPE, "a")], "a"),
        ([("dev", tarfile.CHRTYPE, "")], "dev"),
        ([("blk", tarfile.BLKTYPE, "")], "blk"),
        ([("pipe", tarfile.FIFOTYPE, "")], "pipe"),
        ([("x" * 300 + "/f", tarfile.REGTYPE, "x")], "x" * 300 + "/f"),
    ],
    ids=["abs", "dotdot", "dotdot-two-up", "symlink-abs", "symlink-out", "hardlink-abs",
         "hardlink-out", "hardlink-forward", "hardlink-to-symlink", "file-through-symlink",
         "file-over-symlink", "link-over-file", "symlink-chain-out", "symlink-loop", "chr", "blk",
         "fifo", "long-name"],
)  # fmt: skip
def test_hostile_tar_member_is_rejected(
    tmp_path: Path,
    dest: Path,
    state: Path,
    members: list[tuple[str, bytes, str]],
    culprit: str,
) -> None:
    at = str(dest)
    members = [(name.replace("{dest}", at), kind, data) for name, kind, data in members]
    source = hostile_tar(tmp_path / "evil.tar", ("benign.txt", tarfile.REGTYPE, "ok"), *members)
    (dest / "ds").mkdir(parents=True)
    with pytest.raises(DataError) as caught:
        stage_data(str(source), dest / "ds", state_dir=state)
    assert repr(culprit.replace("{dest}", at)) in str(caught.value)
    assert str(source) in str(caught.value)
    assert list((dest / "ds").iterdir()) == []  # nothing placed, not even benign.txt
    assert_nothing_escaped(dest)
    assert markers(state) == []


def test_safe_links_and_modes_are_kept(tmp_path: Path, dest: Path, state: Path) -> None:
    source = tmp_path / "links.tar"
    with tarfile.open(source, "w") as tar:
        for name, mode in (("bin/tool", 0o4777), ("data.txt", 0o666)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 3, mode
            tar.addfile(info, io.BytesIO(b"abc"))
        for name, kind, link in (("bin/alias", tarfile.SYMTYPE, "tool"),
                                 ("copy.txt", tarfile.LNKTYPE, "data.txt"),
                                 ("up", tarfile.SYMTYPE, "bin/../data.txt")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tar.addfile(info)
    stage_data(str(source), dest, state_dir=state)
    assert os.readlink(dest / "bin" / "alias") == "tool"
    assert (dest / "up").read_bytes() == b"abc"
    assert os.stat(dest / "copy.txt").st_ino == os.stat(dest / "data.txt").st_ino
    tool = stat.S_IMODE(os.stat(dest / "bin" / "tool").st_mode)
    assert not tool & (stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH)
    assert tool & stat.S_IXUSR
    assert not stat.S_IMODE(os.stat(dest / "data.txt").st_mode) & stat.S_IWOTH


@pytest.mark.parametrize(
    ("members", "culprit"),
    [
        ([("../../evil.txt", "x", 0)], "../../evil.txt"),
        ([("ds/../../../../evil.txt", "x", 0)], "ds/../../../../evil.txt"),
        ([("{dest}/evil.txt", "x", 0)], "{dest}/evil.txt"),
        ([("..\\..\\evil.txt", "x", 0)], "..\\..\\evil.txt"),
        ([("C:/evil.txt", "x", 0)], "C:/evil.txt"),
        ([("ln", "../../etc", 0o120777)], "ln"),
        ([("ln", "/etc/passwd", 0o120777)], "ln"),
        ([("ln", "sub", 0o120777), ("ln/planted.txt", "x", 0)], "ln/planted.txt"),
        ([("pipe", "", 0o010644)], "pipe"),
    ],
    ids=["slip", "slip-two-up", "abs", "backslash", "drive", "symlink-out", "symlink-abs",
         "through-symlink", "fifo"],
)  # fmt: skip
def test_hostile_zip_member_is_rejected(
    tmp_path: Path, dest: Path, state: Path, members: list[tuple[str, str, int]], culprit: str
) -> None:
    at = str(dest)
    members = [(name.replace("{dest}", at), data, mode) for name, data, mode in members]
    source = hostile_zip(tmp_path / "evil.zip", ("benign.txt", "ok", 0), *members)
    (dest / "ds").mkdir(parents=True)
    with pytest.raises(DataError) as caught:
        stage_data(str(source), dest / "ds", state_dir=state)
    assert repr(culprit.replace("{dest}", at)) in str(caught.value)
    assert str(source) in str(caught.value)
    assert list((dest / "ds").iterdir()) == []
    assert_nothing_escaped(dest)
    assert markers(state) == []


def test_zip_symlink_inside_and_exec_bit_are_kept(tmp_path: Path, dest: Path, state: Path) -> None:
    source = hostile_zip(
        tmp_path / "ok.zip",
        ("sub/run.sh", "#!/bin/sh\n", 0o100755),
        ("sub/plain.txt", "text", 0o106666),  # setuid and world-write bits are dropped
        ("alias", "sub/run.sh", 0o120777),
        ("win\\style.txt", "backslashes are separators", 0),
    )
    stage_data(str(source), dest, state_dir=state)
    assert os.readlink(dest / "alias") == "sub/run.sh"
    assert os.access(dest / "sub" / "run.sh", os.X_OK)
    assert stat.S_IMODE(os.stat(dest / "sub" / "plain.txt").st_mode) == 0o644
    assert (dest / "win" / "style.txt").read_text() == "backslashes are separators"


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize("suffix", ["tar.gz", "tar.bz2", "zip"])
def test_url_is_downloaded_and_extracted(
    www: Path, server: str, dest: Path, state: Path, suffix: str
) -> None:
    source = www / f"d.{suffix}"
    make_zip(source) if suffix == "zip" else make_tar(source, mode=TAR_MODES[suffix])
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    url = f"{server}/d.{suffix}?token=secret"
    result = stage_data(url, dest, sha256=digest, state_dir=state)
    assert_tree(dest)
    assert "secret" not in result.source and "secret" not in markers(state)[0].read_text()
    assert stage_data(url, dest, sha256=digest, state_dir=state).skipped
    with pytest.raises(DataError, match="does not match"):
        stage_data(url, dest, sha256="0" * 64, state_dir=state)


def test_url_errors(www: Path, server: str, dest: Path, state: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        stage_data(f"{server}/missing.tar.gz", dest, state_dir=state)
    with pytest.raises(DataError, match="unsupported scheme"):
        stage_data("ftp://example.com/d.tar", dest, state_dir=state)
    assert markers(state) == []


def test_download_cut_short_is_an_error(www: Path, dest: Path, state: Path) -> None:
    make_zip(www / "d.zip")
    for base in _serve(www, _ShortHandler):
        with pytest.raises(DataError, match="stopped early"):
            stage_data(f"{base}/d.zip", dest, state_dir=state)
    assert markers(state) == [] and not dest.exists()


# ---------------------------------------------------------------- the rest


def test_missing_source_names_the_path_and_what_to_do(tmp_path: Path, state: Path) -> None:
    (tmp_path / "ROD-synROD.tar").write_bytes(b"")
    with pytest.raises(DataError) as caught:
        stage_data(str(tmp_path / "ROD-synRod.tar"), tmp_path / "d", state_dir=state)
    error = caught.value
    assert str(tmp_path / "ROD-synRod.tar") in error.message
    assert error.hint and "ROD-synROD.tar" in error.hint and "data[].source" in error.hint
    drive = tmp_path / "content" / "drive" / "MyDrive" / "x.tar"
    with pytest.raises(DataError, match="Drive mounted"):
        stage_data(str(drive), tmp_path / "d", state_dir=state)


def test_progress_counts_the_source_bytes(tmp_path: Path, dest: Path, state: Path) -> None:
    source = make_tar(tmp_path / "d.tgz", {f"f{i}": os.urandom(5000) for i in range(50)})
    bars: list[dict[str, object]] = []

    class Bar:
        def __init__(self, record: dict[str, object]) -> None:
            self.record = record

        def advance(self, amount: int) -> None:
            self.record["done"] = int(self.record["done"]) + amount  # type: ignore[call-overload]

        def set_total(self, total: int | None) -> None:
            self.record["total"] = total

        def set_description(self, text: str) -> None: ...

        def close(self) -> None:
            self.record["closed"] = True

    def factory(description: str, total: int | None = None, unit: str = "B") -> ProgressBar:
        bars.append({"description": description, "total": total, "done": 0, "unit": unit})
        return Bar(bars[-1])

    stage_data(str(source), dest, state_dir=state, progress=factory)
    size = source.stat().st_size
    assert [(b["total"], b["done"], b["unit"], b.get("closed")) for b in bars] == [
        (size, size, "B", True)
    ]


def test_stage_many_small_files_reasonably_fast(tmp_path: Path, dest: Path, state: Path) -> None:
    # Not a benchmark: catches per-member work that grows out of hand (quadratic checks).
    files = {f"ds/{i // 100}/{i}.txt": b"x" for i in range(3000)}
    source = make_tar(tmp_path / "many.tar", files, "w")
    started = time.monotonic()
    assert stage_data(str(source), dest, state_dir=state).files == 3000
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------- GNU tar fast path and fallback


def test_gnu_tar_path_is_available_here() -> None:
    from bootstrap.data.gnutar.extract import tools_for

    if tools_for("tar") is None:
        pytest.skip("no GNU tar on this machine; the tarfile path covers everything")
    tools = tools_for("tar.gz")
    assert tools is not None and tools.inflate and tools.decompress is None  # zlib, in-process
    if shutil.which("xz"):
        tools = tools_for("tar.xz")
        assert tools is not None and tools.decompress is not None


def _gzip_cases(tar: bytes) -> dict[str, bytes]:
    one = gzip.compress(tar)
    return {
        "concatenated-members": gzip.compress(tar[:5000]) + gzip.compress(tar[5000:]),
        "trailing-junk": one + b"not gzip, ignored as gzip does" + os.urandom(3000),
        "trailing-zeros": one + bytes(10240),
        "member-split-across-reads": gzip.compress(tar[: 1024 * 1024 - 1])
        + gzip.compress(tar[1024 * 1024 - 1 :]),
    }


@pytest.mark.parametrize(
    "case",
    ["concatenated-members", "trailing-junk", "trailing-zeros", "member-split-across-reads"],
)
def test_gzip_stream_variants_extract_like_gzip(
    tmp_path: Path, dest: Path, state: Path, case: str
) -> None:
    files = {**FILES, "ds/big.bin": os.urandom(1_500_000)}  # several inflated pieces
    tar = make_tar(tmp_path / "d.tar", files, "w").read_bytes()
    source = tmp_path / "d.tar.gz"
    source.write_bytes(_gzip_cases(tar)[case])
    digest = hashlib.sha256(source.read_bytes()).hexdigest()  # covers the trailing bytes too
    assert stage_data(str(source), dest, sha256=digest, state_dir=state).files == len(files)
    assert_tree(dest, files)


@pytest.mark.parametrize("where", ["crc", "length", "cut-trailer", "cut-mid"])
def test_gzip_damage_is_corrupt(tmp_path: Path, dest: Path, state: Path, where: str) -> None:
    data = bytearray(
        make_tar(tmp_path / "d.tar.gz", {**FILES, "r": os.urandom(300_000)}).read_bytes()
    )
    if where == "crc":
        data[-8] ^= 0xFF
    elif where == "length":
        data[-2] ^= 0xFF
    elif where == "cut-trailer":  # the tar inside is whole; the gzip trailer is not
        data = data[:-4]
    else:
        data = data[: len(data) // 2]
    (tmp_path / "d.tar.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or truncated") as caught:
        stage_data(str(tmp_path / "d.tar.gz"), dest, state_dir=state)
    assert "gzip: " in str(caught.value)
    assert not dest.exists() and markers(state) == [] and leftovers(dest.parent) == []


@pytest.mark.parametrize("suffix", ["tar", "tar.gz", "tar.xz"])
def test_fallback_without_gnu_tar_extracts_and_rejects(
    tmp_path: Path, dest: Path, state: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bootstrap.data.gnutar.extract import tools_for

    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert tools_for(suffix) is None
    stage_data(
        str(make_tar(tmp_path / f"d.{suffix}", mode=TAR_MODES[suffix])), dest, state_dir=state
    )
    assert_tree(dest)
    evil = hostile_tar(
        tmp_path / "evil.tar",
        ("ok", tarfile.REGTYPE, "x"),
        ("d", tarfile.SYMTYPE, ".."),
        ("d/evil.txt", tarfile.REGTYPE, "x"),
    )
    with pytest.raises(DataError, match="refusing unsafe member"):
        stage_data(str(evil), tmp_path / "other", state_dir=state)
    assert not (tmp_path / "other").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_and_links_in_every_format(
    tmp_path: Path, dest: Path, state: Path, fmt: int
) -> None:
    deep = "/".join(["d" * 60] * 2) + "/" + "n" * 90 + ".txt"  # > 100 bytes: L, pax or prefix
    files = {deep: b"deep\n", "ü-unicode.txt": b"u\n"}
    source = tmp_path / "long.tar.gz"
    with tarfile.open(source, "w:gz", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if fmt != tarfile.USTAR_FORMAT:  # ustar cannot hold a link target over 100 bytes
            info = tarfile.TarInfo("alias")
            info.type, info.linkname = tarfile.SYMTYPE, deep
            tar.addfile(info)
    stage_data(str(source), dest, state_dir=state)
    assert_tree(dest, files)
    if fmt != tarfile.USTAR_FORMAT:
        assert (dest / "alias").read_bytes() == b"deep\n"


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_hostile_names_are_rejected(tmp_path: Path, dest: Path, state: Path, fmt: int) -> None:
    """A path hidden in a pax or GNU long-name header is validated like any other."""
    culprit = "a" * 120 + "/../../evil.txt"
    source = tmp_path / "evil.tar"
    with tarfile.open(source, "w", format=fmt) as tar:
        for name in ("ok.txt", culprit):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError) as caught:
        stage_data(str(source), dest, state_dir=state)
    assert repr(culprit) in str(caught.value)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists() and markers(state) == []


def test_corrupt_header_checksum_is_corrupt(tmp_path: Path, dest: Path, state: Path) -> None:
    source = make_tar(tmp_path / "d.tar", mode="w")
    data = bytearray(source.read_bytes())
    data[1024 + 10] ^= 0xFF  # inside the second member's header (after a 1-block file)
    data[0:0] = b""
    source.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or truncated"):
        stage_data(str(source), dest, state_dir=state)
    assert not dest.exists() and markers(state) == []
