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
from bootstrap.mirror.selection import newest_checkpoint
from bootstrap.plan import Plan
from bootstrap.progress import ProgressFactory, no_progress
from bootstrap.recipe.durations import format_duration
from bootstrap.runner.attempts import (
    CRASH_LOOP_SECONDS,
    AttemptResult,
    Ending,
    Tally,
    changed,
    decide,
    ending_message,
    stop_ending,
)
from bootstrap.runner.kept import make_mirror, set_aside_torn_folders
from bootstrap.runner.launch import (
    OutputSink,
    TrainingProcess,
    build_command,
    child_environment,
    describe_exit,
)
from bootstrap.runner.ranks import RankZeroConsole
from bootstrap.runner.state import (
    INTERRUPTED,
    PAUSED,
    RUNNING,
    STOPPED,
    AttemptRecord,
    RunState,
)

log = logging.getLogger(__name__)

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
        progress: ProgressFactory = no_progress,
        environ: dict[str, str] | None = None,
        mirror_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        rerun: str = RERUN,
    ):
        self.plan = plan
        self.rerun = rerun
        self.state = state
        self.output = output
        self._sink: Callable[[bytes], None] = output  # the current attempt's console
        self.progress = progress  # for the final mirror pass, which the user waits for
        self.python = python
        self.environ = dict(os.environ if environ is None else environ)
        self.clock = clock
        self.mirror = make_mirror(
            plan, interval=mirror_interval, fault_hook=persist_fault_hook(self.environ)
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
        self._check_script()
        if run.stop_after is not None:
            self._session_end = self.clock() + run.stop_after
        self.plan.checkpoints.mkdir(parents=True, exist_ok=True)
        if self.mirror is not None:
            self.mirror.start()
        try:
            with self._signals():
                return self._attempt_loop()
        finally:
            if not self._mirrored:  # an unexpected error: still save what can be saved
                self._final_mirror_pass()

    def _attempt_loop(self) -> Outcome:
        """Launch attempts until a stop comes between two or ``decide`` ends the run."""
        run = self.plan.recipe.run
        tally = Tally(restarts_left=run.restarts)
        while (ending := self._stop_before_launch()) is None:
            result = self._run_attempt(tally)
            ending = decide(
                result,
                attempts=tally.attempts,
                restarts_left=tally.restarts_left,
                restarts=run.restarts,
                callable_entry=run.entry_kind == "callable",
            )
            if ending is not None:
                break
            tally.restarts_left -= 1
            self._log_restart(result, tally.restarts_left)
        return self._finish(ending, tally.attempts, tally.first_resume)

    def _stop_before_launch(self) -> Ending | None:
        if limit := self._limit_reached():
            self._stop_reason = self._stop_reason or limit
        return None if self._stop_reason is None else stop_ending(self._stop_reason)

    def _run_attempt(self, tally: Tally) -> AttemptResult:
        """One attempt, resumed from the newest checkpoint when run.resume says how; measured."""
        match = self.plan.recipe.run.match
        set_aside_torn_folders(self.plan)  # before the training looks for its own
        newest = newest_checkpoint(self.plan.checkpoints, match)
        resume: list[str] = []
        if newest is not None and self.plan.resume_args is not None:
            resume = self.plan.resume_for(newest)
        if tally.attempts == 0:
            tally.first_resume = newest if resume else None
        tally.attempts += 1
        started = self.clock()
        code = self._launch(resume, newest if resume else None)
        # Read at once: a Stop that comes later is seen before the next launch instead.
        stop_reason = self._stop_reason
        past_deadline = self._deadline_passed()
        after = newest_checkpoint(self.plan.checkpoints, match)
        return AttemptResult(
            code=code,
            stop_reason=stop_reason,
            past_deadline=past_deadline,
            quick=self.clock() - started < CRASH_LOOP_SECONDS,
            progressed=changed(newest, after),
            newest=after,
        )

    def _log_restart(self, result: AttemptResult, restarts_left: int) -> None:
        restarts = self.plan.recipe.run.restarts
        after = result.newest
        log.warning(
            "the training %s; restarting (restart %d of %d)%s",
            describe_exit(result.code),
            restarts - restarts_left,
            restarts,
            f", resuming from {after.name}" if after and self.plan.resume_args is not None else "",
        )

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

    def _launch(self, resume: list[str], resumed_from: Path | None) -> int:
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
        self._sink = self._console()
        proc = TrainingProcess(
            argv,
            cwd=self.plan.work_dir,
            env=child_environment(self.plan, self.environ),
            log_path=log_path,
            output=self._sink,
            on_terminal=self.plan.recipe.run.stdin == "terminal",
        )
        try:
            code = self._watch(proc)
        finally:
            proc.finish()
        if code != 0 and self._stop_reason is None:
            self._show_rank_crashes(log_path)
        record.ended = time.time()
        record.exit_code = code
        self.state.save(self.plan.state_file)
        return code

    def _console(self) -> Callable[[bytes], None]:
        """Where the training's output is shown: under torchrun, rank 0's only (the attempt
        log keeps every rank's, each line marked with its rank)."""
        if self.plan.recipe.run.launcher == "torchrun":
            return RankZeroConsole(self.output)
        return self.output

    def _show_rank_crashes(self, log_path: Path) -> None:
        """Under torchrun the console shows rank 0 alone, which mostly fails because a peer
        died; show the traceback of each other rank that printed one."""
        if not isinstance(self._sink, RankZeroConsole):
            return
        for rank, traceback in self._sink.crashes():
            self.output(
                f"\nrank {rank}'s last traceback (every rank's output is in {log_path}):\n".encode()
                + traceback
                + (b"" if traceback.endswith(b"\n") else b"\n")
            )

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
        if self.plan.recipe.run.launcher == "torchrun":
            proc.signal_leader(signal.SIGINT)  # torchrun asks each rank once
            if isinstance(self._sink, RankZeroConsole):
                self._sink.hide_launcher()
        else:
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

    def _final_mirror_pass(self) -> None:
        if self.mirror is not None:
            self.mirror.stop(timeout=self._final_mirror_timeout(), progress=self.progress)

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

    def _finish(self, ending: Ending, attempts: int, first_resume: Path | None) -> Outcome:
        # The final mirror pass, before the state says we are done. Bounded: a hung Drive
        # must not hang the cell forever (the files stay on scratch and in the next run).
        # (the mirror itself warns about anything it could not copy)
        self._final_mirror_pass()
        self._mirrored = True
        self.state.status = ending.status
        self.state.save(self.plan.state_file)
        last = newest_checkpoint(self.plan.checkpoints, self.plan.recipe.run.match)
        code, message = ending_message(
            ending, rerun=self.rerun, stop_after=self.plan.recipe.run.stop_after
        )
        return Outcome(ending.status, code, attempts, first_resume, last, message)
