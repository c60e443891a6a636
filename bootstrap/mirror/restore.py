"""The mirror on persist, read back: restoring its checkpoints to scratch on a new VM, and the
manifest that records what the mirror holds (written by ``CheckpointMirror``, read for status).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bootstrap.errors import StepError
from bootstrap.fsutil import atomic_write_json, read_json
from bootstrap.mirror.files import (
    MANIFEST_NAME,
    Match,
    SourceChanged,
    SourceError,
    copy_verified,
    is_complete,
    stamp,
)
from bootstrap.mirror.folders import copy_folder
from bootstrap.mirror.selection import EVERYTHING, FolderRule, find_files
from bootstrap.progress import ProgressFactory, no_progress

log = logging.getLogger(__name__)

# Drive and similar filesystems may keep coarser modification times than scratch.
_MTIME_SLACK_NS = 1_000_000_000


def restore_checkpoints(
    persist_dir: Path,
    scratch_dir: Path,
    match: Match = EVERYTHING,
    progress: ProgressFactory = no_progress,
    *,
    exclude: Sequence[str] = (),
    folders: Sequence[FolderRule] = (),
    what: str = "checkpoints",
    pace: Callable[[int], None] | None = None,
    select: Callable[[Path], bool] | None = None,
) -> list[Path]:
    """Copy the mirror back to scratch where scratch lacks a file, holds a torn copy or an
    older version (a new VM): every kept file (``match`` minus ``exclude``), and each folder
    checkpoint of ``folders`` whole (only one holding its marker; it replaces the scratch
    folder in one rename). Keeps relative paths and modification times; each file is replaced
    atomically. ``progress`` gets one bar of the bytes to restore. Returns the restored files
    and folders (under ``scratch_dir``). ``select``, given a file or a folder checkpoint on
    persist, says whether to restore it now (the others are left for a later call)."""
    persist_dir, scratch_dir = Path(persist_dir), Path(scratch_dir)
    restored: list[Path] = []
    current: Path | None = None
    try:
        units = _units_to_restore(persist_dir, scratch_dir, folders)
        if select is not None:
            units = [unit for unit in units if select(unit[0])]
        # Files of a folder checkpoint come back with their folder, whole, or not at all.
        unit_dirs = {f for rule in folders for f in rule.folders(persist_dir)}
        todo: list[tuple[Path, Path, tuple[int, int]]] = []
        for current in find_files(persist_dir, match, exclude):
            if unit_dirs.intersection(current.parents):
                continue
            if select is not None and not select(current):
                continue
            target = scratch_dir / current.relative_to(persist_dir)
            key = stamp(current.stat())
            if not _needs_restore(key, target):
                continue
            if not is_complete(current):
                log.warning("not restoring %s: it looks incomplete", current)
                continue
            todo.append((current, target, key))
        total = sum(key[0] for _, _, key in todo) + sum(
            k[0] for _, files in units for k in files.values()
        )
        if not todo and not units:
            return restored
        bar = progress(f"restoring {what}", total=total, unit="B")
        copied = bar.advance
        if pace is not None:  # a drill: persist as slow as Drive (mirror.faults)

            def copied(amount: int) -> None:
                bar.advance(amount)
                pace(amount)

        try:
            for current, files in units:
                target = scratch_dir / current.relative_to(persist_dir)
                try:
                    copy_folder(current, target, files, copied=copied)
                except SourceChanged:
                    log.warning("not restoring %s: it changed while it was copied", current)
                    continue
                restored.append(target)
            for current, target, key in todo:
                try:
                    copy_verified(current, target, expect=key, copied=copied)
                except SourceChanged:
                    log.warning("not restoring %s: it changed while it was copied", current)
                    continue
                restored.append(target)
        finally:
            bar.close()
    except (OSError, SourceError) as error:
        raise StepError(
            f"could not restore {what} from {current or persist_dir} to {scratch_dir}: {error}",
            hint="check that persist (Google Drive) is mounted and readable and that scratch "
            "has free space, then run the same command again",
        ) from error
    return restored


def _units_to_restore(
    persist_dir: Path, scratch_dir: Path, folders: Sequence[FolderRule]
) -> list[tuple[Path, dict[Path, tuple[int, int]]]]:
    """The folder checkpoints on persist that scratch lacks, holds torn, or holds older."""
    units = []
    for rule in folders:
        for folder in rule.folders(persist_dir):
            marker = folder / rule.marker
            if not marker.is_file():
                continue  # not one the mirror put there whole: leave it
            target = scratch_dir / folder.relative_to(persist_dir)
            if not _needs_restore(stamp(marker.stat()), target / rule.marker):
                continue
            paths = rule.files(folder)
            if not all(is_complete(p) for p in paths):
                log.warning("not restoring %s: a file in it looks incomplete", folder)
                continue
            units.append((folder, {p.relative_to(folder): stamp(p.stat()) for p in paths}))
    return units


def _needs_restore(key: tuple[int, int], target: Path) -> bool:
    try:
        mtime_ns = target.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    # Scratch is newer than the mirror unless it lost the file, or a crash tore it.
    return not is_complete(target) or key[1] - mtime_ns > _MTIME_SLACK_NS


# -- the manifest: what the mirror holds -------------------------------------------------------


def holds_version(dst: Path, rel: Path, key: tuple[int, int], manifest: dict[str, Any]) -> bool:
    """Whether ``dst / rel`` is the version of a scratch file whose stamp is ``key``: the same
    size, and its mtime or the manifest's record of the source (a copy on Drive may not keep
    the mtime exactly)."""
    try:
        st = os.stat(dst / rel)
    except FileNotFoundError:
        return False
    if st.st_size != key[0]:
        return False
    if st.st_mtime_ns == key[1]:
        return True
    return manifest.get(rel.as_posix()) == {"size": key[0], "mtime_ns": key[1]}


def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest's files ({relative posix path: {"size", "mtime_ns"}}); {} when it is
    missing or damaged. Other OSErrors propagate: persist is failing."""
    try:
        stored = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    files = stored.get("files") if isinstance(stored, dict) else None
    return (
        {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}
    )


def write_manifest(folder: Path, files: dict[str, Any]) -> None:
    atomic_write_json(
        Path(folder) / MANIFEST_NAME, {"version": 1, "updated": time.time(), "files": files}
    )


def mirror_status(dst: Path) -> dict[str, Any]:
    """What the manifest in ``dst`` says is mirrored, and whether each file is still there:
    ``{"updated": epoch seconds or None, "files": {relative path: {"size", "mtime_ns",
    "present"}}}``. Never raises."""
    dst = Path(dst)
    stored = read_json(dst / MANIFEST_NAME)
    try:
        files = load_manifest(dst)
    except OSError:
        files = {}
    status: dict[str, Any] = {}
    for rel, entry in sorted(files.items()):
        key = (entry.get("size"), entry.get("mtime_ns"))
        try:
            present = all(isinstance(n, int) for n in key) and holds_version(
                dst, Path(rel), key, files
            )
        except OSError:
            present = False
        status[rel] = {
            "size": entry.get("size"),
            "mtime_ns": entry.get("mtime_ns"),
            "present": present,
        }
    updated = stored.get("updated") if isinstance(stored, dict) else None
    return {"updated": updated, "files": status}
