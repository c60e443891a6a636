"""``run.prepare``: commands run in ``{repo}`` after the data is staged, before the training.

Real repositories ship a preparation step the training needs first: nanoGPT's
``data/shakespeare_char/prepare.py`` turns the text into ``train.bin`` and ``val.bin`` next to
itself. Each command runs like the training does (same interpreter, environment and working
folder, its own process group, output passed through to the console and kept in
``{run}/logs/prepare-N.log``) and must exit 0, or the run stops with exit code 3 before the
training starts.

When a command runs again. Its success is recorded in a marker on scratch, keyed by the
command line and the clone's commit, so it runs once per VM, and again after the repo moved to
another commit or the command changed; and, when ``creates`` is given, again whenever one of
those globs matches nothing (the outputs are gone). ``creates`` alone never skips a command:
a command killed half-way may have left some of its outputs behind, and it left no marker.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bootstrap.errors import PrepareError
from bootstrap.fsutil import Marker
from bootstrap.plan import Plan, PrepareStep
from bootstrap.runner.launch import OutputSink, TrainingProcess, child_environment, describe_exit

log = logging.getLogger(__name__)

_TAIL_BYTES = 4000


@dataclass(frozen=True)
class PrepareResult:
    skipped: bool
    reason: str  # why it was skipped, or how long it took


def run_prepare_step(
    plan: Plan,
    step: PrepareStep,
    *,
    commit: str | None,
    python: str,
    environ: Mapping[str, str],
    output: OutputSink,
) -> PrepareResult:
    """Run one ``run.prepare`` command unless it already succeeded here; raise on failure."""
    marker = Marker(plan.state_dir / f"{step.label}.json")
    key = {"command": list(step.command), "commit": commit}
    missing = missing_outputs(plan.work_dir, step.creates)
    done = marker.is_done(key)
    if done and not missing:
        return PrepareResult(True, "already done on this VM")
    if done:
        log.info("%s: %s matches nothing; running it again", step.label, missing[0])
    marker.clear()
    argv = [python, *step.command]
    log_path = plan.logs_dir / f"{step.label.replace('[', '-').rstrip(']')}.log"
    log.debug("%s argv: %s", step.label, argv)
    started = time.monotonic()
    code = _run(plan, argv, log_path, environ, output)
    if code != 0:
        raise PrepareError(
            f"run.{step.label} ({' '.join(step.command)}) {describe_exit(code)}",
            hint=f"see {log_path}; fix the command or the data it reads, then run again",
            details=_tail(log_path),
        )
    if missing := missing_outputs(plan.work_dir, step.creates):
        raise PrepareError(
            f"run.{step.label} ({' '.join(step.command)}) exited 0 but run.{step.label}.creates "
            f"{missing[0]!r} matches nothing in {plan.work_dir}",
            hint="fix creates (globs relative to {repo}) or the command",
        )
    marker.mark_done(key)
    return PrepareResult(False, f"took {time.monotonic() - started:.1f} s")


def missing_outputs(work_dir: Path, globs: tuple[str, ...]) -> list[str]:
    """The globs (relative to ``work_dir``, or absolute) that match no file."""
    missing = []
    for pattern in globs:
        path = Path(pattern)
        root, rel = (
            (Path(path.anchor), str(path.relative_to(path.anchor)))
            if path.is_absolute()
            else (work_dir, pattern)
        )
        if next(root.glob(rel), None) is None:
            missing.append(pattern)
    return missing


def _run(
    plan: Plan, argv: list[str], log_path: Path, environ: Mapping[str, str], output: OutputSink
) -> int:
    proc = TrainingProcess(
        argv,
        cwd=plan.work_dir,
        env=child_environment(plan, environ),
        log_path=log_path,
        output=output,
        on_terminal=plan.recipe.run.stdin == "terminal",
    )
    try:
        code = proc.wait()
    except BaseException:
        # Ctrl-C reaches only the tool (the command has its own process group): end it too.
        proc.signal(signal.SIGKILL)
        raise
    finally:
        proc.finish()
    return code if code is not None else -signal.SIGKILL


def _tail(log_path: Path) -> str:
    with contextlib.suppress(OSError), open(log_path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - _TAIL_BYTES))
        lines = handle.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-15:])
    return ""
