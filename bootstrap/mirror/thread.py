"""Mirror checkpoints from scratch to persist in a background thread while the training runs.

The training writes checkpoints to fast scratch; persist (Google Drive on Colab) is slow and
fails for minutes at a time (EIO, ENOTCONN). A background thread copies each checkpoint once it
has stopped changing and looks complete, verifies the copy before it replaces anything, and
retries with backoff while persist fails. The training is never blocked and never sees an error
from here; a hard kill at any instant leaves persist with whole files only.

This module runs the passes in a thread; one pass is ``sync``, restoring and the manifest are
``restore``, the checkpoint files themselves ``files``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bootstrap.mirror.files import FaultHook, Match
from bootstrap.mirror.sync import MirrorSync, SyncReport

log = logging.getLogger(__name__)


class CheckpointMirror(MirrorSync):
    """Keeps ``dst`` (persist) a complete copy of the checkpoints in ``src`` (scratch).

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
        interval: float = 5.0,
        stable_for: float = 1.0,
        retry_backoff: tuple[float, float] = (1.0, 60.0),
        clock: Callable[[], float] = time.monotonic,
        fault_hook: FaultHook | None = None,
        on_event: Callable[[str], None] | None = None,
    ):
        super().__init__(
            src,
            dst,
            match,
            stable_for=stable_for,
            retry_backoff=retry_backoff,
            clock=clock,
            fault_hook=fault_hook,
            on_event=on_event,
        )
        self.interval = interval
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Scan every ``interval`` seconds in a daemon thread until ``stop``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self.give_up_at(None)
        self._thread = threading.Thread(target=self._loop, name="checkpoint-mirror", daemon=True)
        self._thread.start()

    def stop(self, final: bool = True, timeout: float | None = None) -> SyncReport | None:
        """Stop the thread and, with ``final``, mirror what is complete now, within ``timeout``
        seconds. Safe to call more than once and when never started."""
        started = time.monotonic()
        self.give_up_at(None if timeout is None else started + timeout)
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._left(started, timeout))
        if not final:
            return None
        result: list[SyncReport] = []
        worker = threading.Thread(
            target=lambda: result.append(self.sync_once(final=True)),
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
        report = result[0]
        waiting = report.pending + report.failed
        if waiting:
            why = report.error or (
                "they look incomplete" if report.incomplete else "they were still being written"
            )
            log.warning(
                "%d checkpoint file(s) were not mirrored to %s (%s); they are still on "
                "scratch in %s",
                len(waiting),
                self.dst,
                why,
                self.src,
            )
        return report

    @staticmethod
    def _left(started: float, timeout: float | None) -> float | None:
        return None if timeout is None else max(0.0, started + timeout - time.monotonic())

    def _loop(self) -> None:
        while True:
            self.sync_once()
            if self._stopping.wait(self.interval):
                return
