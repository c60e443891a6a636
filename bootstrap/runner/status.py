"""The text of ``--status``: where a run stands, read without touching anything."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from bootstrap.mirror.selection import newest_checkpoint
from bootstrap.plan import Plan
from bootstrap.recipe.durations import format_duration
from bootstrap.runner.kept import is_mirrored
from bootstrap.runner.launch import signal_name
from bootstrap.runner.state import RunState


def describe_status(plan: Plan, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    state = RunState.load(plan.state_file, plan.name)
    match = plan.recipe.run.match
    lines = [f"run          {plan.name}: {state.status}", f"run folder   {plan.run_dir}"]
    if state.commit:
        lines.append(f"commit       {state.commit}")
    lines.append(f"attempts     {len(state.attempts)}")
    for attempt in state.attempts[-5:]:
        started = datetime.fromtimestamp(attempt.started).strftime("%Y-%m-%d %H:%M:%S")
        if attempt.exit_code is None:
            how = "running, or ended without a trace (VM gone)"
        else:
            how = f"exit {attempt.exit_code}"
            if attempt.exit_code < 0:  # the attempt's log may show a traceback: say why
                how += f" (ended by {signal_name(-attempt.exit_code)})"
        resumed = (
            f", resumed from {Path(attempt.resumed_from).name}" if attempt.resumed_from else ""
        )
        lines.append(f"  #{attempt.number:<3} {started}  {how}{resumed}")
    local = newest_checkpoint(plan.checkpoints, match)
    mirrored = newest_checkpoint(plan.mirror_dir, match)
    if local is None and mirrored is None:
        lines.append("checkpoint   none yet")
    if local is not None:
        safe = _mirrored(plan, local)
        lines.append(
            f"checkpoint   {local} ({_age(local, now)} old; "
            + ("mirrored)" if safe else "NOT mirrored yet)")
        )
    if mirrored is not None:
        lines.append(f"mirrored     {mirrored} ({_age(mirrored, now)} old)")
    logs = sorted(plan.logs_dir.glob("attempt-*.log")) if plan.logs_dir.is_dir() else []
    lines.append(f"logs         {plan.logs_dir}" + (f" (latest: {logs[-1].name})" if logs else ""))
    return lines


def _mirrored(plan: Plan, local: Path) -> bool:
    """Whether the mirror holds this version of ``local``, by the mirror's own rule."""
    try:
        return is_mirrored(plan, local)
    except OSError:  # persist failing: nothing there can be counted on
        return False


def _age(path: Path, now: float) -> str:
    return format_duration(max(0.0, now - path.stat().st_mtime))
