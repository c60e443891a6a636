"""Stage a data item into scratch: copy a folder, or extract a local or downloaded archive.

Crash safety. A stage first clears its marker, builds everything in a private work folder beside
``dest`` (same filesystem; inside ``dest`` when that is a mount point), moves the entries into
``dest`` by rename, merging with what is there, and writes the marker last. So a half-written file
never shows under its final name; a rejected or corrupt archive or a sha256 mismatch leaves
``dest`` untouched; and an interrupted stage leaves no marker, so the next run stages again. A
hard kill can leave the work folder behind (a dot-folder); the next stage removes it. Extracted
files are not fsynced: they live on scratch, which dies with the VM anyway. The work folder and
the merge are in ``landing``; the sources and their reading in ``sources``.

Skipping. The marker in ``state_dir`` is keyed by the source (path, size and mtime_ns for a file;
file count, bytes and newest mtime for a folder; the URL itself for a download), the expected
sha256 and ``dest``, and checks that what was staged is still at the top of ``dest``. A skip costs
a stat and a JSON read, never a hash: the sha256 is checked while staging, on the bytes as they
stream past (a local zip, which needs random access, is hashed in a pass before extraction).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from bootstrap.data.archives import (
    HEAD_SIZE,
    describe_head,
    extension_kind,
    kind_of_head,
)
from bootstrap.data.extract import BUFSIZE, ExtractStats, extract_tar, extract_zip
from bootstrap.data.gnutar.extract import extract_tar_gnu, tools_for
from bootstrap.data.gnutar.rewriter import NeedsFallback
from bootstrap.data.landing import (
    check_room,
    merge_into,
    no_space,
    os_hint,
    space_problem,
    work_folder,
)
from bootstrap.data.sources import (
    SUPPORTED,
    Origin,
    SourceReader,
    inspect_source,
    missing_source,
    open_source,
)
from bootstrap.errors import DataError
from bootstrap.fsutil import Marker, read_json
from bootstrap.progress import ProgressFactory, no_progress
from bootstrap.values import sha256_digest

__all__ = ["StageResult", "stage_data", "use_in_place"]

log = logging.getLogger(__name__)

_MARKER_VERSION = 1  # bump when staging changes what ends up in dest
_ENTRIES_KEPT = 100  # top-level names re-checked on the skip path


@dataclass(frozen=True)
class StageResult:
    source: str  # as shown to the user (a URL without its query or credentials)
    dest: Path
    skipped: bool
    files: int  # regular files written (for a skip: when it was staged)
    bytes: int  # their total size
    seconds: float


def stage_data(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    state_dir: str | os.PathLike[str],
    progress: ProgressFactory = no_progress,
    label: str = "",
) -> StageResult:
    """Copy or extract ``source`` into ``dest``, merging; skip when already staged from it.

    ``label`` (e.g. "data[0]") starts the message of a full-disk error, naming the recipe item.
    """
    started = time.monotonic()
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(dest))))
    expected = _expected_sha256(sha256)
    origin = inspect_source(os.fspath(source), expected, target)
    key = {**origin.key, "dest": str(target), "sha256": expected, "version": _MARKER_VERSION}
    ident = hashlib.sha256(f"{origin.location}\0{target}".encode()).hexdigest()[:20]
    marker = Marker(Path(state_dir) / "data" / f"{ident}.json")
    if marker.is_done(key):
        info = read_json(marker.path) or {}
        if _still_there(target, info.get("entries", [])):
            log.debug("%s already staged in %s", origin.display, target)
            return StageResult(
                origin.display,
                target,
                True,
                int(info.get("files", 0)),
                int(info.get("bytes", 0)),
                time.monotonic() - started,
            )
        log.info("%s was staged in %s but is gone; staging again", origin.display, target)
    if target.exists() and not target.is_dir():
        raise DataError(
            f"data destination {target} exists and is not a folder",
            hint="point data[].to at a folder, or move that file away",
        )
    # Cleared first: a stage that dies half-merged must not be mistaken for an older good one.
    marker.clear()
    log.debug("staging %s into %s", origin.display, target)
    merging = False
    try:
        with work_folder(target) as work:
            tree = work / "tree"
            tree.mkdir()
            try:
                stats = _materialise(origin, tree, work, expected, progress, fast=True)
            except NeedsFallback as exc:
                log.info("%s holds %s; extracting it with tarfile", origin.display, exc)
                shutil.rmtree(tree)
                tree.mkdir()
                stats = _materialise(origin, tree, work, expected, progress, fast=False)
            entries = sorted(os.listdir(tree))[:_ENTRIES_KEPT]
            merging = True
            merge_into(tree, target)
    except OSError as exc:
        if space_problem(exc):
            raise no_space(exc, origin.display, target, label=label, merging=merging) from exc
        raise DataError(
            f"staging {origin.display} into {target} failed: {exc}", hint=os_hint(exc)
        ) from exc
    seconds = time.monotonic() - started
    marker.mark_done(
        key,
        files=stats.files,
        bytes=stats.bytes,
        entries=entries,
        source=origin.display,
        seconds=round(seconds, 3),
        staged_at=time.time(),
    )
    log.debug("staged %d files (%d bytes) in %.1f s", stats.files, stats.bytes, seconds)
    return StageResult(origin.display, target, False, stats.files, stats.bytes, seconds)


def use_in_place(
    source: str | os.PathLike[str], *, sha256: str | None = None, label: str = "data[]"
) -> StageResult:
    """Check that ``source`` is a folder the training can read where it is (``data[].copy``
    false, or a folder among Kaggle's inputs): nothing is copied, and nothing is written,
    neither there (it may be read-only) nor anywhere else, so no marker either."""
    started = time.monotonic()
    path = os.path.abspath(os.path.expanduser(os.fspath(source)))
    if sha256 is not None:
        raise DataError(
            f"{label}.sha256 is given, but {label} reads the folder {path} where it is",
            hint=f"sha256 checks an archive or a download; remove {label}.sha256",
        )
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise missing_source(path) from None
    except OSError as exc:
        raise DataError(f"cannot read data source {path}: {exc}", hint=os_hint(exc)) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise DataError(
            f"{label}.copy is false, which reads a folder where it is, but {path} is a file",
            hint=f"remove {label}.copy (or set it to true) to extract or copy it into {label}.to",
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(
            f"data source {path} is a folder this user cannot read",
            hint="check its permissions, or point data[].source at a readable folder",
        )
    log.debug("%s is used in place", path)
    return StageResult(path, Path(path), True, 0, 0, time.monotonic() - started)


def _expected_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return sha256_digest(value)
    except ValueError as exc:
        raise DataError(
            f"sha256: {exc}", hint="copy it from `sha256sum FILE`, or remove data[].sha256"
        ) from None


def _still_there(dest: Path, entries: list[str]) -> bool:
    return dest.is_dir() and all(os.path.lexists(dest / name) for name in entries)


def _materialise(
    origin: Origin,
    tree: Path,
    work: Path,
    expected: str | None,
    progress: ProgressFactory,
    *,
    fast: bool,
) -> ExtractStats:
    if origin.kind == "dir":
        return _copy_folder(origin, tree, progress)
    if origin.kind == "file" and not expected:
        with open(origin.location, "rb") as handle:
            head = handle.read(HEAD_SIZE)
        if kind_of_head(head) == "zip":  # random access: read in place, nothing to stream
            _kind(origin, head)  # for its warning when the name says otherwise
            return _extract_zip(origin, Path(origin.location), tree, progress)
    bar = progress(f"reading {origin.name}", total=origin.size, unit="B")
    try:
        with open_source(origin) as (raw, total):
            if total is not None:
                bar.set_total(total)
            reader = SourceReader(raw, bar, hashlib.sha256() if expected else None)
            kind = _kind(origin, reader.peek(HEAD_SIZE))
            if kind == "tar" and total:
                # A plain tar holds its files' bytes plus 512-byte headers and padding, so
                # the files need at least about half its size (more for many small files):
                # less free space than that cannot work.
                check_room(tree, holds=total, least=total // 2)
            tools = tools_for(kind) if fast and kind != "zip" else None
            if tools is not None:
                stats = extract_tar_gnu(reader, kind, tree, name=origin.display, tools=tools)
                reader.drain()
            elif kind != "zip":
                stats = extract_tar(reader, kind, tree, name=origin.display)
                reader.drain()  # the bytes after the tar's end block count for the sha256
            elif origin.kind == "file":
                reader.drain()  # only to check the sha256 before extracting
                zip_path = Path(origin.location)
            else:
                zip_path = work / "download.zip"
                with open(zip_path, "wb") as out:
                    shutil.copyfileobj(reader, out, BUFSIZE)
            if origin.kind == "url" and total is not None and reader.count != total:
                raise DataError(
                    f"download of {origin.display} stopped early: {reader.count} of {total} bytes",
                    hint="run again; check the network connection",
                )
            reader.verify(expected, origin.display)
    finally:
        bar.close()
    return stats if kind != "zip" else _extract_zip(origin, zip_path, tree, progress)


def _extract_zip(origin: Origin, path: Path, tree: Path, progress: ProgressFactory) -> ExtractStats:
    bar = progress(f"extracting {origin.name}", total=path.stat().st_size, unit="B")
    try:
        return extract_zip(path, tree, name=origin.display, advance=bar.advance)
    finally:
        bar.close()


def _kind(origin: Origin, head: bytes) -> str:
    kind = kind_of_head(head)
    named = extension_kind(origin.name)
    if kind is None:
        like = f" (its name says {named})" if named else ""
        raise DataError(
            f"data source {origin.display} is not a supported archive{like}: {describe_head(head)}",
            hint=f"use {SUPPORTED}",
        )
    if named and named != kind:
        log.warning(
            "%s is named like a %s but holds a %s; extracting it as %s",
            origin.display,
            named,
            kind,
            kind,
        )
    return kind


class _DiskFull(Exception):
    """Carries a full-disk OSError out of copytree, which would collect it and go on."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _copy_folder(origin: Origin, tree: Path, progress: ProgressFactory) -> ExtractStats:
    stats = ExtractStats()
    bar = progress(f"copying {origin.name}", total=origin.size, unit="B")

    def copy(src: str, dst: str) -> None:
        try:
            shutil.copy2(src, dst)
        except OSError as exc:
            if space_problem(exc):  # stop now: copytree would go on failing file by file
                raise _DiskFull(exc) from exc
            raise
        size = os.path.getsize(dst)
        stats.files += 1
        stats.bytes += size
        bar.advance(size)

    try:
        shutil.copytree(
            origin.location, tree, symlinks=True, copy_function=copy, dirs_exist_ok=True
        )
    except _DiskFull as exc:
        raise exc.error from None
    except shutil.Error as exc:
        for _, _, why in exc.args[0]:  # copytree keeps only the text of what went wrong
            number = re.match(r"\[Errno (\d+)\]", str(why))
            error = OSError(int(number.group(1)), str(why)) if number else None
            if error is not None and space_problem(error):
                raise error from exc
        failures = "; ".join(f"{src}: {why}" for src, _, why in exc.args[0][:3])
        raise DataError(
            f"copying the folder {origin.display} failed: {failures}",
            hint="check that the files are readable",
        ) from exc
    finally:
        bar.close()
    return stats
