"""The setup steps of a run, in order: repo, install, data, ``run.prepare``, checkpoints.

Each step is idempotent and skips itself when what it depends on is unchanged, so re-running
after a disconnect redoes only what a fresh VM lost. Each shows as one line of the step list.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bootstrap.data.stage import stage_data
from bootstrap.deps.install import install_requirements
from bootstrap.errors import RepoError
from bootstrap.options import Options
from bootstrap.plan import Plan
from bootstrap.repo.checkout import sync_repo
from bootstrap.repo.gitsafety import describe_url
from bootstrap.report import Reporter
from bootstrap.runner.kept import restore_kept
from bootstrap.runner.prepare_steps import run_prepare_step
from bootstrap.runner.state import RunState


def setup(
    plan: Plan, state: RunState, options: Options, ui: Reporter, env: Mapping[str, str]
) -> None:
    """Everything before the training: each step in turn, each shown as a step of ``ui``."""
    for folder in (plan.run_dir, plan.scratch, plan.state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    sync_the_repo(plan, state, ui, env)
    install(plan, ui, python=options.python)
    for item in plan.data:
        with ui.step(f"data[{item.index}]") as step:
            staged = stage_data(
                item.source,
                item.dest,
                sha256=item.sha256,
                state_dir=plan.state_dir,
                progress=ui.progress,
                label=f"data[{item.index}]",
            )
            if staged.skipped:
                step.skip(f"already staged in {item.dest}")
            else:
                files = "1 file" if staged.files == 1 else f"{staged.files} files"
                step.note(f"{files} into {item.dest}")
    for prep in plan.prepare:
        with ui.step(prep.label) as step:
            prepared = run_prepare_step(
                plan,
                prep,
                commit=state.commit,
                python=options.python,
                environ=env,
                output=ui.output,
            )
            (step.skip if prepared.skipped else step.note)(prepared.reason)
    with ui.step("checkpoints") as step:
        restored = restore_kept(plan, progress=ui.progress)
        if restored:
            folder_count = sum(path.is_dir() for path in restored)
            counts = ((len(restored) - folder_count, "file"), (folder_count, "checkpoint folder"))
            what = ", ".join(f"{n} {noun}{'s' if n != 1 else ''}" for n, noun in counts if n)
            step.note(f"restored {what} from {plan.run_dir}")
        else:
            step.skip("nothing to restore")


def sync_the_repo(plan: Plan, state: RunState, ui: Reporter, env: Mapping[str, str]) -> None:
    """Clone or update the repo at ``repo.ref`` and record the commit in the run state."""
    recipe = plan.recipe
    with ui.step("repo") as step:
        result = sync_repo(
            plan.repo_url,
            plan.clone_dir,
            ref=recipe.repo.ref,
            token=_token(plan, env),
            submodules=recipe.repo.submodules,
            base_dir=recipe.base_dir,
            progress=ui.progress,
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


def install(plan: Plan, ui: Reporter, *, python: str) -> None:
    """Install the requirements into ``python``, holding ``install.keep`` at what is there."""
    inst = plan.recipe.install
    with ui.step("install") as step:
        installed = install_requirements(
            plan.clone_dir,
            requirements=inst.requirements,
            packages=inst.packages,
            keep=inst.keep,
            pip_args=inst.pip_args,
            python=Path(python),
            state_dir=plan.state_dir,
            log_path=plan.logs_dir / "install.log",
            progress=ui.progress,
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
