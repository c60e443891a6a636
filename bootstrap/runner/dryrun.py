"""The text of ``--dry-run``: the resolved plan, read without touching anything."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from bootstrap.errors import BootstrapError
from bootstrap.mirror.selection import newest_checkpoint
from bootstrap.options import Options
from bootstrap.plan import Plan
from bootstrap.recipe.durations import format_duration
from bootstrap.repo.gitsafety import describe_url
from bootstrap.runner.kept import kept_files, restore_source, trees_from
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
        missing = not item.is_url and not Path(item.source).exists()
        if missing:
            status = "MISSING: a run would stop here"
        elif item.in_place:
            status = f"a folder used in place, not copied: {{data{item.index}}}"
        else:
            status = "skipped when already staged"
        where = "" if item.in_place else f" -> {item.dest}"
        lines.append(f"data[{item.index}]      {item.source}{where} ({status})")
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
    earlier = _earlier_run(plan, options)
    lines += [
        f"checkpoints  {plan.checkpoints}{restore}",
        *earlier,
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
        + (
            f"; time_limit {format_duration(plan.time_limit)}"
            + ("" if plan.time_limit_origin == "run.time_limit" else f" ({plan.time_limit_origin})")
            if plan.time_limit
            else ""
        )
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


def _earlier_run(plan: Plan, options: Options) -> list[str]:
    """The storage.resume_from line: where a run would restore from, read only."""
    if plan.resume_from is None:
        return []
    head = f"  resume     {plan.resume_from} [{plan.resume_from_origin}]"
    try:
        source = restore_source(plan, fresh=options.fresh)
    except BootstrapError as error:
        return [f"{head}: a run would stop here: {error.message}"]
    if source == plan.run_dir:
        return [f"{head} (unused: {'--fresh' if options.fresh else 'this run has checkpoints'})"]
    found = len(kept_files(trees_from(plan, source)[0], on_persist=True))
    return [f"{head}: {found} file(s) in {source} would be restored (read only)"]


def _requirements(value: object) -> str:
    if value == "auto":
        return "auto"
    files = list(value) if isinstance(value, (list, tuple)) else []
    return ", ".join(str(Path(f)) for f in files) or "none"
