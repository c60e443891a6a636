"""Folder checkpoints on persist and scratch: put in place whole or not at all.

A folder checkpoint (a Hugging Face ``checkpoint-N/``, accelerate's ``save_state``, a torch DCP
folder) is several files that only make sense together. It is copied into a hidden temp folder
beside its place, verified file by file, and moved into place with one rename; the folder it
replaces is moved aside first and removed after. A kill at any instant leaves the old folder,
the new one, or (between the two renames) none: never one with some files missing or from
another step. Hidden temp folders are removed by the next pass (``remove_stale_temps``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from bootstrap.fsutil import fsync_dir
from bootstrap.mirror.files import TEMP_PREFIX, FaultHook, copy_verified

_Stamp = tuple[int, int]


def temp_beside(target: Path, kind: str) -> Path:
    """A hidden temp path in ``target``'s folder, cleaned up by ``remove_stale_temps``."""
    return target.parent / f"{TEMP_PREFIX}{target.name}.{kind}.{uuid.uuid4().hex[:8]}.tmp"


def copy_folder(
    source: Path,
    target: Path,
    files: dict[Path, _Stamp],
    *,
    hook: FaultHook | None = None,
    should_abort: Callable[[], bool] | None = None,
    copied: Callable[[int], None] | None = None,
) -> None:
    """Copy ``files`` (relative to ``source``, with the stamps they must still have) into a
    temp folder and move it over ``target``. Raises what ``copy_verified`` raises; on any error
    ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_beside(target, "new")
    try:
        for rel, key in sorted(files.items()):
            copy_verified(
                source / rel,
                staging / rel,
                expect=key,
                hook=hook,
                should_abort=should_abort,
                copied=copied,
            )
        # The folder takes its newest file's time: trainers order their checkpoint folders by
        # mtime (the Trainer's rotation does), and a restore must not reorder them.
        newest = max((key[1] for key in files.values()), default=None)
        if newest is not None:
            os.utime(staging, ns=(newest, newest))
        if hook is not None:
            hook("replace", target)
        replace_folder(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise


def replace_folder(staging: Path, target: Path) -> None:
    """Move the complete folder ``staging`` to ``target``, the old ``target`` aside first."""
    old = temp_beside(target, "old")
    moved_aside = False
    try:
        os.rename(target, old)
        moved_aside = True
    except FileNotFoundError:
        pass
    os.rename(staging, target)
    fsync_dir(target.parent)
    if moved_aside:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)


def remove_folder(target: Path) -> bool:
    """Remove ``target`` so that it vanishes at once (renamed aside, then deleted).
    False when it was not there."""
    aside = temp_beside(target, "gone")
    try:
        os.rename(target, aside)
    except FileNotFoundError:
        return False
    fsync_dir(target.parent)
    with contextlib.suppress(OSError):
        shutil.rmtree(aside)
    return True
