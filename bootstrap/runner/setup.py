"""The setup steps of a run: repo, install, data, ``run.prepare``, checkpoints.

Each step is idempotent and skips itself when what it depends on is unchanged, so re-running
after a disconnect redoes only what a fresh VM lost. Each shows as one line of the step list.

They run side by side where nothing orders them (``overlap``): the clone, each data item whose
source and destination are outside the clone, and the checkpoint restore start at once; the
install, and data or checkpoints inside the clone, wait for the clone; data items that land in
the same folder keep the recipe's order; the prepare steps run in order after the install and
every data item, since they read what those put in place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.data.stage import stage_data, use_in_place
from bootstrap.deps.install import install_requirements
from bootstrap.errors import RepoError
from bootstrap.mirror.faults import read_pacer
from bootstrap.options import Options
from bootstrap.plan import DataStep, Plan, PrepareStep
from bootstrap.progress import ProgressFactory
from bootstrap.repo.checkout import sync_repo
from bootstrap.repo.gitsafety import describe_url
from bootstrap.report import Reporter, Step
from bootstrap.runner.kept import LaterRestore, older_checkpoints, restore_kept, restore_source
from bootstrap.runner.overlap import Task, run_tasks
from bootstrap.runner.prepare_steps import run_prepare_step
from bootstrap.runner.state import RunState


def setup(
    plan: Plan, state: RunState, options: Options, ui: Reporter, env: Mapping[str, str]
) -> LaterRestore | None:
    """Everything before the training, each step shown as a step of ``ui``. Returns the
    restore of the older checkpoints, started now, to run beside the training (or None)."""
    for folder in (plan.run_dir, plan.scratch, plan.state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    later = Later()
    run_tasks(setup_tasks(plan, state, options, ui, env, later), ui)
    if not later.checkpoints:
        return None
    # Only now: while the other steps run, the bandwidth is theirs.
    return LaterRestore(plan, later.checkpoints, read_pacer(env), later.source).start()


@dataclass
class Later:
    """What the restore step leaves for after the start: the older checkpoints, and the run
    folder they are in (persist's, or the one in storage.resume_from)."""

    checkpoints: list[Path] = field(default_factory=list)
    source: Path | None = None


def setup_tasks(
    plan: Plan,
    state: RunState,
    options: Options,
    ui: Reporter,
    env: Mapping[str, str],
    later: Later,
) -> list[Task]:
    """The setup steps and what each waits for, in the order the step list names them. The
    restore step puts in ``later`` the older checkpoints it left for ``LaterRestore``."""
    clone = plan.clone_dir

    def in_clone(*paths: Path | None) -> bool:
        return any(path is not None and _overlaps(path, clone) for path in paths)

    tasks = [
        Task("repo", lambda step, progress: sync_the_repo(plan, state, step, progress, env)),
        Task(
            "install",
            lambda step, progress: install(plan, step, progress, python=options.python),
            needs=("repo",),
        ),
    ]
    staged: list[tuple[str, Path]] = []
    titles: list[str] = []
    for item in plan.data:
        title = f"data[{item.index}]"
        titles.append(title)
        if item.in_place:  # writes nothing: nothing to wait for, and no one waits for it
            needs = ["repo"] if in_clone(_local(item.source)) else []
            tasks.append(Task(title, _use_in_place(item), needs=tuple(needs)))
            continue
        needs = ["repo"] if in_clone(item.dest, _local(item.source)) else []
        needs += [earlier for earlier, dest in staged if _overlaps(dest, item.dest)]
        tasks.append(Task(title, _stage(plan, item), needs=tuple(needs)))
        staged.append((title, item.dest))
    trees = [tree.src for tree in plan.trees]
    needs = ["repo"] if in_clone(*trees) else []
    needs += [title for title, dest in staged if any(_overlaps(dest, src) for src in trees)]
    tasks.append(
        Task(
            "checkpoints",
            lambda step, progress: restore(plan, step, progress, env, later, fresh=options.fresh),
            tuple(needs),
        )
    )
    before = ("repo", "install", *titles)
    for prep in plan.prepare:

        def run(step: Step, progress: ProgressFactory, prep: PrepareStep = prep) -> None:
            prepared = run_prepare_step(
                plan, prep, commit=state.commit, python=options.python, environ=env,
                output=ui.output,
            )  # fmt: skip
            (step.skip if prepared.skipped else step.note)(prepared.reason)

        tasks.append(Task(prep.label, run, needs=before))
        before = (*before, prep.label)
    return tasks


def _overlaps(a: Path, b: Path) -> bool:
    """Whether one folder holds the other (or they are the same)."""
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _local(source: str) -> Path | None:
    return None if "://" in source else Path(source)


def _stage(plan: Plan, item: DataStep) -> Callable[[Step, ProgressFactory], None]:
    def run(step: Step, progress: ProgressFactory) -> None:
        staged = stage_data(
            item.source,
            item.dest,
            sha256=item.sha256,
            state_dir=plan.state_dir,
            progress=progress,
            label=f"data[{item.index}]",
        )
        if staged.skipped:
            step.skip(f"already staged in {item.dest}")
        else:
            files = "1 file" if staged.files == 1 else f"{staged.files} files"
            step.note(f"{files} into {item.dest}")

    return run


def _use_in_place(item: DataStep) -> Callable[[Step, ProgressFactory], None]:
    def run(step: Step, progress: ProgressFactory) -> None:
        label = f"data[{item.index}]"
        use_in_place(item.source, sha256=item.sha256, label=label)
        step.skip(f"used in place: {item.source} (not copied; {{data{item.index}}})")

    return run


def restore(
    plan: Plan,
    step: Step,
    progress: ProgressFactory,
    env: Mapping[str, str],
    later: Later,
    *,
    fresh: bool = False,
) -> None:
    """Put the mirrored checkpoints and kept files back on scratch (a new VM): all but the
    older checkpoints, which ``later`` receives for after the start. They come from persist,
    or from storage.resume_from when neither persist nor scratch holds a checkpoint."""
    source = later.source = restore_source(plan, fresh=fresh)
    later.checkpoints += older_checkpoints(plan, source)
    restored = restore_kept(
        plan, progress=progress, pace=read_pacer(env), later=later.checkpoints, source=source
    )
    count = len(later.checkpoints)
    after = f"; {_count(count, 'older checkpoint')} after the start" if count else ""
    origin = f" ({plan.resume_from_origin})" if source != plan.run_dir else ""
    if restored:
        folder_count = sum(path.is_dir() for path in restored)
        counts = ((len(restored) - folder_count, "file"), (folder_count, "checkpoint folder"))
        what = ", ".join(_count(n, noun) for n, noun in counts if n)
        step.note(f"restored {what} from {source}{origin}{after}")
    elif source != plan.run_dir:
        step.skip(f"nothing to restore in {source}{origin}" + after)
    else:
        step.skip("nothing to restore" + after)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def sync_the_repo(
    plan: Plan, state: RunState, step: Step, progress: ProgressFactory, env: Mapping[str, str]
) -> None:
    """Clone or update the repo at ``repo.ref`` and record the commit in the run state."""
    recipe = plan.recipe
    result = sync_repo(
        plan.repo_url,
        plan.clone_dir,
        ref=recipe.repo.ref,
        token=_token(plan, env),
        submodules=recipe.repo.submodules,
        base_dir=recipe.base_dir,
        progress=progress,
    )
    if not plan.work_dir.is_dir():
        raise RepoError(
            f"repo.path {recipe.repo.path!r} is not a folder in {describe_url(plan.repo_url)}",
            hint="fix repo.path in the recipe",
        )
    note = f"{result.action} {describe_url(plan.repo_url)} at {result.commit[:10]}"
    (step.skip if result.action == "unchanged" else step.note)(note)
    state.commit = result.commit
    state.save(plan.state_file)


def install(plan: Plan, step: Step, progress: ProgressFactory, *, python: str) -> None:
    """Install the requirements into ``python``, holding ``install.keep`` at what is there."""
    inst = plan.recipe.install
    installed = install_requirements(
        plan.clone_dir,
        requirements=inst.requirements,
        packages=inst.packages,
        keep=inst.keep,
        pip_args=inst.pip_args,
        python=Path(python),
        state_dir=plan.state_dir,
        log_path=plan.logs_dir / "install.log",
        progress=progress,
    )
    held = ", ".join(f"{name} {version}" for name, version, _ in installed.held)
    kept = f"; kept {held}" if held else ""
    if installed.skipped:
        step.skip("requirements unchanged" + kept)
    elif installed.installer == "none":
        step.skip("nothing to install" + kept)
    else:
        step.note(f"with {installed.installer}{kept}")


def _token(plan: Plan, env: Mapping[str, str]) -> str | None:
    name = plan.recipe.repo.token_env
    if not name:
        return None
    token = env.get(name, "")
    if not token:
        raise RepoError(
            f"repo.token_env names {name}, but that environment variable is empty",
            hint=f"set {name} before running (on Colab: "
            f"import os; from google.colab import userdata; "
            f"os.environ['{name}'] = userdata.get('{name}') in a cell)",
        )
    return token
