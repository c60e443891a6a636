"""diskwrite: direct writes of page-aligned pieces, everything else buffered, same bytes."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

from bootstrap.fsutil import atomic_writer
from bootstrap.training.diskwrite import (
    DIRECT_MIN,
    PAGE,
    DirectWrites,
    EarlyWriteback,
    checkpoint_file,
)


def _direct_io_works(folder: Path) -> bool:
    if not hasattr(os, "O_DIRECT"):
        return False
    probe = folder / "probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


@pytest.fixture
def direct_folder(tmp_path: Path) -> Path:
    if not _direct_io_works(tmp_path):
        pytest.skip(f"the file system under {tmp_path} refuses O_DIRECT")
    return tmp_path


def _page_aligned(data: bytes) -> memoryview:
    region = mmap.mmap(-1, len(data))
    region[:] = data
    return memoryview(region)


def test_big_aligned_pieces_go_direct_and_the_bytes_are_all_there(direct_folder: Path) -> None:
    big = os.urandom(DIRECT_MIN + PAGE + 123)  # whole pages direct, a 123-byte tail buffered
    odd = _page_aligned(b"?" + big)[1:]  # memory one byte past a page: most disks refuse it
    pieces: list[tuple[bytes | memoryview, str]] = [  # (data, whether its pages go direct)
        (b"header" * 100, "no"),  # small: buffered
        (b"\0" * (PAGE * 2 - 600), "no"),  # pads to a page boundary, as torch's writer does
        (_page_aligned(big), "yes"),
        (b"x" * (PAGE - 123), "no"),
        (odd, "if the disk takes it"),  # at a page boundary; refused (EINVAL), then buffered
        (b"misaligned" * 7, "no"),
        (_page_aligned(big), "no"),  # aligned memory at an unaligned offset: buffered
    ]
    target = direct_folder / "out.bin"
    with atomic_writer(target) as handle, checkpoint_file(handle, direct=True) as out:
        assert isinstance(out, DirectWrites)
        offsets = []
        for data, _ in pieces:
            offsets.append(out.tell())
            assert out.write(data) == memoryview(data).nbytes
        whole_pages = len(big) - len(big) % PAGE
        # A disk that takes any memory address (few do) writes the odd piece direct as well.
        assert out.direct_bytes in (whole_pages, 2 * whole_pages)
    assert offsets[2] % PAGE == 0 and offsets[4] % PAGE == 0 and offsets[6] % PAGE
    assert target.read_bytes() == b"".join(bytes(data) for data, _ in pieces)


@pytest.mark.parametrize("how", ["not asked", "BOOTSTRAP_DIRECT_IO=0"])
def test_without_direct_it_is_the_buffered_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how != "not asked":
        monkeypatch.setenv("BOOTSTRAP_DIRECT_IO", "0")
    target = tmp_path / "out.bin"
    asked = how != "not asked"
    with atomic_writer(target) as handle, checkpoint_file(handle, direct=asked) as out:
        assert type(out) is EarlyWriteback  # DirectWrites is one too
        out.write(_page_aligned(os.urandom(DIRECT_MIN)))
    assert target.stat().st_size == DIRECT_MIN


def test_a_file_system_without_direct_io_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "O_DIRECT", raising=False)  # as on macOS
    data = os.urandom(DIRECT_MIN * 2)
    with atomic_writer(tmp_path / "out.bin") as handle, checkpoint_file(handle, direct=True) as out:
        assert type(out) is EarlyWriteback  # DirectWrites is one too
        out.write(_page_aligned(data))
    assert (tmp_path / "out.bin").read_bytes() == data


def test_direct_write_errors_other_than_misalignment_are_raised(direct_folder: Path) -> None:
    target = direct_folder / "out.bin"
    target.write_bytes(b"")
    read_only = os.open(target, os.O_RDONLY | os.O_DIRECT)  # every write fails with EBADF
    try:
        with open(target, "r+b") as handle:
            out = DirectWrites(handle, read_only)
            with pytest.raises(OSError) as caught:
                out.write(_page_aligned(os.urandom(DIRECT_MIN)))
    finally:
        os.close(read_only)
    assert caught.value.errno == errno.EBADF
