"""Checkpoint files on disk: which files are checkpoints, whether one looks complete, and a
verified atomic copy that never leaves a torn file where a good one was. Restoring a mirror and
its manifest are in ``bootstrap.mirror.restore``.

Nothing here imports torch: a torch checkpoint is recognised as a zip archive (the format
``torch.save`` has written by default since torch 1.6), and checked by opening its central
directory, which is written last, so a file cut short by a kill never passes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TypeAlias

from bootstrap.fsutil import fsync_dir

MANIFEST_NAME = ".bootstrap-mirror.json"
TEMP_PREFIX = ".mirror-"  # our temp files: hidden, so discovery skips them everywhere
CHUNK_SIZE = 4 << 20

_ZIP_MAGIC = b"PK\x03\x04"
# Files with these suffixes are torch-style archives: too short to hold a zip header means torn.
_ARCHIVE_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin", ".safetensors"})
_MAX_SAFETENSORS_HEADER = 100 << 20
# A JSON file (a run's config, a Trainer's trainer_state.json, written last in its folder but
# not atomically) is whole when it parses; bigger ones are not worth parsing on every scan.
_MAX_JSON_CHECKED = 16 << 20

Match: TypeAlias = "str | Sequence[str]"
FaultHook: TypeAlias = "Callable[[str, Path], None]"


class SourceChanged(Exception):
    """The source file changed or vanished while it was being copied: copy it again later."""


class SourceError(Exception):
    """Reading the source failed (as opposed to writing the target)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


class CopyAborted(Exception):
    """The caller asked to stop (a deadline passed) in the middle of a copy."""


def patterns(match: Match) -> tuple[str, ...]:
    return (match,) if isinstance(match, str) else tuple(match)


def is_ignored(relative: Path) -> bool:
    """Hidden names (our temp files, the manifest, .ipynb_checkpoints, ...) and ``*.tmp``."""
    return relative.name.endswith(".tmp") or any(part.startswith(".") for part in relative.parts)


def is_complete(path: Path) -> bool:
    """Whether ``path`` looks like a whole file: a zip (torch) archive whose central directory
    opens, a safetensors file whose size matches its header, anything else non-empty.
    False when it cannot be read."""
    try:
        return check_complete(Path(path), Path(path).name)
    except OSError:
        return False


def can_tell_complete(path: Path) -> bool:
    """Whether ``is_complete`` can tell a torn copy of ``path`` from a whole one: zip (torch)
    archives, safetensors and JSON files it can; for other files, non-empty is all it knows.
    False when unreadable."""
    suffix = Path(path).suffix.lower()
    if suffix == ".safetensors":
        return True
    try:
        if suffix == ".json":
            return os.stat(path).st_size <= _MAX_JSON_CHECKED
        with open(path, "rb") as handle:
            return handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    except OSError:
        return False


def check_complete(path: Path, name: str) -> bool:
    """``is_complete`` judging the format by ``name`` (a temp copy keeps its target's name);
    OSError propagates, so that a failing disk is not mistaken for a torn file."""
    size = os.stat(path).st_size
    if size == 0:
        return False
    with open(path, "rb") as handle:
        head = handle.read(8)
    suffix = Path(name).suffix.lower()
    if suffix == ".safetensors":
        return _safetensors_ok(path, size)
    if suffix == ".json" and size <= _MAX_JSON_CHECKED:
        return _json_ok(path)
    if head.startswith(_ZIP_MAGIC):
        return _zip_ok(path, size)
    # A torch file starts with the zip magic from its first write; a shorter one is torn.
    # Longer ones without it (torch's legacy pickle format) cannot be checked: trust them.
    return not (suffix in _ARCHIVE_SUFFIXES and len(head) < len(_ZIP_MAGIC))


def _zip_ok(path: Path, size: int) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, struct.error):
        return False
    return bool(entries) and all(e.header_offset + e.compress_size <= size for e in entries)


def _json_ok(path: Path) -> bool:
    try:
        json.loads(Path(path).read_bytes())
    except ValueError:  # includes UnicodeDecodeError
        return False
    return True


def _safetensors_ok(path: Path, size: int) -> bool:
    if size < 8:
        return False
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
            return False
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(header, dict):
        return False
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return False
        if not all(isinstance(o, int) for o in offsets):
            return False
        end = max(end, offsets[1])
    return size == 8 + length + end


def stamp(st: os.stat_result) -> tuple[int, int]:
    """What identifies a version of a file: its size and modification time."""
    return st.st_size, st.st_mtime_ns


def same_version(now: os.stat_result, before: os.stat_result) -> bool:
    """Whether an open file is still the version it was: a rewrite in place changes its size
    or times."""
    return _identity(now) == _identity(before)


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev


def copy_verified(
    source: Path,
    target: Path,
    *,
    expect: tuple[int, int] | None = None,
    hook: FaultHook | None = None,
    should_abort: Callable[[], bool] | None = None,
    copied: Callable[[int], None] | None = None,
    durable: bool = True,
) -> os.stat_result:
    """Copy ``source`` over ``target`` atomically, keeping its modification time and mode.

    The copy goes to a temp file beside ``target``, is fsynced and verified (its size is the
    source's, the file it read did not change meanwhile, the copy looks complete), and only
    then replaces ``target``. A source *replaced* during the copy (a new file renamed over it)
    still gives a good copy of the version that was opened; one rewritten in place does not.
    Raises SourceChanged (the source is not ``expect`` or changed), SourceError (reading the
    source failed), CopyAborted, or OSError for the target side, including OSError(EIO) when
    the written copy does not verify. Returns the source's stat. ``copied`` is told the size
    of each chunk once it is written (for progress). ``durable=False`` skips the fsyncs, for
    a throwaway copy on local disk.
    """
    with open_source(source) as (reader, before):
        if expect is not None and stamp(before) != expect:
            raise SourceChanged(f"{source} changed before it was copied")
        commit_copy(
            read_unchanged(source, reader, before),
            target,
            before,
            label=str(source),
            hook=hook,
            should_abort=should_abort,
            copied=copied,
            durable=durable,
        )
    return before


@contextlib.contextmanager
def open_source(source: Path) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """``source`` open for reading, with its stat at opening; SourceChanged if it is gone,
    SourceError if it cannot be read."""
    try:
        reader = open(source, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError as error:
        raise SourceChanged(f"{source} vanished") from error
    except OSError as error:
        raise SourceError(error) from error
    with reader:
        yield reader, os.fstat(reader.fileno())


def read_unchanged(source: Path, reader: BinaryIO, before: os.stat_result) -> Iterator[bytes]:
    """The chunks of ``reader``, raising SourceChanged as soon as the file is rewritten in
    place (what was read is one version only if the inode did not change meanwhile)."""
    while chunk := _read(reader):
        # Rewritten in place: give up now rather than after a copy nobody can use.
        if not same_version(os.fstat(reader.fileno()), before):
            raise SourceChanged(f"{source} changed while it was copied")
        yield chunk
    if not same_version(os.fstat(reader.fileno()), before):
        raise SourceChanged(f"{source} changed while it was copied")


def commit_copy(
    chunks: Iterable[bytes],
    target: Path,
    before: os.stat_result,
    *,
    label: str,
    hook: FaultHook | None = None,
    should_abort: Callable[[], bool] | None = None,
    copied: Callable[[int], None] | None = None,
    durable: bool = True,
) -> None:
    """Write ``chunks`` (one version of a file whose stat was ``before``, called ``label`` in
    errors) to a temp file beside ``target``, verify it and rename it over ``target``. Errors
    from ``chunks`` (SourceChanged, SourceError) propagate; the temp file never stays."""
    call = hook or (lambda op, path: None)
    call("open", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}.", suffix=".tmp"
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as writer:
            for chunk in chunks:
                if should_abort is not None and should_abort():
                    raise CopyAborted(label)
                call("write", target)
                writer.write(chunk)
                if copied is not None:
                    copied(len(chunk))
            writer.flush()
            if durable:
                os.fsync(writer.fileno())
        _verify(label, before, tmp, target)
        with contextlib.suppress(OSError):  # Drive's FUSE may refuse modes; harmless
            os.chmod(tmp, stat.S_IMODE(before.st_mode))
        os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
        call("replace", target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(target.parent)


def _read(reader: BinaryIO) -> bytes:
    try:
        return reader.read(CHUNK_SIZE)
    except OSError as error:
        raise SourceError(error) from error


def _verify(label: str, before: os.stat_result, tmp: Path, target: Path) -> None:
    copied = os.stat(tmp).st_size
    if copied != before.st_size:
        raise OSError(
            errno.EIO,
            f"the copy of {label} has {copied} bytes instead of {before.st_size}",
            str(target),
        )
    if not check_complete(tmp, target.name):
        raise OSError(errno.EIO, f"the copy of {label} does not read back whole", str(target))


def remove_stale_temps(root: Path) -> int:
    """Remove our temp files and folders a killed copy left under ``root``; returns how many."""
    removed = 0
    for path in sorted(Path(root).rglob(f"{TEMP_PREFIX}*.tmp"), reverse=True):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
    return removed
