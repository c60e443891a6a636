"""What a data source is and how its bytes are read.

``inspect_source`` tells a download, a local file and a folder apart and keys each for the skip
marker (the URL's sha256, since it may carry a token; path, size and mtime_ns for a file; file
count, bytes and newest mtime for a folder). ``open_source`` opens a file or a download as a byte
stream, and ``SourceReader`` reads that stream in 1 MiB chunks, hashing and reporting the bytes
as they pass. (Inflating a gzip stream in a thread of its own is the GNU tar path's job:
``gnutar.inflate``.)
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import stat
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bootstrap.data.extract import BUFSIZE
from bootstrap.data.landing import os_hint
from bootstrap.errors import DataError
from bootstrap.progress import ProgressBar
from bootstrap.values import is_http_url, is_url

SUPPORTED = "a .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz or .zip archive, a folder, or an http(s) URL"
_URL_TIMEOUT = 60.0  # seconds per socket operation, not for the whole download


@dataclass(frozen=True)
class Origin:
    kind: str  # "url" | "file" | "dir"
    location: str  # the URL or the absolute path
    display: str  # safe to show and log
    size: int | None  # bytes, for progress
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        path = urllib.parse.urlsplit(self.location).path if self.kind == "url" else self.location
        return os.path.basename(path.rstrip("/")) or self.display


def inspect_source(source: str, expected: str | None, dest: Path) -> Origin:
    if is_http_url(source):
        parts = urllib.parse.urlsplit(source)
        host = parts.hostname or ""
        shown = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        display = shown + ("?..." if parts.query else "")
        url_key = hashlib.sha256(source.encode()).hexdigest()  # the URL may carry a token
        return Origin("url", source, display, None, {"url_sha256": url_key})
    if is_url(source):
        raise DataError(
            f"data source {source.split('?')[0]} uses an unsupported scheme",
            hint=f"use {SUPPORTED}",
        )
    path = os.path.abspath(os.path.expanduser(source))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise missing_source(path) from None
    except OSError as exc:
        raise DataError(f"cannot read data source {path}: {exc}", hint=os_hint(exc)) from exc
    if not stat.S_ISDIR(info.st_mode):
        key = {"file": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
        return Origin("file", path, path, info.st_size, key)
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
    return Origin("dir", path, path, fingerprint["bytes"], {"folder": path, **fingerprint})


def missing_source(path: str) -> DataError:
    """The error for a local source that is not there, with the likely fix."""
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
    elif "/kaggle/input/" in path:
        hint = "is the data set attached to the notebook (Add Input, in the side panel)? " + hint
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


class SourceReader:
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


@contextlib.contextmanager
def open_source(origin: Origin) -> Iterator[tuple[BinaryIO, int | None]]:
    """The source as a byte stream, and its length when known."""
    if origin.kind == "file":
        with open(origin.location, "rb", buffering=0) as handle:
            yield handle, origin.size
        return
    # Here, not at the top: urllib.request pulls in http, ssl and email (~25 ms of start-up)
    # that a recipe with only local sources never needs.
    import urllib.error
    import urllib.request

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
