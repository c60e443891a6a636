"""One pass of the checkpoint mirror (``MirrorSync.sync_once``): copy what is new, stable and
complete from scratch to persist, verified before it replaces anything; remove from persist what
the training deleted; ride out a failing persist with backoff, one warning and a recovery note.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.mirror.files import (
    MANIFEST_NAME,
    CopyAborted,
    FaultHook,
    Match,
    SourceChanged,
    SourceError,
    copy_verified,
    find_checkpoints,
    is_complete,
    patterns,
    remove_stale_temps,
    stamp,
)
from bootstrap.mirror.restore import holds_version, load_manifest, write_manifest

log = logging.getLogger(__name__)

_Stamp = tuple[int, int]


@dataclass
class SyncReport:
    """What one scan did. Paths are relative to the mirrored folders."""

    copied: list[Path] = field(default_factory=list)
    pending: list[Path] = field(default_factory=list)  # new or changed, not copied yet
    failed: list[Path] = field(default_factory=list)  # a copy was tried and failed
    error: str | None = None  # why persist (or scratch) could not be used, if it could not
    deleted: list[Path] = field(default_factory=list)  # removed from persist, gone from scratch
    incomplete: list[Path] = field(default_factory=list)  # pending: stable but look torn


class MirrorSync:
    """Scans ``src`` (scratch) and keeps ``dst`` (persist) a complete copy of its checkpoints,
    one pass per ``sync_once``; see ``CheckpointMirror`` for ``fault_hook`` and ``on_event``.
    """

    def __init__(
        self,
        src: Path,
        dst: Path,
        match: Match = ("**/*",),
        *,
        stable_for: float = 1.0,
        retry_backoff: tuple[float, float] = (1.0, 60.0),
        clock: Callable[[], float] = time.monotonic,
        fault_hook: FaultHook | None = None,
        on_event: Callable[[str], None] | None = None,
    ):
        self.src = Path(src)
        self.dst = Path(dst)
        self.match = patterns(match)
        self.stable_for = stable_for
        self.retry_backoff = retry_backoff
        self._clock = clock
        self._hook = fault_hook
        self._on_event = on_event
        self._lock = threading.Lock()
        self._seen: dict[Path, tuple[_Stamp, float]] = {}  # stamp, and since when it holds
        self._mirrored: dict[Path, _Stamp] = {}  # source stamps known to be on persist
        self._known: set[Path] = set()  # every file seen in src during this session
        self._manifest: dict[str, dict[str, int]] = {}  # relative posix path -> {size, mtime_ns}
        self._manifest_loaded = False
        self._manifest_dirty = False
        self._cleaned = False
        self._failing: str | None = None
        self._backoff = retry_backoff[0]
        self._retry_at = 0.0
        self._touched = False
        self._give_up_at: float | None = None  # time.monotonic() past which copies give up
        self._unexpected_logged = False

    def sync_once(self, *, final: bool = False) -> SyncReport:
        """Scan ``src`` once and copy what is new, stable and complete. Never raises.

        ``final``: the training has exited, so a file need not have stopped changing for
        ``stable_for``; looking complete is enough.
        """
        try:
            return self._sync(final)
        except Exception as error:  # a bug here must never reach the training
            level = logging.DEBUG if self._unexpected_logged else logging.WARNING
            log.log(level, "checkpoint mirror scan failed: %s", error, exc_info=True)
            self._unexpected_logged = True
            return SyncReport(error=f"{type(error).__name__}: {error}")

    # -- one scan --------------------------------------------------------------------------

    def _sync(self, final: bool) -> SyncReport:
        with self._lock:
            report = SyncReport()
            now = self._clock()
            try:
                current = self._scan_src()
            except OSError as error:
                report.error = f"cannot read {self.src}: {error}"
                return report
            self._known.update(current)
            self._seen = {rel: seen for rel, seen in self._seen.items() if rel in current}
            todo = self._ready(current, now, final, report)
            if not final and self._failing is not None and now < self._retry_at:
                report.pending += [rel for rel, _ in todo]
                report.error = self._failing
                return report
            self._touched = False
            try:
                self._copy_all(todo, report)
                if not report.failed and not set(report.pending) - set(report.incomplete):
                    self._delete_gone(current, report)
                if self._manifest_dirty:
                    self._write_manifest()
            except OSError as error:
                self._persist_failed(error, now)
                report.error = self._failing
                return report
            if self._touched and self._failing is not None:
                self._failing = None
                self._backoff = self.retry_backoff[0]
                self._say(logging.INFO, "persist recovered: checkpoints are mirrored again")
            return report

    def _scan_src(self) -> dict[Path, _Stamp]:
        current: dict[Path, _Stamp] = {}
        for path in find_checkpoints(self.src, self.match):
            if self.dst in path.parents:  # persist inside scratch: never mirror the mirror
                continue
            with contextlib.suppress(FileNotFoundError):
                current[path.relative_to(self.src)] = stamp(path.stat())
        return current

    def _ready(
        self, current: dict[Path, _Stamp], now: float, final: bool, report: SyncReport
    ) -> list[tuple[Path, _Stamp]]:
        """The files to copy now; the rest of what is not mirrored goes to report.pending."""
        todo = []
        for rel, key in sorted(current.items()):
            if self._mirrored.get(rel) == key:
                continue
            seen = self._seen.get(rel)
            if seen is None or seen[0] != key:
                self._seen[rel] = seen = (key, now)
            # At the final scan the writer has exited: completeness alone decides.
            if not final and now - seen[1] < self.stable_for:
                report.pending.append(rel)
            elif not is_complete(self.src / rel):
                report.pending.append(rel)
                report.incomplete.append(rel)
            else:
                todo.append((rel, key))
        return todo

    def _copy_all(self, todo: list[tuple[Path, _Stamp]], report: SyncReport) -> None:
        if todo:
            self._prepare_persist()
        for index, (rel, key) in enumerate(todo):
            if self._past_deadline():
                report.pending += [r for r, _ in todo[index:]]
                return
            try:
                if self._on_persist(rel, key):
                    self._record(rel, key)
                    continue
                copy_verified(
                    self.src / rel,
                    self.dst / rel,
                    expect=key,
                    hook=self._op,
                    should_abort=self._past_deadline,
                )
            except SourceChanged:
                self._seen.pop(rel, None)
                report.pending.append(rel)
                continue
            except CopyAborted:
                report.pending += [r for r, _ in todo[index:]]
                return
            except SourceError as error:
                log.debug("cannot read %s for mirroring: %s", self.src / rel, error)
                report.failed.append(rel)
                continue
            except OSError:
                report.failed.append(rel)
                report.pending += [r for r, _ in todo[index + 1 :]]
                raise
            self._record(rel, key)
            report.copied.append(rel)
            log.debug("mirrored %s to %s", rel, self.dst)
            self._emit(f"mirrored {rel.as_posix()} to persist")

    def _on_persist(self, rel: Path, key: _Stamp) -> bool:
        """Whether persist already holds this version (from an earlier session or a restore)."""
        self._op("stat", self.dst / rel)
        return holds_version(self.dst, rel, key, self._manifest)

    def _record(self, rel: Path, key: _Stamp) -> None:
        self._mirrored[rel] = key
        self._seen.pop(rel, None)
        entry = {"size": key[0], "mtime_ns": key[1]}
        if self._manifest.get(rel.as_posix()) != entry:
            self._manifest[rel.as_posix()] = entry
            self._manifest_dirty = True

    def _delete_gone(self, current: dict[Path, _Stamp], report: SyncReport) -> None:
        """Remove from persist what the training deleted from scratch during this session,
        but only while persist holds an up-to-date copy of something still on scratch: a wiped
        scratch or a training that lost its checkpoints never empties the mirror."""
        gone = sorted(rel for rel in self._known if rel not in current)
        if not gone or not any(self._mirrored.get(rel) == key for rel, key in current.items()):
            return
        self._prepare_persist()
        for rel in gone:
            target = self.dst / rel
            self._op("remove", target)
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
                report.deleted.append(rel)
                self._emit(f"removed {rel.as_posix()} from persist (deleted on scratch)")
            self._known.discard(rel)
            self._mirrored.pop(rel, None)
            if self._manifest.pop(rel.as_posix(), None) is not None:
                self._manifest_dirty = True
            for parent in target.parents:  # empty folders the removal left behind
                if parent == self.dst or self.dst not in parent.parents:
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break

    # -- persist state ---------------------------------------------------------------------

    def _prepare_persist(self) -> None:
        if not self._manifest_loaded:
            self._op("stat", self.dst / MANIFEST_NAME)
            # What this session copied before the manifest could be read wins.
            self._manifest = {**load_manifest(self.dst), **self._manifest}
            self._manifest_loaded = True
        if not self._cleaned and self.dst.is_dir():
            self._cleaned = True
            if removed := remove_stale_temps(self.dst):
                log.debug("removed %d temp file(s) a killed copy left in %s", removed, self.dst)

    def _write_manifest(self) -> None:
        self._op("manifest", self.dst / MANIFEST_NAME)
        write_manifest(self.dst, self._manifest)
        self._manifest_dirty = False

    def _op(self, op: str, path: Path) -> None:
        self._touched = True
        if self._hook is not None:
            self._hook(op, path)

    def _persist_failed(self, error: OSError, now: float) -> None:
        text = str(error) or type(error).__name__
        if self._failing is None:
            self._backoff = self.retry_backoff[0]
            self._say(
                logging.WARNING,
                f"persist is failing ({text}): checkpoints are kept on scratch and mirrored "
                "when it recovers",
            )
        else:
            self._backoff = min(self._backoff * 2, self.retry_backoff[1])
            log.debug("persist still failing (%s); next try in %.0f s", text, self._backoff)
        self._failing = text
        self._retry_at = now + self._backoff

    def give_up_at(self, deadline: float | None) -> None:
        """Copies running or starting at ``time.monotonic() >= deadline`` stop there (the
        file stays pending, and persist keeps its previous copy); ``None``: never give up.
        Takes effect in a pass already under way in another thread, too."""
        self._give_up_at = deadline

    def _past_deadline(self) -> bool:
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _say(self, level: int, text: str) -> None:
        log.log(level, "%s", text)
        self._emit(text)

    def _emit(self, text: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(text)
        except Exception:  # a broken display must not stop the mirror
            log.debug("on_event failed", exc_info=True)
