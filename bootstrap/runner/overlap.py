"""Run setup steps side by side where they do not depend on each other.

On a new VM the steps wait on different things (GitHub, the package index, Drive for the data,
Drive for the checkpoints), so the time to the first training step can shrink from their sum to
about the slowest one. Each step runs in a thread of its own as soon as the steps it ``needs``
are done; its work is mostly waiting on subprocesses (git, the installer, GNU tar) and on file
reads, so threads are enough, and CPU-bound parts (inflating gzip) stay where they were.

Stopping. When a step fails, or Ctrl-C / Colab's Stop reaches the main thread, the other steps
are stopped: a cancel flag makes their next progress report raise ``StepCancelled`` (every long
Python loop reports progress), and the processes started since the setup began (git and its
remote helpers, the installer, GNU tar) get SIGTERM, again at every wake-up for a step that
starts one late (Linux: found in /proc; elsewhere the steps run to their own end). The stopped
steps get ``_GRACE`` seconds to end. Every step writes its done-marker last, so a stopped one
leaves none and the next run redoes it. Then the first failure is raised, or the
KeyboardInterrupt: the exit code is that step's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bootstrap.errors import StepCancelled
from bootstrap.procs import children, descendants
from bootstrap.progress import ProgressBar, ProgressFactory
from bootstrap.report import Reporter, Step

log = logging.getLogger(__name__)

_POLL = 0.1  # how often the main thread wakes to let a KeyboardInterrupt in
_GRACE = 5.0  # how long stopped steps get to end once asked


@dataclass(frozen=True)
class Task:
    title: str  # as shown in the step list: "repo", "install", "data[0]", ...
    run: Callable[[Step, ProgressFactory], None]  # reports skip/note on the step itself
    needs: tuple[str, ...] = ()


def run_tasks(tasks: Sequence[Task], ui: Reporter) -> None:
    """Run ``tasks``, each once all it needs is done; raise the first failure."""
    titles = [task.title for task in tasks]
    for index, task in enumerate(tasks):
        unknown = [need for need in task.needs if need not in titles[:index]]
        if unknown:  # a programming error: needs name earlier tasks only, so nothing cycles
            raise ValueError(f"{task.title} needs {unknown}, which do not come before it")
    cancel = threading.Event()
    progress = cancellable_progress(ui.progress, cancel)
    # In a notebook kernel other children may be running (a TensorBoard): never stop those.
    others = children(os.getpid())
    ended: queue.SimpleQueue[tuple[str, BaseException | None]] = queue.SimpleQueue()
    pending, running, finished = list(tasks), {}, set()  # type: ignore[var-annotated]
    first: BaseException | None = None
    try:
        while pending or running:
            if first is None:
                for task in [t for t in pending if finished.issuperset(t.needs)]:
                    pending.remove(task)
                    running[task.title] = _start(task, ui, progress, cancel, ended)
            if not running:
                break  # a failure left the rest pending: they never start
            if first is not None:
                _wind_down(cancel, running, others)
                break
            try:
                title, error = ended.get(timeout=_POLL)  # a timeout lets Ctrl-C in
            except queue.Empty:
                continue
            running.pop(title).join()
            if error is None:
                finished.add(title)
            else:
                first = error
    except BaseException:  # KeyboardInterrupt, SystemExit: stop every step, then go
        _wind_down(cancel, running, others)
        raise
    if first is not None:
        raise first


def _wind_down(
    cancel: threading.Event, running: dict[str, threading.Thread], others: set[int]
) -> None:
    """Stop the running steps and wait for them, at most ``_GRACE`` seconds. A step blocked in
    a read that nothing can interrupt (a stalled download) is left to die with the process: it
    has written no marker, and its work folder is removed by the next run."""
    end = time.monotonic() + _GRACE
    while running and time.monotonic() < end:
        _stop(cancel, running, others)  # again and again: a step may start a process late
        for title in [t for t, thread in running.items() if not thread.is_alive()]:
            del running[title]
        time.sleep(_POLL)
    if running:
        log.debug("not waiting any longer for %s to stop", ", ".join(running))


def _start(
    task: Task,
    ui: Reporter,
    progress: ProgressFactory,
    cancel: threading.Event,
    ended: queue.SimpleQueue[tuple[str, BaseException | None]],
) -> threading.Thread:
    def work() -> None:
        error: BaseException | None = None
        try:
            if cancel.is_set():
                raise StepCancelled(task.title)
            with ui.step(task.title) as step:
                try:
                    task.run(step, progress)
                except Exception:
                    if cancel.is_set():  # its git or tar was stopped: not a failure of its own
                        raise StepCancelled(task.title) from None
                    raise
        except BaseException as caught:  # noqa: BLE001 - handed to the main thread
            error = caught
        ended.put((task.title, error))

    thread = threading.Thread(target=work, name=f"setup-{task.title}", daemon=True)
    thread.start()
    return thread


def _stop(cancel: threading.Event, running: dict[str, threading.Thread], others: set[int]) -> None:
    """Ask every running step to stop: the flag, and SIGTERM to the processes they wait on (this
    process's children started since the setup began, and theirs: git and its remote helper,
    the installer, GNU tar). The helpers too: git dies at once, but GitPython reads its stderr
    until every holder of the pipe has closed it. Linux only (from /proc); elsewhere those
    processes run to their end, and the steps with them."""
    if not cancel.is_set():
        cancel.set()
        log.debug("stopping %s", ", ".join(running))
    for pid in descendants(os.getpid(), skip=others):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def cancellable_progress(factory: ProgressFactory, cancel: threading.Event) -> ProgressFactory:
    """``factory``, whose bars raise StepCancelled at their next report once ``cancel`` is set."""

    def open_bar(description: str, total: int | None = None, unit: str = "B") -> ProgressBar:
        if cancel.is_set():
            raise StepCancelled(description)
        return _CancellableBar(factory(description, total, unit), cancel)

    return open_bar


class _CancellableBar:
    """A bar whose every report first checks the cancel flag: the step's own loops stop there."""

    def __init__(self, bar: ProgressBar, cancel: threading.Event):
        self._bar, self._cancel = bar, cancel

    def _check(self) -> None:
        if self._cancel.is_set():
            raise StepCancelled("stopped")

    def advance(self, amount: int) -> None:
        self._check()
        self._bar.advance(amount)

    def set_total(self, total: int | None) -> None:
        self._check()
        self._bar.set_total(total)

    def set_description(self, text: str) -> None:
        self._check()
        self._bar.set_description(text)

    def close(self) -> None:
        self._bar.close()  # never raises: it runs in finally blocks
