"""Run a recipe end to end: the library function behind ``python -m bootstrap``.

    load + validate ─▶ host ─▶ plan ─▶ repo ─▶ install ─▶ data ─▶ prepare ─▶ restore ─▶ supervise

``make_plan`` does the first three, without side effects; ``execute`` the rest: the setup
steps (``setup``), then the training under the ``Supervisor``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bootstrap.errors import DriveNotMounted, ExitCode, HostError, UsageError
from bootstrap.host import DRIVE_MOUNT_CELL, Host, detect_host
from bootstrap.mirror.files import stamp
from bootstrap.mirror.restore import holds_version, load_manifest
from bootstrap.mirror.selection import newest_checkpoint
from bootstrap.options import Options
from bootstrap.plan import Plan, resolve_plan
from bootstrap.recipe.durations import format_duration
from bootstrap.recipe.load import load_recipe
from bootstrap.report import Reporter, SilentReporter
from bootstrap.runner.kept import kept_files
from bootstrap.runner.setup import setup
from bootstrap.runner.state import FAILED, FINISHED, INTERRUPTED, PAUSED, STOPPED, RunState
from bootstrap.runner.supervise import RERUN, Outcome, Supervisor

log = logging.getLogger(__name__)

# Scanning the checkpoint folder is a few stat calls; persist is written only on change.
DEFAULT_MIRROR_INTERVAL = 0.5
AGAIN_HINT = (
    "to train on from its newest checkpoint, raise the training's length (its epochs, in the "
    "recipe or with --set) and pass --extend; to start over, pass --fresh"
)
COLAB_GPU_FIX = "in Colab: Runtime > Change runtime type > choose a GPU, then run the cell again"
KAGGLE_GPU_FIX = (
    "on Kaggle: in the notebook's side panel, Settings > Accelerator > GPU T4 x2 (or P100), "
    "then run the cell again"
)


def make_plan(options: Options, environ: Mapping[str, str] | None = None) -> Plan:
    """Load and validate the recipe, look at the host, resolve every path. No side effects."""
    env = dict(os.environ if environ is None else environ)
    host = detect_host(env)
    recipe_path = Path(options.recipe).absolute()
    if host.on_unmounted_drive(recipe_path) and not recipe_path.exists():
        # The README keeps recipes on Drive: "not found" would send the user to the path.
        raise DriveNotMounted(
            f"the recipe {recipe_path} is on Google Drive, which is not mounted at "
            f"{host.content_dir / 'drive'}",
            hint=f"run `{DRIVE_MOUNT_CELL}` in a notebook cell first",
        )
    recipe = load_recipe(
        options.recipe,
        profile=options.profile,
        smoke=options.smoke,
        overrides=options.sets,
        environ=env,
    )
    plan = resolve_plan(
        recipe,
        host,
        persist=options.persist,
        scratch=options.scratch,
        smoke=options.smoke,
        environ=env,
        resume_from=options.resume_from,
    )
    check_gpu(plan)
    return plan


def check_gpu(plan: Plan) -> None:
    host: Host = plan.host
    if plan.recipe.gpu == "required" and not host.has_gpu and not plan.smoke:
        hint = (
            COLAB_GPU_FIX
            if host.on_colab
            else KAGGLE_GPU_FIX
            if host.on_kaggle
            else "run it on a machine with an NVIDIA GPU, or set gpu: optional"
        )
        raise HostError("gpu: required, but this runtime has no GPU", hint=hint)


def execute(
    plan: Plan,
    options: Options,
    reporter: Reporter | None = None,
    environ: Mapping[str, str] | None = None,
) -> Outcome:
    """Do the setup steps and supervise the training. Raises BootstrapError on failure."""
    ui = reporter or SilentReporter()
    env = dict(os.environ if environ is None else environ)
    state = RunState.load(plan.state_file, plan.name)
    if state.status == FINISHED and not (options.fresh or options.extend):
        last = newest_checkpoint(plan.mirror_dir, plan.recipe.run.match)
        return Outcome(
            FINISHED,
            ExitCode.FINISHED,
            0,
            None,
            last,
            f"this run already finished (see {plan.run_dir}); {AGAIN_HINT}",
        )
    if plan.deadline is not None and plan.past_deadline(time.time()):
        return _past_time_limit(plan, plan.deadline)  # before --fresh sets anything aside
    if state.status == FINISHED and options.extend:
        log.info("the run had finished; --extend: training on from its newest checkpoint")
    if options.fresh:
        start_fresh(plan)
        state = RunState(name=plan.name)
    later = setup(plan, state, options, ui, env)
    outcome: Outcome | None = None
    try:
        outcome = _train(plan, state, options, ui, env)
        return outcome
    finally:
        if later is not None and outcome is not None and outcome.status == FINISHED:
            later.wait()  # the older checkpoints are all back when the run ends
        elif later is not None:
            later.stop()  # stopped or failed: no one waits for them; they stay on persist


def _train(
    plan: Plan, state: RunState, options: Options, ui: Reporter, env: dict[str, str]
) -> Outcome:
    supervisor = Supervisor(
        plan,
        state,
        output=ui.output,
        progress=ui.progress,
        python=options.python,
        environ=env,
        mirror_interval=_mirror_interval(env),
        # The same command with --fresh would set this run's checkpoints aside and start over.
        rerun="re-run without --fresh" if options.fresh else RERUN,
    )
    with ui.step("train") as step:
        outcome = supervisor.run()
        if outcome.status == FAILED:
            step.failed(outcome.message)
        elif outcome.status in (STOPPED, INTERRUPTED, PAUSED):
            step.stopped(outcome.message)
        else:
            step.note(outcome.message)
    return outcome


def _past_time_limit(plan: Plan, deadline: float) -> Outcome:
    """run.time_limit counts from the VM's boot on Colab (the session's start on Kaggle): a
    re-run on a VM past it can only stop again at once, so say so instead of setting up and
    stopping."""
    limit = plan.time_limit or 0
    started = format_duration(max(0, round(time.time() - deadline + limit)))
    which = (
        "run.time_limit"
        if plan.time_limit_origin == "run.time_limit"
        else f"run.time_limit, {plan.time_limit_origin}"
    )
    if plan.host.on_kaggle:
        where, fix = (
            "this Kaggle session",
            "continue in a new session (stop this one, then run again; with Files persistence "
            "on, or with this output attached and storage.resume_from pointing at it)",
        )
    else:
        where, fix = (
            "this VM",
            "continue on a new runtime (Runtime > Disconnect and delete runtime)",
        )
    return Outcome(
        STOPPED,
        ExitCode.TIME_LIMIT,
        0,
        None,
        newest_checkpoint(plan.mirror_dir, plan.recipe.run.match),
        f"{where} started {started} ago, past {which} ({format_duration(limit)}), so "
        f"nothing was run: {fix}, or raise run.time_limit (e.g. --set run.time_limit=...)",
    )


def start_fresh(plan: Plan) -> None:
    """--fresh: set earlier checkpoints and kept files aside (one copy of each is kept) and
    forget the run state. A node other than node 0 sets aside its own scratch and state: the
    run folder's checkpoints are node 0's to move."""
    archive = plan.node_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
    for tree in plan.trees:
        manifest = load_manifest(tree.dst)
        # Scratch first, while the mirror is in place to compare with: a file the mirror holds
        # is archived from there, and a second copy would be a slow upload into the Drive quota.
        for path in kept_files(tree):
            relative = path.relative_to(tree.src)
            if holds_version(tree.dst, relative, stamp(path.stat()), manifest):
                path.unlink()
            else:
                _move(path, archive / "scratch" / tree.label / relative)
        if plan.node_rank:
            continue  # the mirror on persist is node 0's
        for path in kept_files(tree, on_persist=True):
            _move(path, archive / "mirrored" / tree.label / path.relative_to(tree.dst))
    if plan.state_file.exists():
        archive.mkdir(parents=True, exist_ok=True)
        shutil.move(str(plan.state_file), archive / "state.json")
    log.info("--fresh: earlier checkpoints and state moved to %s", archive)


def _move(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)


def _mirror_interval(env: Mapping[str, str]) -> float:
    """Seconds between mirror scans; BOOTSTRAP_MIRROR_INTERVAL overrides the default."""
    raw = env.get("BOOTSTRAP_MIRROR_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_MIRROR_INTERVAL
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UsageError(
            f"BOOTSTRAP_MIRROR_INTERVAL={raw!r} is not a positive number of seconds",
            hint="unset it or give e.g. BOOTSTRAP_MIRROR_INTERVAL=2",
        )
    return value


def run_recipe(
    options: Options, reporter: Reporter | None = None, environ: Mapping[str, str] | None = None
) -> Outcome:
    """Everything ``python -m bootstrap RECIPE`` does, from Python."""
    plan = make_plan(options, environ)
    return execute(plan, options, reporter, environ)


__all__: Sequence[str] = ["make_plan", "execute", "run_recipe"]
