"""The checkpoint mirror with real files, real threads and a fake clock.

Drive failures are played with the mirror's fault hook: the tests run as root, and root ignores
file modes, so ``chmod 0`` on the persist folder would not make it unwritable here.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest

from bootstrap.errors import StepError
from bootstrap.mirror import snapshot, sync
from bootstrap.mirror.files import (
    CHUNK_SIZE,
    MANIFEST_NAME,
    FaultHook,
    SourceChanged,
    is_complete,
)
from bootstrap.mirror.restore import mirror_status, restore_checkpoints
from bootstrap.mirror.selection import (
    FolderRule,
    find_checkpoints,
    find_files,
    folder_rules,
    newest_checkpoint,
)
from bootstrap.mirror.thread import CheckpointMirror

T0 = 1_700_000_000_000_000_000  # a fixed modification time, in ns


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def archive(payload: bytes = b"weights", entries: int = 3) -> bytes:
    """A zip shaped like a torch.save file: several entries, central directory last."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for i in range(entries):
            # A fixed timestamp keeps the bytes the same from one call to the next.
            zf.writestr(zipfile.ZipInfo(f"archive/data/{i}", (2024, 1, 1, 0, 0, 0)), payload * 50)
    return buffer.getvalue()


def put(path: Path, data: bytes, mtime_ns: int | None = T0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    (tmp_path / "scratch ckpt").mkdir()
    return tmp_path / "scratch ckpt"


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    return tmp_path / "persist 'run'" / "checkpoints"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(src: Path, dst: Path, clock: FakeClock, **kwargs: object) -> CheckpointMirror:
    return CheckpointMirror(src, dst, ("**/*",), clock=clock, **kwargs)  # type: ignore[arg-type]


def settle(mirror: CheckpointMirror, clock: FakeClock, seconds: float = 1.0) -> None:
    """Let ``seconds`` pass (a checkpoint is ready at once; other files once quiet)."""
    clock.advance(seconds)


# -- discovery and completeness ------------------------------------------------------------


def test_find_checkpoints_skips_temps_hidden_and_manifest(src: Path) -> None:
    for rel in [
        "a.pt",
        "sub dir/b.pt",
        "notes.txt",
        ".a.pt.x1.tmp",
        "c.pt.tmp",
        ".ipynb_checkpoints/d.pt",
        MANIFEST_NAME,
        ".mirror-a.pt.zz.tmp",
    ]:
        put(src / rel, b"x")
    (src / "folder.pt").mkdir()
    names = [p.relative_to(src).as_posix() for p in find_checkpoints(src, ("**/*",))]
    assert names == ["a.pt", "notes.txt", "sub dir/b.pt"]
    assert [p.name for p in find_checkpoints(src, "*.pt")] == ["a.pt"]
    assert len(find_checkpoints(src, ("*.pt", "**/*.txt"))) == 2
    assert find_checkpoints(src / "missing", ("**/*",)) == []


def test_newest_checkpoint_by_mtime_then_name_skipping_torn(src: Path) -> None:
    put(src / "b.pt", archive(), T0)
    put(src / "a.pt", archive(), T0)
    put(src / "old.pt", archive(), T0 - 10**9)
    assert newest_checkpoint(src, "*.pt") == src / "b.pt"  # a tie: the greater name
    put(src / "c.pt", archive()[:-30], T0 + 10**9)  # newest, but torn by a crash
    assert newest_checkpoint(src, "*.pt") == src / "b.pt"
    assert newest_checkpoint(src, "*.pt", complete_only=False) == src / "c.pt"
    assert newest_checkpoint(src / "missing", "*.pt") is None


def test_is_complete_on_real_torch_files(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "real.pt"
    torch.save({"w": torch.arange(1000.0), "step": 3}, path)
    data = path.read_bytes()
    assert is_complete(path)
    for cut in (1, 4, 100, len(data) // 2, len(data) - 22, len(data) - 1):
        torn = put(tmp_path / f"torn-{cut}.pt", data[:cut])
        assert not is_complete(torn), cut
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert is_complete(legacy)  # unverifiable, so trusted


def test_is_complete_on_safetensors_and_other_files(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    good = len(header).to_bytes(8, "little") + header + b"\0" * 8
    assert is_complete(put(tmp_path / "m.safetensors", good))
    assert not is_complete(put(tmp_path / "short.safetensors", good[:-1]))
    assert not is_complete(put(tmp_path / "bad.safetensors", b"\xff" * 8 + header))
    assert is_complete(put(tmp_path / "state.json", b"{}"))
    assert not is_complete(put(tmp_path / "empty.json", b""))
    assert not is_complete(put(tmp_path / "two.pt", b"PK"))
    assert not is_complete(tmp_path / "missing.pt")


# -- copying -------------------------------------------------------------------------------


def test_new_checkpoint_is_copied_at_once_with_its_mtime_and_only_once(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    ops: list[str] = []
    mirror = make(src, dst, clock, fault_hook=lambda op, path: ops.append(op))
    put(src / "epoch 1" / "model.pt", archive(), T0)
    # A torch file can be told whole or torn: no waiting for it to stop changing.
    assert mirror.sync_once().copied == [Path("epoch 1/model.pt")]
    copy = dst / "epoch 1" / "model.pt"
    assert copy.read_bytes() == archive() and copy.stat().st_mtime_ns == T0
    assert temps(dst) == []
    status = mirror_status(dst)
    assert status["files"] == {
        "epoch 1/model.pt": {"size": len(archive()), "mtime_ns": T0, "present": True}
    }
    ops.clear()
    clock.advance(5)
    again = mirror.sync_once()
    assert again.copied == [] and again.pending == [] and ops == []


def test_growing_file_waits_until_stable(src: Path, dst: Path, clock: FakeClock) -> None:
    mirror = make(src, dst, clock, stable_for=1.0)
    path = put(src / "state.dat", b"part one", T0)
    mirror.sync_once()
    for i in range(3):  # still being written: every scan sees a new size and mtime
        clock.advance(0.8)
        put(path, path.read_bytes() + b" more", T0 + (i + 1) * 10**9)
        assert mirror.sync_once().pending == [Path("state.dat")]
    clock.advance(0.6)
    assert mirror.sync_once().pending == [Path("state.dat")]  # stable for 0.6 s only
    clock.advance(0.4)
    assert mirror.sync_once().copied == [Path("state.dat")]
    assert (dst / "state.dat").read_bytes() == path.read_bytes()


def test_torn_checkpoint_is_never_copied_nor_replaces_the_good_one(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    mirror = make(src, dst, clock)
    path = put(src / "last.pt", archive(b"v1"), T0)
    settle(mirror, clock)
    assert mirror.sync_once().copied == [Path("last.pt")]
    put(path, archive(b"v2")[:-40], T0 + 10**9)  # a rewrite cut short by a crash
    mirror.sync_once()
    for _ in range(3):
        clock.advance(10)
        report = mirror.sync_once()
        assert report.incomplete == [Path("last.pt")] and not report.copied
    assert mirror.stop() is not None
    assert (dst / "last.pt").read_bytes() == archive(b"v1")
    assert (dst / "last.pt").stat().st_mtime_ns == T0
    put(path, archive(b"v2"), T0 + 2 * 10**9)
    settle(mirror, clock)
    assert mirror.sync_once().copied == [Path("last.pt")]
    assert (dst / "last.pt").read_bytes() == archive(b"v2")


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.ENOTCONN, "Transport endpoint is not connected"),
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied"),  # what chmod 0 would give non-root
    ],
    ids=["EIO", "ENOTCONN", "ENOSPC", "EACCES"],
)
def test_failing_persist_warns_once_backs_off_and_catches_up(
    src: Path, dst: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, error: OSError
) -> None:
    broken = {"until": 1000.0 + 30}
    calls: list[float] = []

    def drive(op: str, path: Path) -> None:
        calls.append(clock.now)
        if clock.now < broken["until"]:
            raise error

    events: list[str] = []
    mirror = make(src, dst, clock, fault_hook=drive, on_event=events.append)
    put(src / "a.pt", archive(b"a"), T0)
    put(src / "b.pt", archive(b"b"), T0 + 1)
    caplog.set_level(logging.DEBUG, logger="bootstrap")
    reports = []
    for _ in range(80):
        reports.append(mirror.sync_once())
        clock.advance(0.5)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"persist is failing ({error}): checkpoints are kept on scratch and mirrored "
        "when it recovers"
    ]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["persist recovered: checkpoints are mirrored again"]
    assert any(r.error for r in reports) and reports[-1].error is None
    # Backing off: far fewer tries than scans while persist was down (1, 2, 4, 8, 16 s apart).
    assert len({t for t in calls if t < broken["until"]}) <= 6
    for name, data in (("a.pt", archive(b"a")), ("b.pt", archive(b"b"))):
        assert (dst / name).read_bytes() == data
    assert temps(dst) == []
    assert events[0].startswith("persist is failing") and "persist recovered" in " ".join(events)


def test_backoff_doubles_up_to_its_cap(src: Path, dst: Path, clock: FakeClock) -> None:
    tries: list[float] = []

    def down(op: str, path: Path) -> None:
        tries.append(clock.now)
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    mirror = make(src, dst, clock, fault_hook=down, retry_backoff=(1.0, 8.0))
    put(src / "a.pt", archive(), T0)
    for _ in range(120):
        mirror.sync_once()
        clock.advance(0.5)
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize("fail_at", ["write", "replace"])
def test_failure_mid_copy_keeps_the_good_copy(
    src: Path, dst: Path, clock: FakeClock, fail_at: str
) -> None:
    state = {"armed": False, "writes": 0}

    def drive(op: str, path: Path) -> None:
        if state["armed"] and op == fail_at:
            state["writes"] += 1
            if op == "replace" or state["writes"] == 2:  # half-way through the copy
                raise OSError(errno.EIO, "Input/output error")

    mirror = make(src, dst, clock, fault_hook=drive)
    big_v1 = archive(os.urandom(1 << 11), entries=100)  # ~10 MB: three chunks
    path = put(src / "last.pt", big_v1, T0)
    settle(mirror, clock)
    assert mirror.sync_once().copied == [Path("last.pt")]
    state["armed"] = True
    put(path, archive(os.urandom(1 << 11), entries=100), T0 + 10**9)
    settle(mirror, clock)
    report = mirror.sync_once()
    assert report.failed == [Path("last.pt")] and report.error
    assert (dst / "last.pt").read_bytes() == big_v1
    assert temps(dst) == []
    state["armed"] = False
    clock.advance(2)
    assert mirror.sync_once().copied == [Path("last.pt")]
    assert (dst / "last.pt").read_bytes() == path.read_bytes()


def _tear_during_upload(path: Path, v2: bytes) -> tuple[dict[str, bool], FaultHook]:
    """A fault hook that, once armed, changes the source's tail at the upload's first chunk
    while its size and mtime read the same (a filesystem with coarse timestamps)."""
    state = {"armed": False}

    def tear(op: str, target: Path) -> None:
        if op == "write" and state["armed"]:
            state["armed"] = False
            put(path, v2[:-1000] + b"\0" * 1000, T0 + 10**9)

    return state, tear


def test_a_source_torn_after_its_snapshot_was_taken_still_gives_a_whole_copy(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    path = put(src / "last.pt", archive(b"v1"), T0)
    v2 = archive(os.urandom(1 << 11), entries=100)
    state, tear = _tear_during_upload(path, v2)
    mirror = make(src, dst, clock, fault_hook=tear)
    assert mirror.sync_once().copied == [Path("last.pt")]
    put(path, v2, T0 + 10**9)
    state["armed"] = True
    settle(mirror, clock)
    with mock.patch.object(snapshot._Snapshot, "chunks", _after_the_snapshot_is_whole):
        report = mirror.sync_once()
    assert report.copied == [Path("last.pt")]
    assert (dst / "last.pt").read_bytes() == v2 and temps(dst) == []


def _after_the_snapshot_is_whole(self: snapshot._Snapshot) -> Iterator[bytes]:
    self._thread.join()  # the upload starts once the snapshot is whole
    yield from original_chunks(self)


original_chunks = snapshot._Snapshot.chunks


def test_without_a_snapshot_a_copy_that_reads_torn_never_replaces_the_mirror(
    src: Path, dst: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No room for a snapshot on scratch: the file is copied directly, and a rewrite during
    the copy leaves persist as it was; the next pass copies the new version."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))  # mkdtemp fails
    path = put(src / "last.pt", archive(b"v1"), T0)
    v2 = archive(os.urandom(1 << 11), entries=100)
    state, tear = _tear_during_upload(path, v2)
    mirror = make(src, dst, clock, fault_hook=tear)
    assert mirror.sync_once().copied == [Path("last.pt")]
    put(path, v2, T0 + 10**9)
    state["armed"] = True
    settle(mirror, clock)
    report = mirror.sync_once()
    assert report.copied == [] and report.pending == [Path("last.pt")] and not report.failed
    assert (dst / "last.pt").read_bytes() == archive(b"v1") and temps(dst) == []
    put(path, v2, T0 + 2 * 10**9)
    settle(mirror, clock)
    assert mirror.sync_once().copied == [Path("last.pt")]
    assert (dst / "last.pt").read_bytes() == v2


def test_source_rewritten_during_its_upload_goes_up_as_snapshotted_and_is_no_persist_failure(
    src: Path,
    dst: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    snapshots = tmp_path / "system temp"
    snapshots.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(snapshots))
    v1 = os.urandom(9 << 20)
    path = put(src / "data.bin", v1, T0)
    replaced: list[str] = []

    def training_writes_again(op: str, target: Path) -> None:
        if op == "write" and not hasattr(training_writes_again, "done"):
            training_writes_again.done = True  # type: ignore[attr-defined]
            put(path, v1 + b"tail", T0 + 10**9)
        if op == "replace":
            replaced.append(target.name)

    mirror = make(src, dst, clock, fault_hook=training_writes_again)
    assert mirror.sync_once().pending == [Path("data.bin")]  # no format to check: wait
    settle(mirror, clock)
    with mock.patch.object(snapshot._Snapshot, "chunks", _after_the_snapshot_is_whole):
        report = mirror.sync_once()
    # The upload read the snapshot, whole before the training wrote again: v1 went up.
    assert report.copied == [Path("data.bin")] and not report.failed and report.error is None
    assert (dst / "data.bin").read_bytes() == v1 and temps(dst) == []
    assert list(snapshots.iterdir())  # the snapshot folder, kept for the next pass
    assert mirror.sync_once().pending == [Path("data.bin")]  # the new version: wait again
    settle(mirror, clock)
    assert mirror.sync_once().copied == [Path("data.bin")]
    assert (dst / "data.bin").read_bytes() == v1 + b"tail"
    assert replaced == ["data.bin", "data.bin"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    mirror.stop(final=False)
    assert list(snapshots.iterdir()) == []  # and removed when the mirror stops


def test_a_checkpoint_found_mid_save_goes_up_in_the_same_pass_once_its_save_ends(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    """A pass that finds a checkpoint being saved waits a moment for the save to end rather
    than a whole interval for the next pass; a file that stays torn is not waited for again."""
    whole = archive(os.urandom(1 << 11), entries=100)
    path = put(src / "last.pt", whole[: len(whole) // 2], T0)  # the save is half done
    finish = threading.Timer(0.2, put, (path, whole, T0 + 10**9))
    finish.start()
    mirror = make(src, dst, clock)
    assert mirror.sync_once().copied == [Path("last.pt")]
    finish.join()
    assert (dst / "last.pt").read_bytes() == whole
    put(src / "torn.pt", whole[:-1000], T0)  # a crash mid-save: it stays so
    with mock.patch.object(sync, "_wait_until_complete", wraps=sync._wait_until_complete) as waits:
        assert mirror.sync_once().incomplete == [Path("torn.pt")]
        assert mirror.sync_once().incomplete == [Path("torn.pt")]
    assert waits.call_count == 1
    assert not (dst / "torn.pt").exists()


def test_a_file_never_still_for_a_snapshot_is_said_once_and_persist_keeps_its_copy(
    src: Path, dst: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = archive(os.urandom(1 << 11), entries=100)
    path = put(src / "last.pt", v1, T0)
    mirror = make(src, dst, clock)
    assert mirror.sync_once().copied == [Path("last.pt")]
    put(path, archive(os.urandom(1 << 11), entries=100), T0 + 10**9)

    def changing_under_every_snapshot(*args: object, **kwargs: object) -> None:
        raise SourceChanged(f"{path} changed while its snapshot was taken")

    with mock.patch.object(sync, "upload_via_snapshot", changing_under_every_snapshot):
        for _ in range(3):
            settle(mirror, clock)
            assert mirror.sync_once().copied == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path} (10.3 MB) is rewritten faster than it can be read")
    assert "3 snapshots on scratch" in warnings[0]
    assert (dst / "last.pt").read_bytes() == v1  # the newest good copy stays


def test_a_file_saved_again_during_each_upload_is_said_once(
    src: Path, dst: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Saves faster than an upload: every upload is overtaken by a newer save. One overtaken
    upload is chance; two in a row are the training's rhythm, said once, with the figures."""
    path = put(src / "last.pt", archive(os.urandom(1 << 11), entries=100), T0)
    saves = [T0]

    def training_saves_during_upload(op: str, target: Path) -> None:
        if op == "write" and len(saves) <= uploads[0]:
            saves.append(saves[-1] + 10**8)  # 0.1 s after the version being uploaded
            put(path, archive(os.urandom(1 << 11), entries=100), saves[-1])

    uploads = [0]
    mirror = make(src, dst, clock, fault_hook=training_saves_during_upload)

    def upload() -> list[logging.LogRecord]:
        uploads[0] += 1
        settle(mirror, clock)
        with mock.patch.object(snapshot._Snapshot, "chunks", _after_the_snapshot_is_whole):
            assert mirror.sync_once().copied == [Path("last.pt")]
        return [r for r in caplog.records if r.levelno >= logging.WARNING]

    assert upload() == []  # overtaken once: chance
    warnings = upload()  # twice in a row: the rhythm
    assert len(warnings) == 1
    said = warnings[0].getMessage()
    assert str(path) in said and "saved again before its upload to persist ends" in said
    assert "each upload takes" in said and "twice in a row the training saved" in said
    assert upload() == warnings  # once
    assert is_complete(dst / "last.pt")


def test_a_new_session_trusts_the_manifest_and_cleans_stale_temps(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    first = make(src, dst, clock)
    put(src / "a.pt", archive(), T0 + 123_456_789)
    settle(first, clock)
    assert first.sync_once().copied == [Path("a.pt")]
    # Drive keeps whole seconds, and a killed copy left a temp file behind.
    os.utime(dst / "a.pt", ns=(T0, T0))
    put(dst / ".mirror-b.pt.abc.tmp", b"half")
    ops: list[str] = []
    second = make(src, dst, clock, fault_hook=lambda op, path: ops.append(op))
    settle(second, clock)
    report = second.sync_once()
    assert report.copied == [] and report.pending == []
    assert "write" not in ops and temps(dst) == []


# -- deletions -----------------------------------------------------------------------------


def test_deletions_follow_scratch_only_once_newer_files_are_mirrored(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    put(dst / "from-another-vm.pt", archive(b"old"), T0 - 10**9)
    mirror = make(src, dst, clock)
    for i in (1, 2):
        put(src / f"e{i}" / "model.pt", archive(bytes([i])), T0 + i)
    settle(mirror, clock)
    assert len(mirror.sync_once().copied) == 2
    (src / "e1" / "model.pt").unlink()  # the training's retention, after writing e3
    (src / "e1").rmdir()
    put(src / "e3" / "state.dat", b"3", T0 + 3)  # not quiet for long enough yet
    report = mirror.sync_once()
    assert report.pending == [Path("e3/state.dat")] and report.deleted == []
    assert (dst / "e1" / "model.pt").exists()
    clock.advance(1)
    report = mirror.sync_once()
    assert report.copied == [Path("e3/state.dat")] and report.deleted == [Path("e1/model.pt")]
    assert not (dst / "e1").exists()  # the emptied folder goes too
    assert set(mirror_status(dst)["files"]) == {"e2/model.pt", "e3/state.dat"}
    assert (dst / "from-another-vm.pt").exists()  # never seen on scratch: not ours to delete
    for rel in ("e2/model.pt", "e3/state.dat"):  # scratch wiped
        (src / rel).unlink()
    clock.advance(5)
    assert mirror.sync_once().deleted == []
    assert mirror.stop() is not None
    assert (dst / "e2" / "model.pt").exists() and (dst / "e3" / "state.dat").exists()


# -- restore -------------------------------------------------------------------------------


def test_restore_copies_back_paths_and_mtimes_and_keeps_newer_scratch(src: Path, dst: Path) -> None:
    put(dst / "run 1" / "a.pt", archive(b"a"), T0)
    put(dst / "b.pt", archive(b"b"), T0 + 10**9)
    put(dst / "c.pt", archive(b"c"), T0)
    put(dst / MANIFEST_NAME, b"{}")
    put(dst / ".mirror-x.pt.1.tmp", b"half")
    put(src / "b.pt", archive(b"b newer"), T0 + 5 * 10**9)  # scratch is ahead: keep it
    put(src / "c.pt", archive(b"c")[:-10], T0 + 5 * 10**9)  # torn by a crash: replace it
    restored = restore_checkpoints(dst, src, ("**/*",))
    assert sorted(restored) == [src / "c.pt", src / "run 1" / "a.pt"]
    assert (src / "run 1" / "a.pt").read_bytes() == archive(b"a")
    assert (src / "run 1" / "a.pt").stat().st_mtime_ns == T0
    assert (src / "c.pt").read_bytes() == archive(b"c")
    assert (src / "b.pt").read_bytes() == archive(b"b newer")
    assert not (src / MANIFEST_NAME).exists() and temps(src) == []
    assert restore_checkpoints(dst, src, ("**/*",)) == []
    assert restore_checkpoints(dst / "nothing here", src, ("**/*",)) == []


class FakeProgress:
    """A ProgressFactory that records what its bars were told."""

    def __init__(self) -> None:
        self.opened: list[tuple[int | None, str]] = []  # (total, unit) of each bar
        self.totals: list[int | None] = []  # set_total calls
        self.advances: list[int] = []
        self.closed = 0

    def __call__(self, description: str, total: int | None = None, unit: str = "B") -> FakeProgress:
        self.opened.append((total, unit))
        return self

    def advance(self, amount: int) -> None:
        self.advances.append(amount)

    def set_total(self, total: int | None) -> None:
        self.totals.append(total)

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


def test_restore_reports_progress_in_bytes_as_they_are_copied(src: Path, dst: Path) -> None:
    sizes = {"a.dat": 1, "b.dat": CHUNK_SIZE, "run 1/c.dat": 2 * CHUNK_SIZE + 5, "d.dat": 1000}
    for rel, size in sizes.items():
        put(dst / rel, b"w" * size, T0)
    put(dst / "e.dat", b"on scratch already", T0)
    put(src / "e.dat", b"on scratch already", T0)
    progress = FakeProgress()
    restored = restore_checkpoints(dst, src, ("**/*",), progress=progress)
    assert sorted(restored) == sorted(src / rel for rel in sizes)
    assert progress.opened == [(sum(sizes.values()), "B")] and progress.totals == []
    assert sum(progress.advances) == sum(sizes.values())
    # chunk by chunk: c.dat is two 4 MiB chunks and 5 bytes
    assert max(progress.advances) <= CHUNK_SIZE and len(progress.advances) == 6
    assert progress.closed == 1
    again = FakeProgress()
    assert restore_checkpoints(dst, src, ("**/*",), progress=again) == []
    assert again.opened == []  # nothing to restore: no bar


def test_restore_failure_is_a_step_error(src: Path, dst: Path) -> None:
    put(dst / "a.pt", archive(), T0)
    put(src / "a.pt" / "in the way", b"x")  # scratch has a folder where the file goes
    with pytest.raises(StepError, match="could not restore checkpoints"):
        restore_checkpoints(dst, src, "*.pt")


# -- the thread ----------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_background_thread_mirrors_and_stop_is_final(src: Path, dst: Path) -> None:
    mirror = CheckpointMirror(src, dst, "*.pt", interval=0.05, stable_for=0.1)
    mirror.start()
    put(src / "a.pt", archive(b"a"), T0)
    assert wait_for(lambda: (dst / "a.pt").exists())
    mirror.stop()
    assert not [t for t in threading.enumerate() if t.name == "checkpoint-mirror"]

    first_pass = threading.Event()  # it looks at a.pt (on persist already) once, at start
    slow = CheckpointMirror(
        src, dst, "*.pt", interval=3600, fault_hook=lambda op, path: first_pass.set()
    )
    slow.start()
    assert first_pass.wait(10)
    put(src / "b.pt", archive(b"b"), T0 + 1)  # written just before the training exits
    put(src / "torn.pt", archive(b"t")[:-5], T0 + 2)
    report = slow.stop()
    assert report is not None and report.copied == [Path("b.pt")]
    assert report.incomplete == [Path("torn.pt")] and not (dst / "torn.pt").exists()
    assert (dst / "b.pt").read_bytes() == archive(b"b")
    assert slow.stop() is not None  # twice is fine


def test_stop_returns_within_its_timeout_when_persist_hangs(
    src: Path, dst: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def hung_drive(op: str, path: Path) -> None:
        release.wait(30)

    mirror = CheckpointMirror(src, dst, "*.pt", interval=3600, fault_hook=hung_drive)
    put(src / "a.pt", archive(), T0)
    started = time.monotonic()
    try:
        assert mirror.stop(timeout=0.5) is None
        assert time.monotonic() - started < 3
        assert "did not finish within" in caplog.text
    finally:
        release.set()


def test_a_mirror_inside_its_source_is_not_mirrored_into_itself(
    clock: FakeClock, tmp_path: Path
) -> None:
    src = tmp_path / "ckpt"
    mirror = make(src, src / "mirror", clock)
    put(src / "a.pt", archive(), T0)
    for _ in range(4):
        mirror.sync_once()
        clock.advance(1)
    assert [p.relative_to(src).as_posix() for p in find_checkpoints(src, "**/*")] == [
        "a.pt",
        "mirror/a.pt",
    ]


def test_status_asks_the_mirror_rule_whether_a_checkpoint_is_safe(tmp_path: Path) -> None:
    # --status once compared sizes only: a same-size older version on persist read "mirrored".
    from bootstrap.host import Host
    from bootstrap.mirror.restore import write_manifest
    from bootstrap.plan import resolve_plan
    from bootstrap.recipe.load import load_recipe
    from bootstrap.runner.status import describe_status
    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", "name: x\nrepo: {url: ./c}\nrun: {script: t.py}\n")
    host = Host(False, tmp_path / "nowhere", False, (), 0.0)
    plan = resolve_plan(
        load_recipe(recipe, environ={}),
        host,
        persist=str(tmp_path / "p"),
        scratch=str(tmp_path / "s"),
        environ={},
    )
    local = plan.checkpoints / "last.pt"
    copy = plan.mirror_dir / "last.pt"
    for path, content, mtime in ((local, b"new!", T0), (copy, b"old!", T0 - 10**9)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, ns=(mtime, mtime))

    def line() -> str:
        return next(x for x in describe_status(plan) if x.startswith("checkpoint"))

    assert "NOT mirrored yet" in line()
    write_manifest(plan.mirror_dir, {"last.pt": {"size": 4, "mtime_ns": T0}})
    assert line().endswith("old; mirrored)")  # Drive may not keep mtimes: the manifest says
    write_manifest(plan.mirror_dir, {})
    os.utime(copy, ns=(T0, T0))
    assert line().endswith("old; mirrored)")


# -- what is kept: everything, less run.exclude; folder checkpoints whole ----------------------

HF = folder_rules("checkpoint-*/trainer_state.json")


def hf_checkpoint(root: Path, step: int, *, marker: bool = True) -> dict[str, bytes]:
    """A Trainer-shaped folder checkpoint; its marker (trainer_state.json) written last."""
    weights = bytes([step]) * 64
    header = json.dumps({"w": {"dtype": "U8", "shape": [64], "data_offsets": [0, 64]}}).encode()
    files = {
        "model.safetensors": len(header).to_bytes(8, "little") + header + weights,
        "optimizer.pt": archive(bytes([step, 1])),
        "rng_state.pth": archive(bytes([step, 2])),
    }
    if marker:
        files["trainer_state.json"] = json.dumps({"global_step": step}).encode()
    for name, data in files.items():
        put(root / f"checkpoint-{step}" / name, data, T0 + step * 10**9)
    return files


def test_the_rules_read_from_run_match() -> None:
    assert (FolderRule("checkpoint-*", "trainer_state.json"),) == HF
    assert folder_rules(("**/*.pt", "*.pt", "ckpt-*/*", "last.ckpt")) == ()
    assert folder_rules("runs/*/step_*/.metadata") == (FolderRule("runs/*/step_*", ".metadata"),)


def test_the_whole_folder_is_kept_but_for_exclude(src: Path, dst: Path, clock: FakeClock) -> None:
    for rel in ("ckpt.pt", "meta.pkl", "config.json", "tb/events.out.1", "junk/big.bin", "x.png"):
        put(src / rel, archive() if rel.endswith(".pt") else b"{}", T0)
    mirror = make(src, dst, clock, exclude=("junk", "**/*.png"))
    mirror.sync_once()
    clock.advance(1)
    mirror.sync_once()
    kept = sorted(p.relative_to(dst).as_posix() for p in find_files(dst))
    assert kept == ["ckpt.pt", "config.json", "meta.pkl", "tb/events.out.1"]


def test_folder_checkpoint_is_copied_whole_once_marked_and_quiet(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    mirror = make(src, dst, clock, folders=HF)
    files = hf_checkpoint(src, 2, marker=False)  # being saved: no marker yet
    for _ in range(3):
        clock.advance(10)
        assert mirror.sync_once().pending == [Path("checkpoint-2")]
    assert not (dst / "checkpoint-2").exists()
    files = hf_checkpoint(src, 2)
    assert mirror.sync_once().pending == [Path("checkpoint-2")]  # marked, not quiet yet
    clock.advance(1)
    assert mirror.sync_once().copied == [Path("checkpoint-2")]
    assert {p.name: p.read_bytes() for p in (dst / "checkpoint-2").iterdir()} == files
    assert set(mirror_status(dst)["files"]) == {f"checkpoint-2/{name}" for name in files}
    assert temps(dst) == []
    assert newest_checkpoint(dst, "checkpoint-*/trainer_state.json") == dst / "checkpoint-2"


def test_a_failure_mid_folder_never_leaves_part_of_it_on_persist(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    state = {"writes": 0, "armed": False}

    def drive(op: str, path: Path) -> None:
        if state["armed"] and op == "write":
            state["writes"] += 1
            if state["writes"] == 3:  # the third file of the folder
                raise OSError(errno.EIO, "Input/output error")

    mirror = make(src, dst, clock, folders=HF, fault_hook=drive)
    old = hf_checkpoint(src, 1)
    mirror.sync_once()
    clock.advance(1)
    assert mirror.sync_once().copied == [Path("checkpoint-1")]
    state["armed"] = True
    # A rewrite of the same folder (a re-save), dying half-way on persist.
    new = {**old, "optimizer.pt": archive(b"re-saved")}
    put(src / "checkpoint-1" / "optimizer.pt", new["optimizer.pt"], T0 + 5 * 10**9)
    mirror.sync_once()
    clock.advance(1)
    report = mirror.sync_once()
    assert report.failed == [Path("checkpoint-1")] and report.error
    assert {p.name: p.read_bytes() for p in (dst / "checkpoint-1").iterdir()} == old
    assert temps(dst) == []
    state["armed"] = False
    clock.advance(2)
    assert mirror.sync_once().copied == [Path("checkpoint-1")]
    assert {p.name: p.read_bytes() for p in (dst / "checkpoint-1").iterdir()} == new


def test_a_rotated_folder_checkpoint_leaves_persist_whole_after_the_newer_one_arrives(
    src: Path, dst: Path, clock: FakeClock
) -> None:
    mirror = make(src, dst, clock, folders=HF)
    hf_checkpoint(src, 1)
    mirror.sync_once()
    clock.advance(1)
    assert mirror.sync_once().copied == [Path("checkpoint-1")]
    hf_checkpoint(src, 2)
    shutil.rmtree(src / "checkpoint-1")  # save_total_limit=1
    report = mirror.sync_once()
    assert report.pending == [Path("checkpoint-2")] and report.deleted == []
    assert (dst / "checkpoint-1" / "trainer_state.json").exists()
    clock.advance(1)
    report = mirror.sync_once()
    assert report.copied == [Path("checkpoint-2")] and report.deleted == [Path("checkpoint-1")]
    assert sorted(p.name for p in dst.iterdir() if not p.name.startswith(".")) == ["checkpoint-2"]
    assert set(mirror_status(dst)["files"]) == {
        f"checkpoint-2/{n}"
        for n in ("model.safetensors", "optimizer.pt", "rng_state.pth", "trainer_state.json")
    }


def test_restore_brings_folder_checkpoints_back_whole_or_not_at_all(src: Path, dst: Path) -> None:
    whole = hf_checkpoint(dst, 3)
    hf_checkpoint(dst, 4, marker=False)  # not put there by the mirror: not a checkpoint
    put(dst / "config.json", b"{}", T0)
    hf_checkpoint(src, 3, marker=False)  # scratch: a save a crash cut short
    restored = restore_checkpoints(dst, src, folders=HF)
    assert sorted(restored) == [src / "checkpoint-3", src / "config.json"]
    assert {p.name: p.read_bytes() for p in (src / "checkpoint-3").iterdir()} == whole
    assert not (src / "checkpoint-4").exists() and temps(src) == []
    assert newest_checkpoint(src, "checkpoint-*/trainer_state.json") == src / "checkpoint-3"
    assert restore_checkpoints(dst, src, folders=HF) == []


def test_the_final_pass_shows_its_progress_in_bytes(src: Path, dst: Path) -> None:
    data = archive(os.urandom(1 << 12), entries=600)  # several chunks
    put(src / "last.pt", data, T0)
    hf_checkpoint(src, 5)
    mirror = CheckpointMirror(src, dst, folders=HF, interval=3600)
    progress = FakeProgress()
    report = mirror.stop(progress=progress)
    assert report is not None and sorted(report.copied) == [Path("checkpoint-5"), Path("last.pt")]
    folder = sum(p.stat().st_size for p in (src / "checkpoint-5").iterdir())
    assert progress.opened == [(len(data) + folder, "B")]
    assert sum(progress.advances) == len(data) + folder and progress.closed == 1


def test_restore_skips_a_folder_checkpoint_with_a_torn_file_and_restores_the_rest(
    src: Path, dst: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hf_checkpoint(dst, 2)
    hf_checkpoint(dst, 4)
    put(dst / "checkpoint-4" / "optimizer.pt", archive(b"4")[:-30], T0)  # damaged on Drive
    restored = restore_checkpoints(dst, src, folders=HF)
    assert restored == [src / "checkpoint-2"] and not (src / "checkpoint-4").exists()
    assert "checkpoint-4: a file in it looks incomplete" in caplog.text
