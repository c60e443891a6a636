"""What one training attempt came to, and the decision table that says what happens next.

The supervisor measures each attempt into an ``AttemptResult``; ``decide`` reads only that and
the restart count, so the table can be read, and tested, without launching anything: ``None``
means restart (resuming from the newest checkpoint), an ``Ending`` says how the run ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootstrap.errors import ExitCode
from bootstrap.recipe.durations import format_duration
from bootstrap.runner.launch import describe_exit
from bootstrap.runner.state import FAILED, FINISHED, INTERRUPTED, PAUSED, STOPPED
from bootstrap.training.child import EXIT_ENTRY_POINT

# A restarted attempt that dies this soon, having written no checkpoint, is a crash loop.
CRASH_LOOP_SECONDS = 60.0


@dataclass(frozen=True)
class AttemptResult:
    code: int  # the training's exit status; negative: the signal that ended it
    stop_reason: str | None  # INTERRUPTED, STOPPED or PAUSED if a stop was asked by its end
    past_deadline: bool  # run.time_limit had passed when it ended
    quick: bool  # it ended within CRASH_LOOP_SECONDS of its launch
    progressed: bool  # the newest checkpoint changed while it ran
    newest: Path | None  # the newest checkpoint after it: what a restart resumes from


@dataclass(frozen=True)
class Ending:
    status: str  # one of the runstate statuses
    reason: str = ""  # why it FAILED, for the message
    exit_code: ExitCode | None = None  # instead of the status's own


@dataclass
class Tally:
    """This run's count: attempts launched by this Supervisor, not all the RunState holds."""

    restarts_left: int
    attempts: int = 0
    first_resume: Path | None = None  # the checkpoint the first attempt resumed from


def stop_ending(stop_reason: str) -> Ending:
    """A run asked to stop ends at the time limit, after run.stop_after, or interrupted."""
    return Ending(stop_reason if stop_reason in (STOPPED, PAUSED) else INTERRUPTED)


def decide(
    result: AttemptResult,
    *,
    attempts: int,
    restarts_left: int,
    restarts: int,
    callable_entry: bool,
) -> Ending | None:
    """How the run ends after this attempt, or None to restart it. ``attempts`` counts this run's
    attempts, this one included; ``restarts`` is run.restarts, ``restarts_left`` what remains."""
    if result.stop_reason is not None:
        return stop_ending(result.stop_reason)
    if result.code == 0 and result.past_deadline:
        # It saw the deadline itself (Checkpointer.should_stop) and exited
        # before our next poll: still a stop at the time limit, not the end.
        return Ending(STOPPED)
    if result.code == 0:
        return Ending(FINISHED)
    if result.code == EXIT_ENTRY_POINT and callable_entry:
        # bootstrap.training.child found no such module or function: every restart
        # would fail the same way, so say what to fix instead.
        return Ending(
            FAILED,
            "the recipe's entry point was not found (the error line above "
            "says which); fix run.callable or run.setup",
            ExitCode.USAGE,
        )
    how = describe_exit(result.code)
    if restarts_left <= 0:
        return Ending(
            FAILED, f"the training {how} and no restarts are left (run.restarts: {restarts})"
        )
    if attempts > 1 and result.quick and not result.progressed:
        return Ending(
            FAILED,
            f"the training {how} again within {int(CRASH_LOOP_SECONDS)} s "
            "without writing a checkpoint: a crash loop, so it is not relaunched",
        )
    return None


def ending_message(ending: Ending, *, rerun: str, stop_after: float | None) -> tuple[ExitCode, str]:
    """The exit code and the closing line for how the run ended."""
    code, message = {
        FINISHED: (ExitCode.FINISHED, "the training finished"),
        STOPPED: (
            ExitCode.TIME_LIMIT,
            f"stopped at the time limit; {rerun} to continue",
        ),
        PAUSED: (
            ExitCode.FINISHED,
            f"stopped after {format_duration(stop_after or 0)} as "
            f"run.stop_after asks; {rerun} to continue",
        ),
        INTERRUPTED: (
            ExitCode.INTERRUPTED,
            f"interrupted; {rerun} to continue",
        ),
        FAILED: (ExitCode.TRAINING_FAILED, f"the training failed: {ending.reason}"),
    }[ending.status]
    return (code if ending.exit_code is None else ending.exit_code), message


def changed(before: Path | None, after: Path | None) -> bool:
    """Whether the newest checkpoint differs: another file, or the same one written again."""
    return _stamp(after) != _stamp(before)


def _stamp(path: Path | None) -> tuple[str, int] | None:
    if path is None:
        return None
    try:
        return (str(path), path.stat().st_mtime_ns)
    except OSError:
        return None
