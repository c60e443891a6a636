"""What a run keeps on persist, as the runner sees it: the mirror over every kept folder
(``run.checkpoints`` and ``run.keep``), the restore on a new VM, and whether a checkpoint on
scratch is safe on persist yet. The rules themselves are in ``bootstrap.mirror``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bootstrap.mirror.files import FaultHook, stamp
from bootstrap.mirror.restore import holds_version, load_manifest, restore_checkpoints
from bootstrap.mirror.selection import Tree, find_files
from bootstrap.mirror.sync import MirrorSync
from bootstrap.mirror.thread import CheckpointMirror
from bootstrap.plan import Plan
from bootstrap.progress import ProgressFactory, no_progress


def make_mirror(
    plan: Plan,
    *,
    interval: float = 0.5,
    fault_hook: FaultHook | None = None,
    on_event: Callable[[str], None] | None = None,
) -> CheckpointMirror:
    """The mirror of the run's checkpoints folder and of each ``run.keep`` folder."""
    main, *kept = plan.trees
    also = [
        MirrorSync(tree.src, tree.dst, tree.include, exclude=tree.exclude, fault_hook=fault_hook)
        for tree in kept
    ]
    return CheckpointMirror(
        main.src,
        main.dst,
        main.include,
        exclude=main.exclude,
        folders=plan.folder_checkpoints,
        also=also,
        interval=interval,
        fault_hook=fault_hook,
        on_event=on_event,
    )


def restore_kept(plan: Plan, progress: ProgressFactory = no_progress) -> list[Path]:
    """Put every mirrored file and folder checkpoint back at its place on scratch (a new VM);
    the checkpoints folder first. Returns what was restored."""
    main, *kept = plan.trees
    restored = restore_checkpoints(
        main.dst,
        main.src,
        main.include,
        progress,
        exclude=main.exclude,
        folders=plan.folder_checkpoints,
    )
    for tree in kept:
        restored += restore_checkpoints(
            tree.dst, tree.src, tree.include, progress, exclude=tree.exclude, what=tree.label
        )
    return restored


def kept_files(tree: Tree, on_persist: bool = False) -> list[Path]:
    """The files of ``tree`` on scratch (or, with ``on_persist``, in its mirror)."""
    return find_files(tree.dst if on_persist else tree.src, tree.include, tree.exclude)


def is_mirrored(plan: Plan, local: Path) -> bool:
    """Whether the mirror holds this version of ``local`` (a file, or every file of a folder
    checkpoint) under the checkpoints folder, by the mirror's own rule. Raises OSError when
    persist cannot be read."""
    manifest = load_manifest(plan.mirror_dir)
    files = find_files(local) if local.is_dir() else [local]
    return bool(files) and all(
        holds_version(
            plan.mirror_dir, path.relative_to(plan.checkpoints), stamp(path.stat()), manifest
        )
        for path in files
    )
