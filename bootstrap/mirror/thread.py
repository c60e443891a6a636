"""Mirror checkpoints from scratch to persist in a background thread while the training runs.

The training writes checkpoints to fast scratch; persist (Google Drive on Colab) is slow and
fails for minutes at a time (EIO, ENOTCONN). A background thread scans every ``interval``
seconds, copies what is new (see ``bootstrap.mirror.sync`` for when a file is ready, and how
the lag stays bounded however often it is rewritten), verifies each copy before it replaces
anything, and retries with backoff while persist fails. The training is never blocked and never
sees an error from here; a hard kill at any instant leaves persist with whole files only.

This module runs the passes in a thread; one pass is ``sync``, restoring and the manifest are
``restore``, the checkpoint files themselves ``files``, folder checkpoints ``folders``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bootstrap.mirror.files import FaultHook, Match
from bootstrap.mirror.selection import FolderRule
from bootstrap.mirror.sync import MirrorSync, SyncReport
from bootstrap.progress import ProgressFactory

log = logging.getLogger(__name__)


class CheckpointMirror(MirrorSync):
    """Keeps ``dst`` (persist) a complete copy of the files in ``src`` (scratch), and each of
    ``also`` (more folders, e.g. ``run.keep``) likewise, from one thread.

    ``fault_hook(op, path)`` is called before each persist operation ("stat", "open", "write"
    for each chunk, "replace", "remove", "manifest") and may raise OSError: tests use it to
    play a failing Drive. ``on_event(text)`` receives one sentence per copy, removal, failure
    and recovery, for a user interface.
    """

    def __init__(
        self,
        src: Path,
        dst: Path,
        match: Match = ("**/*",),
        *,
        exclude: Sequence[str] = (),
        folders: Sequence[FolderRule] = (),
        also: Sequence[MirrorSync] = (),
        interval: float = 0.5,
        stable_for: float = 0.5,
        max_wait: float = 5.0,
        retry_backoff: tuple[float, float] = (1.0, 60.0),
        clock: Callable[[], float] = time.monotonic,
        fault_hook: FaultHook | None = None,
        on_event: Callable[[str], None] | None = None,
    ):
        super().__init__(
            src,
            dst,
            match,
            exclude=exclude,
            folders=folders,
            stable_for=stable_for,
            max_wait=max_wait,
            retry_backoff=retry_backoff,
            clock=clock,
            fault_hook=fault_hook,
            on_event=on_event,
        )
        self.also = tuple(also)
        self.interval = interval
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Scan every ``interval`` seconds in a daemon thread until ``stop``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._give_up(None)
        self._thread = threading.Thread(target=self._loop, name="checkpoint-mirror", daemon=True)
        self._thread.start()

    def stop(
        self,
        final: bool = True,
        timeout: float | None = None,
        progress: ProgressFactory | None = None,
    ) -> SyncReport | None:
        """Stop the thread and, with ``final``, mirror what is complete now, within ``timeout``
        seconds, showing ``progress`` while it copies. Safe to call more than once and when
        never started."""
        started = time.monotonic()
        self._give_up(None if timeout is None else started + timeout)
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._left(started, timeout))
        if not final:
            if thread is None or not thread.is_alive():
                self._close()
            return None
        result: list[SyncReport] = []
        worker = threading.Thread(
            target=lambda: result.append(self._pass(final=True, progress=progress)),
            name="checkpoint-mirror-final",
            daemon=True,  # a hung Drive must not keep the process alive
        )
        worker.start()
        worker.join(self._left(started, timeout))
        if not result:
            log.warning(
                "the last checkpoint mirror did not finish within %.0f s; the newest "
                "checkpoints are still on scratch in %s",
                timeout or 0,
                self.src,
            )
            return None
        self._close()
        report = result[0]
        waiting = report.pending + report.failed
        if waiting:
            why = report.error or (
                "they look incomplete" if report.incomplete else "they were still being written"
            )
            log.warning(
                "%d file(s) were not mirrored to %s (%s); they are still on scratch in %s",
                len(waiting),
                self.dst,
                why,
                self.src,
            )
        return report

    def _close(self) -> None:
        """After the last pass: remove the snapshots made on scratch."""
        for sync in (self, *self.also):
            sync.close()

    def _give_up(self, deadline: float | None) -> None:
        for sync in (self, *self.also):
            sync.give_up_at(deadline)

    def _pass(self, final: bool = False, progress: ProgressFactory | None = None) -> SyncReport:
        """One pass over every folder; the report is this folder's, with the others' problems
        added (their paths as they are under their own folders)."""
        report = self.sync_once(final=final, progress=progress)
        for sync in self.also:
            other = sync.sync_once(final=final, progress=progress)
            report.copied += other.copied
            report.pending += other.pending
            report.failed += other.failed
            report.incomplete += other.incomplete
            report.deleted += other.deleted
            report.error = report.error or other.error
        return report

    @staticmethod
    def _left(started: float, timeout: float | None) -> float | None:
        return None if timeout is None else max(0.0, started + timeout - time.monotonic())

    def _loop(self) -> None:
        while True:
            report = self._pass()
            # After a pass that copied, what changed meanwhile is looked at at once: a file
            # rewritten during a long copy then waits one copy, not one copy and an interval
            # (the pass's own pending list is older than its copies, so it cannot tell).
            # Scanning a big tree (say, thousands of samples in a kept folder) every half
            # second would take a CPU from the training: keep scans under 5% of the time.
            scanning = sum(sync.scan_seconds for sync in (self, *self.also))
            wait = 0.0 if report.copied else self.interval
            if self._stopping.wait(max(wait, 20 * scanning)):
                return
