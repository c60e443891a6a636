"""What a run keeps on persist, as the runner sees it: the mirror over every kept folder
(``run.checkpoints`` and ``run.keep``), the restore on a new VM, and whether a checkpoint on
scratch is safe on persist yet. The rules themselves are in ``bootstrap.mirror``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from collections.abc import Callable, Collection
from pathlib import Path

from bootstrap.errors import StepCancelled, StepError
from bootstrap.mirror.files import FaultHook, stamp
from bootstrap.mirror.restore import holds_version, load_manifest, restore_checkpoints
from bootstrap.mirror.selection import Tree, find_checkpoints, find_files, newest_checkpoint
from bootstrap.mirror.sync import MirrorSync
from bootstrap.mirror.thread import CheckpointMirror
from bootstrap.plan import PERSIST_FOLDER, SMOKE_DIR, Plan
from bootstrap.progress import ProgressFactory, no_progress
from bootstrap.runner.overlap import cancellable_progress

log = logging.getLogger(__name__)


def make_mirror(
    plan: Plan,
    *,
    interval: float = 0.5,
    fault_hook: FaultHook | None = None,
    on_event: Callable[[str], None] | None = None,
) -> CheckpointMirror | None:
    """The mirror of the run's checkpoints folder and of each ``run.keep`` folder; None on a
    node other than node 0 of a group, whose run folder is node 0's to write (its rank-0
    process writes the checkpoints; two mirrors into one folder would fight over it)."""
    if plan.node_rank:
        return None
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


def restore_kept(
    plan: Plan,
    progress: ProgressFactory = no_progress,
    pace: Callable[[int], None] | None = None,
    *,
    later: Collection[Path] = (),
    source: Path | None = None,
) -> list[Path]:
    """Put every mirrored file and folder checkpoint back at its place on scratch (a new VM);
    the checkpoints folder first. Returns what was restored. ``pace``: see ``read_pacer``;
    ``later``: checkpoints on persist left for ``LaterRestore`` (``older_checkpoints``);
    ``source``: the run folder to read, when not ``{run}`` (``restore_source``)."""
    select = (lambda path: not _under(path, later)) if later else None
    main, *kept = trees_from(plan, source)
    restored = _restore_checkpoints_folder(plan, main, progress, pace, select)
    for tree in kept:
        restored += restore_checkpoints(
            tree.dst,
            tree.src,
            tree.include,
            progress,
            exclude=tree.exclude,
            what=tree.label,
            pace=pace,
        )
    return restored


def older_checkpoints(plan: Plan, source: Path | None = None) -> list[Path]:
    """The checkpoints on persist (or in ``source``'s mirror) but the one a resume starts from
    (``newest_checkpoint``): a new VM needs only that one before the training starts."""
    match = plan.recipe.run.match
    mirror = trees_from(plan, source)[0].dst
    resume = newest_checkpoint(mirror, match)
    return [found for found in find_checkpoints(mirror, match) if found != resume]


def restore_source(plan: Plan, *, fresh: bool = False) -> Path:
    """The run folder to restore from: ``{run}`` on persist, or, when neither persist nor
    scratch holds a checkpoint of this run, the earlier run's folder in
    ``storage.resume_from`` (read only, never written). ``--fresh`` never resumes."""
    match = plan.recipe.run.match
    if (
        plan.resume_from is None
        or fresh
        or find_checkpoints(plan.mirror_dir, match)
        or find_checkpoints(plan.checkpoints, match)
    ):
        return plan.run_dir
    root = plan.resume_from
    where = f"storage.resume_from is {root} ({plan.resume_from_origin})"
    if not root.is_dir():
        raise StepError(
            f"{where}, which is not a folder" + ("" if root.exists() else " (it does not exist)"),
            hint="attach the earlier run's output (on Kaggle: Add Input > Your Work, the "
            "notebook's output), and point storage.resume_from or --resume-from at it",
        )
    # The earlier run's folder is laid out like persist (runs/NAME), like the folder that
    # holds auto persist (a Kaggle notebook's output attached whole: colab-bootstrap/runs/
    # NAME), or is the run folder itself (it holds checkpoints/).
    runs = Path(SMOKE_DIR, "runs") if plan.smoke else Path("runs")
    tried = [root / runs / plan.name, root / PERSIST_FOLDER / runs / plan.name]
    for folder in tried:
        if folder.is_dir():
            return folder
    if (root / "checkpoints").is_dir():
        return root
    others = sorted(
        path.name
        for parent in (root / runs, root / PERSIST_FOLDER / runs)
        if parent.is_dir()
        for path in parent.iterdir()
        if path.is_dir()
    )
    found = f"; the runs there are named {', '.join(others)}" if others else ""
    raise StepError(
        f"{where}, which holds no run named {plan.name}: looked for {tried[0]}, {tried[1]} "
        f"and {root / 'checkpoints'}{found}",
        hint="point it at the folder that holds runs/ (an earlier run's persist), or at the "
        "run folder itself; the recipe's name must be the earlier run's",
    )


def trees_from(plan: Plan, source: Path | None) -> list[Tree]:
    """``plan.trees`` with their persist side moved from ``{run}`` to ``source`` (an earlier
    run's folder, ``restore_source``), to read from there."""
    if source is None or source == plan.run_dir:
        return list(plan.trees)
    return [
        dataclasses.replace(tree, dst=source / tree.dst.relative_to(plan.run_dir))
        for tree in plan.trees
    ]


class LaterRestore:
    """Restores ``older_checkpoints`` in a thread while the training runs: they are all back in
    the end, without holding up its first step. ``stop`` ends it at its next chunk (the file
    it was copying is left out, whole or not at all); ``wait`` lets it finish."""

    def __init__(
        self,
        plan: Plan,
        later: Collection[Path],
        pace: Callable[[int], None] | None,
        source: Path | None = None,
    ):
        self._plan, self._later, self._pace = plan, list(later), pace
        self._tree = trees_from(plan, source)[0]
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-older", daemon=True)

    def start(self) -> LaterRestore:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            restored = _restore_checkpoints_folder(
                self._plan,
                self._tree,
                cancellable_progress(no_progress, self._cancel),
                self._pace,
                lambda path: _under(path, self._later),
            )
        except StepCancelled:
            log.debug("stopped restoring the older checkpoints")
        except StepError as error:  # they stay on persist; nothing needs them to train
            log.warning("%s (older checkpoints, restored after the start)", error.message)
        else:
            log.debug("restored %d older checkpoint(s) after the start", len(restored))

    def stop(self) -> None:
        self._cancel.set()
        self._thread.join()

    def wait(self) -> None:
        self._thread.join()


def _restore_checkpoints_folder(
    plan: Plan,
    main: Tree,
    progress: ProgressFactory,
    pace: Callable[[int], None] | None,
    select: Callable[[Path], bool] | None,
) -> list[Path]:
    """restore_checkpoints for run.checkpoints (``main``: the first of ``plan.trees``, or
    the same read from another run folder), folder checkpoints whole."""
    return restore_checkpoints(
        main.dst,
        main.src,
        main.include,
        progress,
        exclude=main.exclude,
        folders=plan.folder_checkpoints,
        pace=pace,
        select=select,
    )


def _under(path: Path, roots: Collection[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def set_aside_torn_folders(plan: Plan) -> list[Path]:
    """Rename each folder checkpoint on scratch that lacks its marker (a save a kill or crash
    cut short) to a hidden name beside it, ``.torn-NAME`` (the last one of each name is kept, for
    a look). Called before each launch, when no training is writing: trainers that find their
    checkpoints themselves (a Hugging Face Trainer's get_last_checkpoint takes the highest
    ``checkpoint-N``, whole or not) would otherwise crash on it at every restart. Nothing
    mirrors or restores hidden names. Returns the folders set aside."""
    moved = []
    for rule in plan.folder_checkpoints:
        for folder in rule.folders(plan.checkpoints):
            if (folder / rule.marker).is_file():
                continue
            aside = folder.with_name(f".torn-{folder.name}")
            shutil.rmtree(aside, ignore_errors=True)
            try:
                os.rename(folder, aside)
            except OSError as error:  # the training may cope; a rename must not stop the run
                log.warning(
                    "could not set aside %s, which has no %s: %s", folder, rule.marker, error
                )
                continue
            moved.append(folder)
            log.warning(
                "%s has no %s: a save cut short; set aside as %s", folder, rule.marker, aside.name
            )
    return moved


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
