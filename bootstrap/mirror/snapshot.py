"""Upload a file that the training rewrites in place faster than persist can take a copy.

A direct copy to persist reads the source for as long as persist takes to write it (2 s for
200 MB on Drive): a checkpoint rewritten every second is never read whole. Here a thread
copies the source to a snapshot on scratch at local-disk speed (a tenth of that) while the
upload follows the snapshot chunk by chunk. The source has to hold still only for the
snapshot's time, and the upload does not wait for the snapshot to finish: one version reaches
persist in about one upload's time, not a snapshot's and an upload's.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from bootstrap.mirror.files import (
    CHUNK_SIZE,
    FaultHook,
    SourceChanged,
    SourceError,
    check_complete,
    commit_copy,
    open_source,
    read_unchanged,
    same_version,
    stamp,
)

_KERNEL_CHUNK = 16 << 20


class SnapshotUnavailable(Exception):
    """The snapshot could not be written (scratch full, say): copy the file directly."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


class _Snapshot:
    """The copy of one version of ``source`` to ``path``, written by a thread and read,
    as it grows, by ``chunks``."""

    def __init__(self, source: Path, path: Path, reader: BinaryIO, before: os.stat_result):
        self.source = source
        self.path = path
        self.before = before
        self._reader = reader
        self._written = 0
        self._done = False
        self._error: BaseException | None = None
        self._cancelled = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._take, name="mirror-snapshot", daemon=True)

    def start(self) -> None:
        self._out = open(self.path, "wb")  # noqa: SIM115 (closed by the thread)
        self._thread.start()

    def _take(self) -> None:
        try:
            with self._out:
                copy = self._copy_in_kernel if sys.platform == "linux" else self._copy_by_reading
                for size in copy():
                    if self._cancelled:
                        return
                    with self._changed:
                        self._written += size
                        self._changed.notify_all()
            # Read whole, unchanged by its stat, yet torn (a filesystem with coarse
            # timestamps, or a writer that was mid-save when it was opened): not a version.
            if not check_complete(self.path, self.source.name):
                raise SourceChanged(f"{self.source} was read torn")
        except (SourceChanged, SourceError) as error:
            self._error = error
        except OSError as error:  # scratch full, say: not persist's failure
            self._error = SnapshotUnavailable(error)
        except BaseException as error:  # handed to the follower, which raises it
            self._error = error
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _copy_in_kernel(self) -> Iterator[int]:
        """Copy with sendfile: the bytes never enter Python, so the snapshot keeps its pace
        while the training and the upload share the CPUs. In the lag benchmark's 200 MB file
        saved every 0.3 s, snapshots by reads and writes were overtaken by the next save three
        times in a row; by sendfile the first try got through."""
        source, out = self._reader.fileno(), self._out.fileno()
        offset = 0
        while sent := os.sendfile(out, source, offset, _KERNEL_CHUNK):
            offset += sent
            self._check_unchanged()
            yield sent
        self._check_unchanged()

    def _copy_by_reading(self) -> Iterator[int]:
        for chunk in read_unchanged(self.source, self._reader, self.before):
            self._out.write(chunk)
            self._out.flush()  # the follower reads the file, not this buffer
            yield len(chunk)

    def _check_unchanged(self) -> None:
        if not same_version(os.fstat(self._reader.fileno()), self.before):
            raise SourceChanged(f"{self.source} changed while it was copied")

    def chunks(self) -> Iterator[bytes]:
        """The snapshot's bytes as the thread writes them; raises what the thread met
        (SourceChanged: the source was rewritten before the snapshot was whole)."""
        with open(self.path, "rb") as reader:
            read = 0
            while True:
                with self._changed:
                    while self._written == read and not self._done:
                        self._changed.wait()
                    available, done, error = self._written, self._done, self._error
                if error is not None:
                    raise error
                if available == read and done:
                    return
                chunk = reader.read(min(CHUNK_SIZE, available - read))
                read += len(chunk)
                yield chunk

    def close(self) -> None:
        self._cancelled = True
        self._thread.join()
        with contextlib.suppress(OSError):
            self.path.unlink()


def upload_via_snapshot(
    source: Path,
    snapshot: Path,
    target: Path,
    *,
    skip: Callable[[tuple[int, int]], bool] = lambda key: False,
    hook: FaultHook | None = None,
    should_abort: Callable[[], bool] | None = None,
    copied: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Copy the version of ``source`` open now to ``target`` through ``snapshot`` (a path on
    scratch, removed afterwards), verified as ``copy_verified`` does, unless ``skip(stamp)``
    says persist holds that version already. Returns the version's stamp. Raises SourceChanged
    when the source was rewritten (or read torn) before the snapshot was whole,
    SnapshotUnavailable when the snapshot could not be written, and what ``commit_copy``
    raises."""
    with open_source(source) as (reader, before):
        key = stamp(before)
        if skip(key):
            return key
        taking = _Snapshot(source, snapshot, reader, before)
        try:
            taking.start()
        except OSError as error:
            raise SnapshotUnavailable(error) from error
        try:
            commit_copy(
                taking.chunks(),
                target,
                before,
                label=str(source),
                hook=hook,
                should_abort=should_abort,
                copied=copied,
            )
        finally:
            taking.close()
    return key
