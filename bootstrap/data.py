"""Stage a data item into scratch: copy a folder, or extract a local or downloaded archive.

Crash safety. A stage first clears its marker, builds everything in a private work folder beside
``dest`` (same filesystem; inside ``dest`` when that is a mount point), moves the entries into
``dest`` by rename, merging with what is there, and writes the marker last. So a half-written file
never shows under its final name; a rejected or corrupt archive or a sha256 mismatch leaves
``dest`` untouched; and an interrupted stage leaves no marker, so the next run stages again. A
hard kill can leave the work folder behind (a dot-folder); the next stage removes it. Extracted
files are not fsynced: they live on scratch, which dies with the VM anyway.

Skipping. The marker in ``state_dir`` is keyed by the source (path, size and mtime_ns for a file;
file count, bytes and newest mtime for a folder; the URL itself for a download), the expected
sha256 and ``dest``, and checks that what was staged is still at the top of ``dest``. A skip costs
a stat and a JSON read, never a hash: the sha256 is checked while staging, on the bytes as they
stream past (a local zip, which needs random access, is hashed in a pass before extraction).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bootstrap.errors import DataError
from bootstrap.extract import (
    BUFSIZE,
    HEAD_SIZE,
    ExtractStats,
    archive_kind,
    describe_head,
    extension_kind,
    extract_tar,
    extract_zip,
    is_archive,
    kind_of_head,
)
from bootstrap.fsutil import Marker, read_json
from bootstrap.progress import ProgressBar, ProgressFactory, no_progress

__all__ = ["StageResult", "archive_kind", "is_archive", "stage_data"]

log = logging.getLogger(__name__)

_MARKER_VERSION = 1  # bump when staging changes what ends up in dest
_URL_TIMEOUT = 60.0  # seconds per socket operation, not for the whole download
_ENTRIES_KEPT = 100  # top-level names re-checked on the skip path
_ANY_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SUPPORTED = "a .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz or .zip archive, a folder, or an http(s) URL"


@dataclass(frozen=True)
class StageResult:
    source: str  # as shown to the user (a URL without its query or credentials)
    dest: Path
    skipped: bool
    files: int  # regular files written (for a skip: when it was staged)
    bytes: int  # their total size
    seconds: float


@dataclass(frozen=True)
class _Origin:
    kind: str  # "url" | "file" | "dir"
    location: str  # the URL or the absolute path
    display: str  # safe to show and log
    size: int | None  # bytes, for progress
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        path = urllib.parse.urlsplit(self.location).path if self.kind == "url" else self.location
        return os.path.basename(path.rstrip("/")) or self.display


def stage_data(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    state_dir: str | os.PathLike[str],
    progress: ProgressFactory = no_progress,
) -> StageResult:
    """Copy or extract ``source`` into ``dest``, merging; skip when already staged from it."""
    started = time.monotonic()
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(dest))))
    expected = _expected_sha256(sha256)
    origin = _inspect(os.fspath(source), expected, target)
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
    try:
        with _work_folder(target) as work:
            tree = work / "tree"
            tree.mkdir()
            stats = _materialise(origin, tree, work, expected, progress)
            entries = sorted(os.listdir(tree))[:_ENTRIES_KEPT]
            _merge(tree, target)
    except OSError as exc:
        raise DataError(
            f"staging {origin.display} into {target} failed: {exc}", hint=_os_hint(exc)
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


def _expected_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise DataError(
            f"sha256 {value!r} is not 64 hexadecimal digits",
            hint="copy it from `sha256sum FILE`, or remove data[].sha256",
        )
    return text


def _inspect(source: str, expected: str | None, dest: Path) -> _Origin:
    if source.lower().startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(source)
        host = parts.hostname or ""
        shown = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        display = shown + ("?..." if parts.query else "")
        url_key = hashlib.sha256(source.encode()).hexdigest()  # the URL may carry a token
        return _Origin("url", source, display, None, {"url_sha256": url_key})
    if _ANY_URL.match(source):
        raise DataError(
            f"data source {source.split('?')[0]} uses an unsupported scheme",
            hint=f"use {_SUPPORTED}",
        )
    path = os.path.abspath(os.path.expanduser(source))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _missing(path) from None
    except OSError as exc:
        raise DataError(f"cannot read data source {path}: {exc}", hint=_os_hint(exc)) from exc
    if not stat.S_ISDIR(info.st_mode):
        key = {"file": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
        return _Origin("file", path, path, info.st_size, key)
    if expected:
        raise DataError(
            f"data[].sha256 is given but the source {path} is a folder",
            hint="sha256 checks an archive or a download; remove it for a folder",
        )
    real, real_dest = os.path.realpath(path), os.path.realpath(dest)
    if real_dest == real or real_dest.startswith(real.rstrip(os.sep) + os.sep):
        raise DataError(
            f"cannot copy the folder {path} into {dest}, which is inside it",
            hint="point data[].to somewhere outside the source folder",
        )
    fingerprint = _fingerprint(path)
    return _Origin("dir", path, path, fingerprint["bytes"], {"folder": path, **fingerprint})


def _missing(path: str) -> DataError:
    parent, name = os.path.split(path)
    hint = "check data[].source in the recipe"
    if os.path.isdir(parent):
        close = difflib.get_close_matches(name, os.listdir(parent), n=3)
        if close:
            hint = f"did you mean {' or '.join(close)}? {hint}"
    else:
        hint += f"; the folder {parent} does not exist either"
    if "/drive/" in path.lower() or "mydrive" in path.lower():
        hint = "is Google Drive mounted (drive.mount('/content/drive') in a cell)? " + hint
    return DataError(f"data source {path} does not exist", hint=hint)


def _fingerprint(root: str) -> dict[str, int]:
    """What changes when a file in the folder is added, removed, resized, renamed or rewritten."""
    files = size = 0
    newest = os.stat(root).st_mtime_ns
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                newest = max(newest, info.st_mtime_ns)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    files += 1
                    size += info.st_size
    return {"files": files, "bytes": size, "newest_mtime_ns": newest}


def _still_there(dest: Path, entries: list[str]) -> bool:
    return dest.is_dir() and all(os.path.lexists(dest / name) for name in entries)


class _Reader:
    """A read-only stream over ``raw`` that hashes and reports the bytes it passes on.

    It reads ``raw`` in 1 MiB chunks (few calls into a slow FUSE mount, few progress updates)
    and serves tarfile's small reads from that chunk. ``peek`` looks at the start without
    consuming it, so a download can be sniffed and then streamed.
    """

    def __init__(self, raw: BinaryIO, bar: ProgressBar, hasher: Any | None):
        self._raw, self._bar, self._hasher = raw, bar, hasher
        self._buffer = b""
        self._pos = 0
        self.count = 0

    def _pull(self, size: int) -> bytes:
        data = self._raw.read(size)
        if data:
            self.count += len(data)
            if self._hasher is not None:
                self._hasher.update(data)
            self._bar.advance(len(data))
        return data

    def peek(self, size: int) -> bytes:
        while len(self._buffer) - self._pos < size:
            more = self._pull(BUFSIZE)
            if not more:
                break
            self._buffer, self._pos = self._buffer[self._pos :] + more, 0
        return self._buffer[self._pos : self._pos + size]

    def read(self, size: int = -1) -> bytes:
        available = len(self._buffer) - self._pos
        if not available:
            if size < 0 or size >= BUFSIZE:
                return self._pull(size)
            self._buffer, self._pos = self._pull(BUFSIZE), 0
            available = len(self._buffer)
        count = available if size < 0 else min(size, available)
        self._pos += count
        return self._buffer[self._pos - count : self._pos]  # may be short; callers ask again

    def drain(self) -> None:
        self._buffer, self._pos = b"", 0
        while self._pull(BUFSIZE):
            pass

    def verify(self, expected: str | None, display: str) -> None:
        if expected is None or self._hasher is None:
            return
        actual = self._hasher.hexdigest()
        if actual != expected:
            raise DataError(
                f"sha256 of {display} does not match: expected {expected}, got {actual}",
                hint="the file is damaged or was replaced; fetch it again, or if the new file "
                "is right, put its sha256 in data[].sha256",
            )


def _materialise(
    origin: _Origin, tree: Path, work: Path, expected: str | None, progress: ProgressFactory
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
        with _open(origin) as (raw, total):
            if total is not None:
                bar.set_total(total)
            reader = _Reader(raw, bar, hashlib.sha256() if expected else None)
            kind = _kind(origin, reader.peek(HEAD_SIZE))
            if kind != "zip":
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


def _extract_zip(
    origin: _Origin, path: Path, tree: Path, progress: ProgressFactory
) -> ExtractStats:
    bar = progress(f"extracting {origin.name}", total=path.stat().st_size, unit="B")
    try:
        return extract_zip(path, tree, name=origin.display, advance=bar.advance)
    finally:
        bar.close()


@contextlib.contextmanager
def _open(origin: _Origin) -> Iterator[tuple[BinaryIO, int | None]]:
    """The source as a byte stream, and its length when known."""
    if origin.kind == "file":
        with open(origin.location, "rb", buffering=0) as handle:
            yield handle, origin.size
        return
    request = urllib.request.Request(origin.location, headers={"User-Agent": "colab-bootstrap"})
    try:
        response = urllib.request.urlopen(request, timeout=_URL_TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise DataError(
            f"downloading {origin.display} failed: HTTP {exc.code} {exc.reason}",
            hint="check the URL in data[].source; it must be a direct download link that "
            "needs no login",
        ) from None
    except OSError as exc:  # URLError, timeouts; "from None" keeps a token out of tracebacks
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"cannot download {origin.display}: {reason}",
            hint="check the URL and the network connection",
        ) from None
    with response:
        length = response.headers.get("Content-Length", "")
        yield response, int(length) if length.isdigit() else None


def _kind(origin: _Origin, head: bytes) -> str:
    kind = kind_of_head(head)
    named = extension_kind(origin.name)
    if kind is None:
        like = f" (its name says {named})" if named else ""
        raise DataError(
            f"data source {origin.display} is not a supported archive{like}: {describe_head(head)}",
            hint=f"use {_SUPPORTED}",
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


def _copy_folder(origin: _Origin, tree: Path, progress: ProgressFactory) -> ExtractStats:
    stats = ExtractStats()
    bar = progress(f"copying {origin.name}", total=origin.size, unit="B")

    def copy(src: str, dst: str) -> None:
        shutil.copy2(src, dst)
        size = os.path.getsize(dst)
        stats.files += 1
        stats.bytes += size
        bar.advance(size)

    try:
        shutil.copytree(
            origin.location, tree, symlinks=True, copy_function=copy, dirs_exist_ok=True
        )
    except shutil.Error as exc:
        failures = "; ".join(f"{src}: {why}" for src, _, why in exc.args[0][:3])
        raise DataError(
            f"copying the folder {origin.display} failed: {failures}",
            hint="check that the files are readable",
        ) from exc
    finally:
        bar.close()
    return stats


@contextlib.contextmanager
def _work_folder(dest: Path) -> Iterator[Path]:
    prefix = f".{dest.name or 'data'}.staging-"
    _remove_stale(dest, prefix)
    base = dest.parent
    if dest.is_dir() and os.stat(dest).st_dev != os.stat(base).st_dev:
        base = dest  # dest is a mount point: renames only work within its filesystem
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remove_stale(dest: Path, prefix: str) -> None:
    """Remove work folders left by a stage whose process is gone (a hard kill)."""
    for base in (dest.parent, dest):
        with contextlib.suppress(OSError):
            for entry in os.scandir(base):
                pid = entry.name[len(prefix) :].split("-", 1)[0]
                if entry.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
                    log.info("removing %s, left by an interrupted stage", entry.path)
                    shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but is not ours
    return True


def _merge(tree: Path, dest: Path) -> None:
    """Move everything in ``tree`` into ``dest`` by rename; the source wins for files."""
    if not os.path.lexists(dest):
        os.replace(tree, dest)
        return
    stack = [(str(tree), str(dest))]
    while stack:
        src, dst = stack.pop()
        with os.scandir(src) as scan:
            entries = list(scan)
        for entry in entries:
            target = os.path.join(dst, entry.name)
            try:
                existing = os.lstat(target).st_mode
            except FileNotFoundError:
                os.replace(entry.path, target)
                continue
            incoming_dir = entry.is_dir(follow_symlinks=False)
            if incoming_dir and stat.S_ISDIR(existing):
                stack.append((entry.path, target))
            elif incoming_dir or stat.S_ISDIR(existing):
                here = "a folder" if stat.S_ISDIR(existing) else "a file or link"
                there = "a folder" if incoming_dir else "a file"
                raise DataError(
                    f"cannot merge into {dest}: {target} is {here} there but "
                    f"{there} in the data source",
                    hint=f"move or delete {target}, then run again",
                )
            else:
                os.replace(entry.path, target)


def _os_hint(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full: free space on scratch, or stage less data"
    if exc.errno == errno.ENOTCONN:
        return (
            "Google Drive disconnected: run drive.mount('/content/drive', "
            "force_remount=True) in a cell, then run again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the permissions of the source and the destination"
    return "check the data source and destination, then run again"
