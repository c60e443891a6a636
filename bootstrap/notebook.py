"""The notebook API: set a recipe up inside the current Python process (a Colab kernel).

    import bootstrap
    env = bootstrap.prepare("/content/drive/MyDrive/recipes/my-run.yaml")
    from train import my_training_method          # {repo} is on sys.path now
    my_training_method(data_root=env.data[0], checkpoint=env.checkpointer())

``prepare`` does steps 1-6 of a run (recipe, host, repo, install, data, restore) here, where
``sys.path`` and Drive mounting matter, and starts a background thread that mirrors new
checkpoints to persist while the kernel trains. ``run`` does the whole recipe, training
included, in a supervised child process, exactly like ``python -m bootstrap``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bootstrap.errors import DriveNotMounted
from bootstrap.options import Options
from bootstrap.runner.pipeline import execute, make_plan
from bootstrap.runner.setup import setup
from bootstrap.runner.state import RunState

if TYPE_CHECKING:
    from bootstrap.mirror.thread import CheckpointMirror
    from bootstrap.plan import Plan
    from bootstrap.runner.kept import LaterRestore
    from bootstrap.runner.supervise import Outcome
    from bootstrap.training.checkpoint import Checkpointer

log = logging.getLogger(__name__)

# The Prepared whose checkpoint mirror runs, by run folder: re-running a notebook's prepare()
# cell stops the earlier mirror of that run, so that one thread only mirrors each run folder.
_mirrored: dict[Path, Prepared] = {}


@dataclass
class Prepared:
    """Every resolved path of a prepared recipe."""

    plan: Plan = field(repr=False)  # the whole resolved recipe: thousands of characters
    persist: Path
    scratch: Path
    run_dir: Path
    repo: Path
    checkpoints: Path
    data: list[Path]
    commit: str | None
    mirror: CheckpointMirror | None = field(default=None, repr=False)
    later: LaterRestore | None = field(default=None, repr=False)  # older checkpoints

    def checkpointer(self, keep: int = 3, **kwargs: Any) -> Checkpointer:
        """A Checkpointer bound to the recipe's run.checkpoints (imports torch)."""
        from bootstrap.training.checkpoint import Checkpointer

        return Checkpointer(self.checkpoints, keep, **kwargs)

    def sync(self) -> None:
        """Let the restore of the older checkpoints finish, then stop the background mirror
        after one last pass (also done at interpreter exit)."""
        if self.later is not None:
            self.later.wait()
            self.later = None
        if self.mirror is not None:
            self.mirror.stop(timeout=300)
            self.mirror = None
        key = _run_key(self.run_dir)
        if _mirrored.get(key) is self:
            del _mirrored[key]


def _options(
    recipe: str | os.PathLike[str],
    profile: str | None,
    smoke: bool,
    overrides: Mapping[str, Any] | None,
    persist: str | None,
    scratch: str | None,
    fresh: bool = False,
    extend: bool = False,
    resume_from: str | None = None,
) -> Options:
    sets = tuple(f"{key}={_as_yaml(value)}" for key, value in (overrides or {}).items())
    return Options(
        recipe=Path(recipe),
        profile=profile,
        smoke=smoke,
        sets=sets,
        persist=persist,
        scratch=scratch,
        fresh=fresh,
        extend=extend,
        resume_from=resume_from,
    )


def _as_yaml(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("...").strip()  # safe_dump ends a bare scalar with "..."


def prepare(
    recipe: str | os.PathLike[str],
    *,
    profile: str | None = None,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
    persist: str | None = None,
    scratch: str | None = None,
    resume_from: str | None = None,
    mount_drive: bool = True,
    mirror: bool = True,
    reporter: Any = None,
) -> Prepared:
    """Steps 1-6 of RECIPE.md in this process; ``{repo}`` goes first on ``sys.path``.

    ``overrides`` maps dotted keys to values, like ``--set``: ``{"run.restarts": 5}``.
    Calling it again for the same run in this process (a re-run cell) first stops the mirror
    the earlier call started, after its last pass, as ``Prepared.sync`` does.
    """
    options = _options(recipe, profile, smoke, overrides, persist, scratch, resume_from=resume_from)
    plan = _plan(options, mount_drive)
    _stop_earlier_mirror(plan.run_dir)
    state = RunState.load(plan.state_file, plan.name)
    later = setup(plan, state, options, reporter or _default_reporter(), os.environ)
    repo = str(plan.work_dir)
    if repo in sys.path:
        sys.path.remove(repo)
    sys.path.insert(0, repo)
    # Scripts and Checkpointer.from_env() called from this kernel find the run's folders.
    os.environ["BOOTSTRAP_RUN_DIR"] = str(plan.run_dir)
    os.environ["BOOTSTRAP_CHECKPOINTS"] = str(plan.checkpoints)
    prepared = Prepared(
        plan=plan,
        persist=plan.persist,
        scratch=plan.scratch,
        run_dir=plan.run_dir,
        repo=plan.work_dir,
        checkpoints=plan.checkpoints,
        data=[d.folder for d in plan.data],  # a folder read in place is where it is
        commit=state.commit,
        later=later,
    )
    if mirror:
        from bootstrap.runner.kept import make_mirror

        plan.checkpoints.mkdir(parents=True, exist_ok=True)
        prepared.mirror = make_mirror(plan)
        if prepared.mirror is not None:  # None on a node other than node 0
            prepared.mirror.start()
            _mirrored[_run_key(plan.run_dir)] = prepared
        atexit.register(prepared.sync)
    return prepared


def _run_key(run_dir: Path) -> Path:
    return Path(os.path.abspath(run_dir))


def _stop_earlier_mirror(run_dir: Path) -> None:
    """A prepare() of this run earlier in this process (a re-run cell) left its mirror
    running: stop it after its last pass, before this one restores and starts its own."""
    earlier = _mirrored.pop(_run_key(run_dir), None)
    if earlier is None:
        return
    log.info("stopping the checkpoint mirror of an earlier prepare() of %s", run_dir)
    earlier.sync()
    atexit.unregister(earlier.sync)


def run(
    recipe: str | os.PathLike[str],
    *,
    profile: str | None = None,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
    persist: str | None = None,
    scratch: str | None = None,
    fresh: bool = False,
    extend: bool = False,
    resume_from: str | None = None,
    mount_drive: bool = True,
    reporter: Any = None,
) -> Outcome:
    """The whole recipe, training included, like ``python -m bootstrap``; returns the outcome.
    ``fresh``, ``extend`` and ``resume_from`` are the command line's ``--fresh``, ``--extend``
    and ``--resume-from``."""
    if fresh and extend:
        raise ValueError("fresh and extend exclude each other: start over, or train on")
    options = _options(
        recipe, profile, smoke, overrides, persist, scratch, fresh, extend, resume_from
    )
    plan = _plan(options, mount_drive)
    return execute(plan, options, reporter or _default_reporter())


def _plan(options: Options, mount_drive: bool) -> Plan:
    """make_plan, mounting Drive first when it is missing and this is a Colab kernel. Only
    that error mounts: a mount cannot help "gpu: required" on a CPU runtime."""
    try:
        return make_plan(options)
    except DriveNotMounted:
        if not (mount_drive and _mount_drive_in_kernel()):
            raise
        return make_plan(options)  # Drive is mounted now


def _default_reporter() -> Any:
    from bootstrap.ui import ConsoleReporter

    return ConsoleReporter(stream=sys.stdout)


def _mount_drive_in_kernel() -> bool:
    """Mount Drive, but only inside a Colab notebook kernel, where that can work."""
    if "google.colab" not in sys.modules or "ipykernel" not in sys.modules:
        return False
    try:
        from google.colab import drive  # type: ignore[import-not-found]
    except ImportError:
        return False
    log.info("mounting Google Drive at /content/drive")
    drive.mount("/content/drive")
    return True


__all__: Sequence[str] = ["Prepared", "prepare", "run"]
