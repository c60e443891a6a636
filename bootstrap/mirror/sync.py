"""One pass of the checkpoint mirror (``MirrorSync.sync_once``): copy what is new and complete
from scratch to persist, verified before it replaces anything; remove from persist what the
training deleted; ride out a failing persist with backoff, one warning and a recovery note.

The lag is bounded whatever the save rhythm. A file whose completeness can be checked (a torch
or safetensors checkpoint) is copied as soon as it reads whole; any other file once it has not
changed for ``stable_for`` seconds, or after ``max_wait`` seconds of changing. A copy counts
only if the version it read did not change meanwhile. Each file goes up through a snapshot on
scratch, taken at local-disk speed while the upload follows it (``bootstrap.mirror.snapshot``):
the file has to hold still for the snapshot's time only, so even a checkpoint rewritten faster
than persist can take a copy reaches persist about once per copy time, and a good copy there
is never replaced by a torn one. Where no snapshot can be written (scratch full), the file is
copied directly, and waits for a quiet moment as long as a copy.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.mirror.files import (
    MANIFEST_NAME,
    CopyAborted,
    FaultHook,
    Match,
    SourceChanged,
    SourceError,
    can_tell_complete,
    copy_verified,
    is_complete,
    patterns,
    remove_stale_temps,
    stamp,
)
from bootstrap.mirror.folders import copy_folder, remove_folder
from bootstrap.mirror.restore import holds_version, load_manifest, write_manifest
from bootstrap.mirror.rhythm import SaveRhythm
from bootstrap.mirror.selection import FolderRule, find_files
from bootstrap.mirror.snapshot import SnapshotUnavailable, upload_via_snapshot
from bootstrap.progress import ProgressBar, ProgressFactory

log = logging.getLogger(__name__)

_Stamp = tuple[int, int]
_Unit = tuple[tuple[str, int, int], ...]  # a folder checkpoint's files: (path, size, mtime)
_SNAPSHOT_TRIES = 3
_SNAPSHOT_WAIT = 0.5  # before each try, for a save under way to finish (never blocks for long)


@dataclass
class SyncReport:
    """What one scan did. Paths are relative to the mirrored folders; a folder checkpoint
    counts as its folder's path."""

    copied: list[Path] = field(default_factory=list)
    pending: list[Path] = field(default_factory=list)  # new or changed, not copied yet
    failed: list[Path] = field(default_factory=list)  # a copy was tried and failed
    error: str | None = None  # why persist (or scratch) could not be used, if it could not
    deleted: list[Path] = field(default_factory=list)  # removed from persist, gone from scratch
    incomplete: list[Path] = field(default_factory=list)  # pending: they look torn


def _wait_until_complete(path: Path, timeout: float, poll: float = 0.01) -> bool:
    """Wait (at most ``timeout`` s) until ``path`` reads whole: a writer is mid-save. Returns
    whether it does."""
    end = time.monotonic() + timeout
    while not (whole := is_complete(path)) and time.monotonic() < end:
        time.sleep(poll)
    return whole


class MirrorSync:
    """Scans ``src`` (scratch) and keeps ``dst`` (persist) a complete copy of its files, one
    pass per ``sync_once``; see ``CheckpointMirror`` for ``fault_hook`` and ``on_event``.

    ``match``: the globs (relative to ``src``) of what is kept, minus ``exclude``.
    ``folders``: folder checkpoints, each copied whole once it holds its marker and has not
    changed for ``stable_for``.
    """

    def __init__(
        self,
        src: Path,
        dst: Path,
        match: Match = ("**/*",),
        *,
        exclude: Sequence[str] = (),
        folders: Sequence[FolderRule] = (),
        stable_for: float = 0.5,
        max_wait: float = 5.0,
        retry_backoff: tuple[float, float] = (1.0, 60.0),
        clock: Callable[[], float] = time.monotonic,
        fault_hook: FaultHook | None = None,
        on_event: Callable[[str], None] | None = None,
    ):
        self.src = Path(src)
        self.dst = Path(dst)
        self.match = patterns(match)
        self.exclude = tuple(exclude)
        self.folders = tuple(folders)
        self.stable_for = stable_for
        self.max_wait = max_wait
        self.retry_backoff = retry_backoff
        self._clock = clock
        self._hook = fault_hook
        self._on_event = on_event
        self._lock = threading.Lock()
        self._seen: dict[Path, tuple[object, float]] = {}  # stamp, and since when it holds
        self._dirty_since: dict[Path, float] = {}  # when a file or folder first differed
        self._mirrored: dict[Path, object] = {}  # stamps known to be on persist
        self._known: set[Path] = set()  # every file seen in src during this session
        self._known_units: set[Path] = set()  # every folder checkpoint seen likewise
        self._direct: set[Path] = set()  # no snapshot could be written: copied directly
        self._rhythm = SaveRhythm()  # says when the training saves faster than uploads go
        self._snapshots: Path | None = None
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
        self.scan_seconds = 0.0  # how long the last look at src took (not counting copies)
        self._progress: ProgressFactory | None = None
        self._bar: ProgressBar | None = None

    def sync_once(
        self, *, final: bool = False, progress: ProgressFactory | None = None
    ) -> SyncReport:
        """Scan ``src`` once and copy what is new and ready. Never raises.

        ``final``: the training has exited, so nothing need have stopped changing; looking
        complete is enough. ``progress``: a bar of the bytes this pass copies (the final pass
        of a run, which the user waits for).
        """
        self._progress = progress
        try:
            return self._sync(final)
        except Exception as error:  # a bug here must never reach the training
            level = logging.DEBUG if self._unexpected_logged else logging.WARNING
            log.log(level, "checkpoint mirror scan failed: %s", error, exc_info=True)
            self._unexpected_logged = True
            return SyncReport(error=f"{type(error).__name__}: {error}")

    def close(self) -> None:
        """Remove the scratch snapshots this mirror made (call after the last pass)."""
        if self._snapshots is not None:
            shutil.rmtree(self._snapshots, ignore_errors=True)
            self._snapshots = None

    # -- one scan --------------------------------------------------------------------------

    def _sync(self, final: bool) -> SyncReport:
        with self._lock:
            report = SyncReport()
            now = self._clock()
            scan_started = time.monotonic()
            try:
                current, units = self._scan_src()
            except OSError as error:
                report.error = f"cannot read {self.src}: {error}"
                return report
            self.scan_seconds = time.monotonic() - scan_started
            self._known.update(current)
            self._known_units.update(units)
            self._seen = {k: v for k, v in self._seen.items() if k in current or k in units}
            todo = self._ready(current, now, final, report)
            unit_todo = self._ready_units(units, now, final, report)
            if not final and self._failing is not None and now < self._retry_at:
                report.pending += [rel for rel, _ in todo] + [rel for rel, _ in unit_todo]
                report.error = self._failing
                return report
            self._touched = False
            self._open_bar(todo, unit_todo, units)
            try:
                self._copy_all(todo, report)
                self._copy_units(unit_todo, units, report)
                if not report.failed and not set(report.pending) - set(report.incomplete):
                    self._delete_gone(current, units, report)
                if self._manifest_dirty:
                    self._write_manifest()
            except OSError as error:
                self._persist_failed(error, now)
                report.error = self._failing
                return report
            finally:
                self._close_bar()
            if self._touched and self._failing is not None:
                self._failing = None
                self._backoff = self.retry_backoff[0]
                self._say(logging.INFO, "persist recovered: checkpoints are mirrored again")
            return report

    def _open_bar(
        self,
        todo: list[tuple[Path, _Stamp]],
        unit_todo: list[tuple[Path, _Unit]],
        units: dict[Path, dict[Path, _Stamp]],
    ) -> None:
        self._bar = None
        if self._progress is None or not (todo or unit_todo):
            return
        total = sum(key[0] for _, key in todo)
        total += sum(key[0] for rel, _ in unit_todo for key in units[rel].values())
        self._bar = self._progress("mirroring to persist", total=total, unit="B")

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _advance(self, size: int) -> None:
        if self._bar is not None:
            self._bar.advance(size)

    def _scan_src(self) -> tuple[dict[Path, _Stamp], dict[Path, dict[Path, _Stamp]]]:
        """The plain files, and the files of each folder checkpoint (by folder)."""
        rules = {
            folder.relative_to(self.src): rule
            for rule in self.folders
            for folder in rule.folders(self.src)
        }
        current: dict[Path, _Stamp] = {}
        units: dict[Path, dict[Path, _Stamp]] = {}
        for unit, rule in rules.items():
            units[unit] = {}
            for path in rule.files(self.src / unit):
                with contextlib.suppress(FileNotFoundError):
                    units[unit][path.relative_to(self.src / unit)] = stamp(path.stat())
        for path in find_files(self.src, self.match, self.exclude):
            rel = path.relative_to(self.src)
            # Persist inside scratch: never mirror the mirror. Folder checkpoints: done above.
            if self.dst in path.parents or any(d in rules for d in rel.parents):
                continue
            with contextlib.suppress(FileNotFoundError):
                current[rel] = stamp(path.stat())
        return current, units

    def _ready(
        self, current: dict[Path, _Stamp], now: float, final: bool, report: SyncReport
    ) -> list[tuple[Path, _Stamp]]:
        """The files to copy now; the rest of what is not mirrored goes to report.pending."""
        todo = []
        for rel, key in sorted(current.items()):
            if self._mirrored.get(rel) == key:
                self._dirty_since.pop(rel, None)
                continue
            dirty = self._dirty_since.setdefault(rel, now)
            seen = self._seen.get(rel)
            changing = seen is None or seen[0] != key
            if seen is None or changing:
                self._seen[rel] = seen = (key, now)
            path = self.src / rel
            checkable = can_tell_complete(path)
            if final or checkable:
                # At the final scan the writer has exited; a checkable format needs no wait.
                ready = True
            else:  # nothing tells a half-written file: wait for quiet, but not for ever
                ready = now - seen[1] >= self.stable_for or now - dirty >= self.max_wait
            if not ready:
                report.pending.append(rel)
                continue
            # Changed since the last scan and not whole: a save under way, which ends in a
            # moment, where the next scan would come a whole interval later (a training that
            # saves faster than an upload is mid-save at about every other scan). A file that
            # stays torn is not waited for again.
            saving = checkable and changing and not final
            if is_complete(path) or (saving and _wait_until_complete(path, _SNAPSHOT_WAIT)):
                todo.append((rel, key))
            else:
                report.pending.append(rel)
                report.incomplete.append(rel)
        return todo

    def _ready_units(
        self,
        units: dict[Path, dict[Path, _Stamp]],
        now: float,
        final: bool,
        report: SyncReport,
    ) -> list[tuple[Path, _Unit]]:
        """The folder checkpoints to copy now: holding their marker, whole, and quiet."""
        todo = []
        markers = {rule.marker for rule in self.folders}
        for rel, files in sorted(units.items()):
            key: _Unit = tuple(sorted((p.as_posix(), *k) for p, k in files.items()))
            if self._mirrored.get(rel) == key:
                continue
            seen = self._seen.get(rel)
            if seen is None or seen[0] != key:
                self._seen[rel] = seen = (key, now)
            if not any(Path(name) in files for name in markers):
                report.pending.append(rel)  # still being written: its marker comes last
            elif not final and now - seen[1] < self.stable_for:
                report.pending.append(rel)
            elif not all(is_complete(self.src / rel / p) for p in files):
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
                copied = self._copy_file(rel, key)
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
            if copied is None:
                report.pending.append(rel)
                continue
            self._record(rel, copied)
            report.copied.append(rel)
            log.debug("mirrored %s to %s", rel, self.dst)
            self._emit(f"mirrored {rel.as_posix()} to persist")

    def _copy_file(self, rel: Path, key: _Stamp) -> _Stamp | None:
        """Upload ``rel`` through a snapshot; directly where no snapshot can be written."""
        if rel not in self._direct:
            try:
                return self._copy_by_snapshot(rel)
            except SnapshotUnavailable as error:
                log.debug("no snapshot of %s (%s): copying it directly", rel, error.error)
                self._direct.add(rel)
        try:
            before = copy_verified(
                self.src / rel,
                self.dst / rel,
                expect=key,
                hook=self._op,
                should_abort=self._past_deadline,
                copied=self._advance,
            )
        except SourceChanged:
            return None  # rewritten: the next pass tries its new version
        return stamp(before)

    def _copy_by_snapshot(self, rel: Path) -> _Stamp | None:
        """Upload ``rel`` through a snapshot on scratch taken while the upload runs (see
        ``bootstrap.mirror.snapshot``). None when the file changed under every try."""
        source = self.src / rel
        spent: list[float] = []
        for _ in range(_SNAPSHOT_TRIES):
            _wait_until_complete(source, timeout=_SNAPSHOT_WAIT)
            started = time.monotonic()
            try:
                key = upload_via_snapshot(
                    source,
                    self._snapshot_dir() / rel.name,
                    self.dst / rel,
                    skip=lambda key: self._on_persist(rel, key),
                    hook=self._op,
                    should_abort=self._past_deadline,
                    copied=self._advance,
                )
            except SourceChanged as error:  # rewritten before the snapshot was whole: again
                log.debug("cannot snapshot %s: %s", source, error)
                spent.append(time.monotonic() - started)
                continue
            self._rhythm.uploaded(source, key, time.monotonic() - started)
            return key
        self._rhythm.never_whole(source, spent)
        return None

    def _snapshot_dir(self) -> Path:
        if self._snapshots is None:
            try:
                self._snapshots = Path(tempfile.mkdtemp(prefix="bootstrap-mirror-"))
            except OSError as error:
                raise SnapshotUnavailable(error) from error
        return self._snapshots

    def _copy_units(
        self,
        todo: list[tuple[Path, _Unit]],
        units: dict[Path, dict[Path, _Stamp]],
        report: SyncReport,
    ) -> None:
        if todo:
            self._prepare_persist()
        for index, (rel, key) in enumerate(todo):
            files = units[rel]
            if self._past_deadline():
                report.pending += [r for r, _ in todo[index:]]
                return
            self._op("stat", self.dst / rel)
            if all(holds_version(self.dst, rel / p, k, self._manifest) for p, k in files.items()):
                self._record_unit(rel, key, files)  # already there: an earlier session's
                continue
            try:
                copy_folder(
                    self.src / rel,
                    self.dst / rel,
                    files,
                    hook=self._op,
                    should_abort=self._past_deadline,
                    copied=self._advance,
                )
            except (SourceChanged, SourceError):
                report.pending.append(rel)
                continue
            except CopyAborted:
                report.pending += [r for r, _ in todo[index:]]
                return
            except OSError:
                report.failed.append(rel)
                raise
            self._record_unit(rel, key, files)
            report.copied.append(rel)
            self._emit(f"mirrored {rel.as_posix()}/ to persist")

    def _on_persist(self, rel: Path, key: _Stamp) -> bool:
        """Whether persist already holds this version (from an earlier session or a restore)."""
        self._op("stat", self.dst / rel)
        return holds_version(self.dst, rel, key, self._manifest)

    def _record(self, rel: Path, key: _Stamp) -> None:
        self._mirrored[rel] = key
        self._seen.pop(rel, None)
        self._dirty_since.pop(rel, None)
        self._set_manifest(rel, key)

    def _record_unit(self, rel: Path, key: _Unit, files: dict[Path, _Stamp]) -> None:
        self._mirrored[rel] = key
        self._seen.pop(rel, None)
        prefix = rel.as_posix() + "/"
        for name in [n for n in self._manifest if n.startswith(prefix)]:
            if Path(name).relative_to(rel) not in files:
                del self._manifest[name]
                self._manifest_dirty = True
        for path, file_key in files.items():
            self._set_manifest(rel / path, file_key)

    def _set_manifest(self, rel: Path, key: _Stamp) -> None:
        entry = {"size": key[0], "mtime_ns": key[1]}
        if self._manifest.get(rel.as_posix()) != entry:
            self._manifest[rel.as_posix()] = entry
            self._manifest_dirty = True

    def _delete_gone(
        self,
        current: dict[Path, _Stamp],
        units: dict[Path, dict[Path, _Stamp]],
        report: SyncReport,
    ) -> None:
        """Remove from persist what the training deleted from scratch during this session,
        but only while persist holds an up-to-date copy of something still on scratch: a wiped
        scratch or a training that lost its checkpoints never empties the mirror."""
        gone = sorted(rel for rel in self._known if rel not in current)
        gone_units = sorted(rel for rel in self._known_units if rel not in units)
        if not gone and not gone_units:
            return
        if not any(self._mirrored.get(rel) == key for rel, key in current.items()) and not any(
            rel in self._mirrored for rel in units
        ):
            return
        self._prepare_persist()
        for rel in gone:
            target = self.dst / rel
            self._op("remove", target)
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
                report.deleted.append(rel)
                self._emit(f"removed {rel.as_posix()} from persist (deleted on scratch)")
            self._forget(rel)
            self._remove_empty_parents(target)
        for rel in gone_units:
            self._op("remove", self.dst / rel)
            if remove_folder(self.dst / rel):
                report.deleted.append(rel)
                self._emit(f"removed {rel.as_posix()}/ from persist (deleted on scratch)")
            self._known_units.discard(rel)
            self._mirrored.pop(rel, None)
            prefix = rel.as_posix() + "/"
            for name in [n for n in self._manifest if n.startswith(prefix)]:
                del self._manifest[name]
                self._manifest_dirty = True
            self._remove_empty_parents(self.dst / rel)

    def _forget(self, rel: Path) -> None:
        self._known.discard(rel)
        self._mirrored.pop(rel, None)
        self._direct.discard(rel)
        if self._manifest.pop(rel.as_posix(), None) is not None:
            self._manifest_dirty = True

    def _remove_empty_parents(self, target: Path) -> None:
        for parent in target.parents:  # empty folders a removal left behind
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
