"""Supervise the training: attempts, restarts, the time budget and the user's Stop.

Signals are turned into plain requests here: the first SIGINT or SIGTERM (Colab's Stop button)
asks the training to stop and waits ``run.stop_grace`` for it; a second one stops it at once
(Colab sends SIGKILL 0.5 s after its second press, so there is no time to be polite). Either way
the checkpoints are mirrored before the supervisor returns.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bootstrap.errors import BootstrapError, ExitCode
from bootstrap.mirror.faults import persist_fault_hook
from bootstrap.mirror.files import newest_checkpoint
from bootstrap.mirror.thread import CheckpointMirror
from bootstrap.plan import Plan
from bootstrap.recipe.durations import format_duration
from bootstrap.runner.launch import (
    OutputSink,
    TrainingProcess,
    build_command,
    child_environment,
    describe_exit,
)
from bootstrap.runner.state import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    PAUSED,
    RUNNING,
    STOPPED,
    AttemptRecord,
    RunState,
)
from bootstrap.training.child import EXIT_ENTRY_POINT

log = logging.getLogger(__name__)

# A restarted attempt that dies this soon, having written no checkpoint, is a crash loop.
CRASH_LOOP_SECONDS = 60.0
_POLL = 0.1
# How long the last mirror pass may take: a large checkpoint on a slow Drive, but bounded.
FINAL_MIRROR_SECONDS = 300.0
FORCED_MIRROR_SECONDS = 5.0


@dataclass(frozen=True)
class Outcome:
    status: str  # one of the runstate statuses
    exit_code: ExitCode
    attempts: int
    resumed_from: Path | None  # the checkpoint the first attempt of this run resumed from
    last_checkpoint: Path | None
    message: str


class EntryPointMissing(BootstrapError):
    """run.script names no file: a recipe mistake, found at launch (run.prepare may create it)."""

    exit_code = ExitCode.USAGE


RERUN = "re-run the same command"  # how a stopped run's message says to continue it


class Supervisor:
    def __init__(
        self,
        plan: Plan,
        state: RunState,
        *,
        output: OutputSink,
        python: str,
        environ: dict[str, str] | None = None,
        mirror_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        rerun: str = RERUN,
    ):
        self.plan = plan
        self.rerun = rerun
        self.state = state
        self.output = output
        self.python = python
        self.environ = dict(os.environ if environ is None else environ)
        self.clock = clock
        self.mirror = CheckpointMirror(
            plan.checkpoints,
            plan.mirror_dir,
            plan.recipe.run.match,
            interval=mirror_interval,
            fault_hook=persist_fault_hook(self.environ),
        )
        self._stop_reason: str | None = None  # INTERRUPTED, STOPPED (time limit) or PAUSED
        self._session_end: float | None = None  # from run.stop_after, set when the run starts
        self._force = threading.Event()
        self._mirrored = False

    # -- signals ---------------------------------------------------------------------------

    def request_stop(self, reason: str = INTERRUPTED) -> None:
        """Ask for a clean stop; a second request stops the training at once."""
        if self._stop_reason is None:
            self._stop_reason = reason
        else:
            self._force.set()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def handler(signum: int, frame: object) -> None:
            name = signal.Signals(signum).name
            if self._stop_reason is None:
                log.warning("%s received: asking the training to stop", name)
            else:
                log.warning("%s received again: stopping the training now", name)
            self.request_stop(INTERRUPTED)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> Outcome:
        run = self.plan.recipe.run
        restarts_left = run.restarts
        first_resume: Path | None = None
        attempts_here = 0
        self._check_script()
        if run.stop_after is not None:
            self._session_end = self.clock() + run.stop_after
        self.plan.checkpoints.mkdir(parents=True, exist_ok=True)
        self.mirror.start()
        try:
            with self._signals():
                while True:
                    if limit := self._limit_reached():
                        self._stop_reason = self._stop_reason or limit
                    if self._stop_reason is not None:
                        return self._stopped(attempts_here, first_resume)
                    newest = newest_checkpoint(self.plan.checkpoints, run.match)
                    resume: list[str] = []
                    if newest is not None and self.plan.resume_args is not None:
                        resume = self.plan.resume_for(newest)
                    if attempts_here == 0:
                        first_resume = newest if resume else None
                    attempts_here += 1
                    started = self.clock()
                    code = self._attempt(resume, newest if resume else None)
                    if self._stop_reason is not None:
                        return self._stopped(attempts_here, first_resume)
                    if code == 0 and self._deadline_passed():
                        # It saw the deadline itself (Checkpointer.should_stop) and exited
                        # before our next poll: still a stop at the time limit, not the end.
                        return self._finish(STOPPED, attempts_here, first_resume)
                    if code == 0:
                        return self._finish(FINISHED, attempts_here, first_resume)
                    if code == EXIT_ENTRY_POINT and run.entry_kind == "callable":
                        # bootstrap.training.child found no such module or function: every restart
                        # would fail the same way, so say what to fix instead.
                        return self._finish(
                            FAILED,
                            attempts_here,
                            first_resume,
                            "the recipe's entry point was not found (the error line above "
                            "says which); fix run.callable or run.setup",
                            ExitCode.USAGE,
                        )
                    after = newest_checkpoint(self.plan.checkpoints, run.match)
                    progressed = _stamp(after) != _stamp(newest)
                    quick = self.clock() - started < CRASH_LOOP_SECONDS
                    how = describe_exit(code)
                    if restarts_left <= 0:
                        return self._finish(
                            FAILED,
                            attempts_here,
                            first_resume,
                            f"the training {how} and no restarts are left "
                            f"(run.restarts: {run.restarts})",
                        )
                    if attempts_here > 1 and quick and not progressed:
                        return self._finish(
                            FAILED,
                            attempts_here,
                            first_resume,
                            f"the training {how} again within {int(CRASH_LOOP_SECONDS)} s "
                            "without writing a checkpoint: a crash loop, so it is not relaunched",
                        )
                    restarts_left -= 1
                    log.warning(
                        "the training %s; restarting (restart %d of %d)%s",
                        how,
                        run.restarts - restarts_left,
                        run.restarts,
                        f", resuming from {after.name}"
                        if after and self.plan.resume_args is not None
                        else "",
                    )
        finally:
            if not self._mirrored:  # an unexpected error: still save what can be saved
                self.mirror.stop(timeout=self._final_mirror_timeout())

    def _check_script(self) -> None:
        """Fail before launching when run.script is not a file (Python would only crash)."""
        if self.plan.recipe.run.entry_kind != "script":
            return
        path = self.plan.work_dir / self.plan.entry
        if path.is_file():
            return
        others = [p.name for p in path.parent.glob("*.py")] if path.parent.is_dir() else []
        close = difflib.get_close_matches(path.name, others, n=1)
        hint = (
            f"did you mean {str(Path(self.plan.entry).with_name(close[0]))!r}?"
            if close
            else "give a path relative to the repository's working folder ({repo})"
        )
        raise EntryPointMissing(f"run.script: {path} is not a file", hint=hint)

    def _attempt(self, resume: list[str], resumed_from: Path | None) -> int:
        number = len(self.state.attempts) + 1
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        log_path = self.plan.logs_dir / f"attempt-{number:03d}-{stamp}.log"
        argv = build_command(self.plan, resume, self.python)
        record = AttemptRecord(
            number=number,
            started=time.time(),
            log=str(log_path),
            resumed_from=str(resumed_from) if resumed_from else None,
        )
        self.state.attempts.append(record)
        self.state.status = RUNNING
        self.state.save(self.plan.state_file)
        if resumed_from:
            log.info("attempt %d: resuming from %s", number, resumed_from)
        else:
            log.info("attempt %d: starting", number)
        log.debug("argv: %s", argv)
        proc = TrainingProcess(
            argv,
            cwd=self.plan.work_dir,
            env=child_environment(self.plan, self.environ),
            log_path=log_path,
            output=self.output,
            terminal_stdin=self.plan.recipe.run.stdin == "terminal",
        )
        try:
            code = self._watch(proc)
        finally:
            proc.finish()
        record.ended = time.time()
        record.exit_code = code
        self.state.save(self.plan.state_file)
        return code

    def _watch(self, proc: TrainingProcess) -> int:
        while (code := proc.wait(_POLL)) is None:
            if self._stop_reason is None and (limit := self._limit_reached()):
                what = "time limit" if limit == STOPPED else "run.stop_after"
                log.warning("%s reached: asking the training to stop", what)
                self._stop_reason = limit
            if self._stop_reason is not None:
                return self._stop(proc)
        return code

    def _stop(self, proc: TrainingProcess) -> int:
        grace = self.plan.recipe.run.stop_grace
        proc.signal(signal.SIGINT)
        end = time.monotonic() + grace
        while (code := proc.wait(_POLL)) is None:
            if self._force.is_set() or time.monotonic() >= end:
                if not self._force.is_set():
                    log.warning(
                        "the training did not stop within %s; ending it", format_duration(grace)
                    )
                proc.signal(signal.SIGKILL)
                return proc.wait() or -signal.SIGKILL
        return code

    def _final_mirror_timeout(self) -> float:
        # After a second Stop, Colab kills us within a second: do what fits.
        return FORCED_MIRROR_SECONDS if self._force.is_set() else FINAL_MIRROR_SECONDS

    def _deadline_passed(self) -> bool:
        return self.plan.past_deadline(self.clock())

    def _limit_reached(self) -> str | None:
        """STOPPED at the time limit, PAUSED at the end of run.stop_after, else None."""
        if self._deadline_passed():
            return STOPPED
        if self._session_end is not None and self.clock() >= self._session_end:
            return PAUSED
        return None

    # -- endings ---------------------------------------------------------------------------

    def _stopped(self, attempts: int, first_resume: Path | None) -> Outcome:
        if self._stop_reason in (STOPPED, PAUSED):
            return self._finish(self._stop_reason, attempts, first_resume)
        return self._finish(INTERRUPTED, attempts, first_resume)

    def _finish(
        self,
        status: str,
        attempts: int,
        first_resume: Path | None,
        reason: str = "",
        exit_code: ExitCode | None = None,
    ) -> Outcome:
        # The final mirror pass, before the state says we are done. Bounded: a hung Drive
        # must not hang the cell forever (the files stay on scratch and in the next run).
        # (the mirror itself warns about anything it could not copy)
        self.mirror.stop(timeout=self._final_mirror_timeout())
        self._mirrored = True
        self.state.status = status
        self.state.save(self.plan.state_file)
        last = newest_checkpoint(self.plan.checkpoints, self.plan.recipe.run.match)
        code, message = {
            FINISHED: (ExitCode.FINISHED, "the training finished"),
            STOPPED: (
                ExitCode.TIME_LIMIT,
                f"stopped at the time limit; {self.rerun} to continue",
            ),
            PAUSED: (
                ExitCode.FINISHED,
                f"stopped after {format_duration(self.plan.recipe.run.stop_after or 0)} as "
                f"run.stop_after asks; {self.rerun} to continue",
            ),
            INTERRUPTED: (
                ExitCode.INTERRUPTED,
                f"interrupted; {self.rerun} to continue",
            ),
            FAILED: (ExitCode.TRAINING_FAILED, f"the training failed: {reason}"),
        }[status]
        return Outcome(
            status, code if exit_code is None else exit_code, attempts, first_resume, last, message
        )


def _stamp(path: Path | None) -> tuple[str, int] | None:
    if path is None:
        return None
    try:
        return (str(path), path.stat().st_mtime_ns)
    except OSError:
        return None
