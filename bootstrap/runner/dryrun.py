"""The text of ``--dry-run``: the resolved plan, read without touching anything."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from bootstrap.mirror.selection import newest_checkpoint
from bootstrap.options import Options
from bootstrap.plan import Plan
from bootstrap.recipe.durations import format_duration
from bootstrap.repo.gitsafety import describe_url
from bootstrap.runner.kept import kept_files
from bootstrap.runner.launch import build_command
from bootstrap.runner.state import FINISHED, RunState


def describe_plan(plan: Plan, options: Options) -> list[str]:
    """The --dry-run text: every path, and what a run would skip. Reads, never writes."""
    recipe = plan.recipe
    run = recipe.run
    state = RunState.load(plan.state_file, plan.name)
    lines = [
        f"recipe       {recipe.source_path or '(mapping)'}",
        f"host         {plan.host.describe()}" + (" (--smoke: CPU only)" if plan.smoke else ""),
        f"persist      {plan.persist}  [{plan.persist_origin}]",
        f"scratch      {plan.scratch}  [{plan.scratch_origin}]",
        f"run folder   {plan.run_dir}",
        f"run state    {state.status}, {len(state.attempts)} attempt(s) so far",
    ]
    if state.status == FINISHED and not (options.fresh or options.extend):
        lines.append("             a run would report 'already finished' (--extend, --fresh)")
    ref = recipe.repo.ref or "the remote's HEAD"
    clone_state = (
        "exists, would update if ref moved"
        if (plan.clone_dir / ".git").exists()
        else ("exists" if plan.clone_dir.exists() else "would clone")
    )
    lines += [
        f"repo         {describe_url(plan.repo_url)} @ {ref}",
        f"  clone      {plan.clone_dir}  ({clone_state})",
        f"  {{repo}}     {plan.work_dir}",
        f"install      requirements: {_requirements(recipe.install.requirements)}; "
        f"keep: {', '.join(recipe.install.keep) or 'nothing'} (skipped when unchanged)",
    ]
    for item in plan.data:
        status = (
            "MISSING: a run would stop here"
            if not item.is_url and not Path(item.source).exists()
            else "skipped when already staged"
        )
        lines.append(f"data[{item.index}]      {item.source} -> {item.dest} ({status})")
    for prep in plan.prepare:
        creates = f"; outputs {', '.join(prep.creates)}" if prep.creates else ""
        lines.append(
            f"{prep.label:<13}{shlex.join([options.python, *prep.command])} "
            f"(once per VM and commit{creates})"
        )
    main, *kept = plan.trees
    mirrored = kept_files(main, on_persist=True)
    newest = newest_checkpoint(plan.checkpoints, run.match)
    restore = (
        "" if newest or not mirrored else f", {len(mirrored)} would be restored from the mirror"
    )
    lines += [
        f"checkpoints  {plan.checkpoints}{restore}",
        f"  mirror     {plan.mirror_dir} ({len(mirrored)} file(s); the whole folder"
        + (f" but {', '.join(run.exclude)}" if run.exclude else "")
        + ")",
    ]
    for tree in kept:
        # "runs" and "runs/**/*" are one run.keep entry: a file, or a folder and all inside.
        entries = [str(tree.src / g) for g in tree.include if not g.endswith("/**/*")]
        lines.append(
            f"  keep       {', '.join(entries) or tree.src} -> {tree.dst} "
            f"({len(kept_files(tree, on_persist=True))} file(s))"
        )
    candidate = newest or newest_checkpoint(plan.mirror_dir, run.match)
    resume: list[str] = []
    if candidate is not None and plan.resume_args is not None and not options.fresh:
        target = (
            plan.checkpoints / candidate.relative_to(plan.mirror_dir)
            if candidate.is_relative_to(plan.mirror_dir)
            else candidate
        )
        resume = plan.resume_for(target)
    argv = build_command(plan, resume, options.python)
    lines += [
        f"command      {shlex.join(argv)}",
        f"  in         {plan.work_dir}",
        f"  restarts   {run.restarts}; stop_grace {format_duration(run.stop_grace)}"
        + (f"; time_limit {format_duration(run.time_limit)}" if run.time_limit else "")
        + (
            " (past it already: a run would stop at once)"
            if plan.past_deadline(time.time())
            else ""
        )
        + (f"; stop_after {format_duration(run.stop_after)}" if run.stop_after else ""),
        f"  logs       {plan.logs_dir}",
    ]
    if run.entry_kind == "callable":
        lines.append(f"  callable   {run.entry} with kwargs {plan.kwargs}")
    return lines


def _requirements(value: object) -> str:
    if value == "auto":
        return "auto"
    files = list(value) if isinstance(value, (list, tuple)) else []
    return ", ".join(str(Path(f)) for f in files) or "none"
