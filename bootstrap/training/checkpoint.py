"""Checkpointer: atomic, verified, resumable checkpoints for training code.

One generation is one file, ``step-000000042.pt``, a plain ``torch.save`` of::

    {"format": "colab-bootstrap/1", "step": 42,
     "objects": {"model": model.state_dict(), "optimizer": ...},
     "rng": {"python": ..., "numpy": ..., "torch": ..., "cuda": [...]}}

so it loads with ``torch.load(path, weights_only=True)`` and nothing of ours: a user is never
locked in. A generation is committed atomically (temp file in the same folder, flush, fsync,
``os.replace``, fsync the folder): a reader sees the old file set or the new one, never half a
file, and a kill at any instant costs at most the generation being written. Older generations
are deleted only after the new one is committed. Because a generation is a single file, the
rename is the commit; no separate marker is needed.

This module is imported by training processes only (it imports torch); the supervisor never
imports it.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import pickle
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import torch

from bootstrap.fsutil import atomic_writer
from bootstrap.training.diskwrite import checkpoint_file
from bootstrap.training.rng_state import GeneratorState, capture_rng, restore_rng
from bootstrap.training.serialization import serialize
from bootstrap.training.staging import Staging
from bootstrap.training.weights_only import refuse_what_restore_cannot_load

log = logging.getLogger(__name__)

FORMAT = "colab-bootstrap/1"
_NAME = re.compile(r"^step-(\d{9,})\.pt$")
DEFAULT_DIR = Path("checkpoints")


def generation_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:09d}.pt"


def list_generations(folder: Path) -> list[tuple[int, Path]]:
    """Committed generations in ``folder``, newest first."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if (match := _NAME.match(entry.name)) and entry.is_file():
                found.append((int(match.group(1)), Path(entry.path)))
    return sorted(found, reverse=True)


def _process_group() -> Any:
    """``torch.distributed`` when its default process group is up (under torchrun), else
    None."""
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _is_writer() -> bool:
    """Only global rank 0 writes when torch.distributed is initialised."""
    dist = _process_group()
    return dist is None or bool(dist.get_rank() == 0)


def _across_ranks(values: list[int], dist: Any) -> tuple[list[int], list[int]]:
    """The element-wise (max, min) of ``values`` over every rank: a collective, which every
    rank must call at the same point. NCCL reduces CUDA tensors only; other backends take CPU
    ones."""
    device = "cpu"
    if dist.get_backend() == "nccl":
        device = f"cuda:{torch.cuda.current_device()}"
    both = torch.tensor([*values, *(-v for v in values)], dtype=torch.int64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    found = [int(v) for v in both.tolist()]
    return found[: len(values)], [-v for v in found[len(values) :]]


class Checkpointer:
    """Save and restore training state in ``folder``, keeping the newest ``keep`` generations.

    ``save(step, model=model, optimizer=opt)`` stores every object's ``state_dict()`` with the
    RNG states; ``restore(model=model, optimizer=opt)`` loads the newest readable generation into
    the same objects and returns the step to continue from (0 when there is nothing).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        keep: int = 3,
        *,
        async_save: bool = False,
        deadline: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"keep must be an int of at least 1, got {keep!r}")
        self.folder = Path(folder)
        self.keep = keep
        self.async_save = async_save
        self.deadline = deadline
        self._clock = clock
        self._stop_signal: str | None = None
        self._stop_agreed = False  # every rank agreed to stop (under torch.distributed)
        self._handlers_installed = False
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._swept = False
        self._lock = threading.Lock()
        self._staging = Staging()
        self._previous_handlers: dict[int, Any] = {}
        self._highest: int | None = None  # step of the newest generation in the folder

    @classmethod
    def from_env(cls, keep: int = 3, **kwargs: Any) -> Checkpointer:
        """Bound to the recipe's ``run.checkpoints`` inside a run; ./checkpoints outside one."""
        folder = os.environ.get("BOOTSTRAP_CHECKPOINTS") or DEFAULT_DIR
        raw_deadline = os.environ.get("BOOTSTRAP_DEADLINE")
        deadline = float(raw_deadline) if raw_deadline else None
        kwargs.setdefault("deadline", deadline)
        return cls(folder, keep, **kwargs)

    # -- stopping --------------------------------------------------------------------------

    @property
    def should_stop(self) -> bool:
        """True once SIGINT/SIGTERM arrived or the recipe's time limit passed.

        The first access installs the signal handlers (main thread only), so a loop that
        checks ``should_stop`` gets to save and return instead of dying mid-epoch.

        Under torch.distributed (torchrun) the ranks agree: it is True on every rank as soon
        as one of them was asked to stop, so they all stop at the same step and none is left
        waiting in a collective for the others. That makes it a collective itself: read it on
        every rank at the same point of the loop, as the loss is all-reduced.
        """
        self.install_signal_handlers()
        asked = self._stop_signal is not None or (
            self.deadline is not None and self._clock() >= self.deadline
        )
        if self._stop_agreed:
            return True
        dist = _process_group()
        if dist is None:
            return asked
        (anyone,), _ = _across_ranks([int(asked)], dist)
        self._stop_agreed = bool(anyone)
        return self._stop_agreed

    def install_signal_handlers(self) -> None:
        if self._handlers_installed or threading.current_thread() is not threading.main_thread():
            return
        self._handlers_installed = True
        self._previous_handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: object) -> None:
            if self._stop_signal is not None:
                # A second request: stop the hard way, as if nobody had asked nicely.
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            self._stop_signal = signal.Signals(signum).name
            log.warning("%s received: will stop after the next checkpoint", self._stop_signal)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    def _uninstall_signal_handlers(self) -> None:
        """Give Ctrl-C back to the code after the training (an evaluation, the next cell)."""
        on_main = threading.current_thread() is threading.main_thread()
        if not (self._handlers_installed and on_main):
            return
        for sig, previous in self._previous_handlers.items():
            if previous is not None:  # None: set from C, which Python cannot put back
                signal.signal(sig, previous)
        self._handlers_installed = False

    # -- saving ----------------------------------------------------------------------------

    def save(self, step: int, *, blocking: bool | None = None, **objects: Any) -> Path | None:
        """Commit generation ``step``. Returns its path (None on ranks that do not write).

        With ``blocking=False`` (or ``async_save=True``) the state is copied to CPU memory
        here and written by a background thread; at most one write is in flight, and its error,
        if any, is raised by the next ``save``, ``wait`` or ``close``. The CPU copies are kept for
        the next async save, which then only copies into them (``close`` frees them).
        """
        self._raise_pending()
        step = _checked_step(step)
        if not _is_writer():
            return None
        states = {name: _stateful(name, obj).state_dict() for name, obj in objects.items()}
        for name, state in states.items():
            refuse_what_restore_cannot_load(state, name)
        payload = {"format": FORMAT, "step": step, "objects": states, "rng": capture_rng()}
        self._warn_if_below_newest(step)
        path = generation_path(self.folder, step)
        background = self.async_save if blocking is None else not blocking
        if not background:
            self._write(payload, path, staged=False)
            return path
        self.wait()  # at most one write in flight
        # The caller may change the tensors as soon as we return, so copy them now.
        payload = self._staging.copy(payload)
        self._writer = threading.Thread(
            target=self._write_in_background,
            args=(payload, path),
            name="checkpoint-writer",
            daemon=False,
        )
        self._writer.start()
        return path

    def wait(self) -> None:
        """Wait for a background write; raise its error if it failed."""
        writer = self._writer
        if writer is not None:
            writer.join()
            self._writer = None
        self._raise_pending()

    def close(self) -> None:
        """Wait for a background write, free the CPU buffers kept for async saves, and put back
        the SIGINT/SIGTERM handlers that ``should_stop`` replaced."""
        try:
            self.wait()
        finally:
            self._staging.release()
            self._uninstall_signal_handlers()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_in_background(self, payload: dict[str, Any], path: Path) -> None:
        try:
            self._write(payload, path, staged=True)  # its tensors are Staging's buffers
        except BaseException as exc:  # surfaced on the caller's thread
            # Also logged now: a script that never calls save, wait or close again (it ends, or
            # crashes) would otherwise lose the error with the checkpoint.
            log.error("background checkpoint write of %s failed: %s", path.name, exc)
            with self._lock:
                self._error = exc

    def _raise_pending(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"a background checkpoint write failed: {error}") from error

    def _write(self, payload: dict[str, Any], path: Path, *, staged: bool) -> None:
        """Write and commit ``payload``. ``staged``: its tensors are Staging's buffers, whose
        big ones are page-aligned, so their bytes can go to the disk with O_DIRECT."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._swept:
            self._sweep_stale_temp_files()
        with atomic_writer(path) as handle, checkpoint_file(handle, direct=staged) as out:
            # torch.save releases the GIL while it writes to a file object: a background write
            # stalls the training's thread for ~10 ms at most (measured, 200 MB).
            serialize(payload, cast(BinaryIO, out), page_aligned=staged)
        self._prune(keep_path=path)

    def _sweep_stale_temp_files(self) -> None:
        """Remove temp files left by a save that was killed (a previous attempt's process).

        Done once, before this Checkpointer's first write: its own writes are never
        concurrent (at most one in flight), and only one process writes a folder.
        """
        self._swept = True
        for stale in self.folder.glob(".step-*.pt.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
                log.info("removed %s, left by an interrupted save", stale.name)

    def _warn_if_below_newest(self, step: int) -> None:
        """A step below a generation already in the folder (a counter that restarted, or two
        runs sharing a folder) is one restore would pass over and pruning would delete."""
        if self._highest is None:
            generations = list_generations(self.folder)
            self._highest = generations[0][0] if generations else -1
        if step < self._highest:
            log.warning(
                "saving step %d into %s, which holds step %d: restore() resumes from the "
                "highest step, so it would pass this one over. Count on from what restore() "
                "returns, or give this run a folder of its own",
                step,
                self.folder,
                self._highest,
            )
        self._highest = max(self._highest, step)

    def _prune(self, keep_path: Path) -> None:
        for _, old in list_generations(self.folder)[self.keep :]:
            if old != keep_path:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()

    # -- restoring -------------------------------------------------------------------------

    def restore(self, **objects: Any) -> int:
        """Load the newest readable generation into ``objects``; return the next step.

        A generation that cannot be read (torn, truncated, foreign) is skipped with a warning
        and the one before it is used. Tensors are loaded to CPU and copied by each object's
        ``load_state_dict`` onto the device its parameters live on.
        """
        self.wait()
        found = self.load_newest()
        self._check_ranks_agree(None if found is None else found[0])
        if found is None:
            return 0
        step, path, state = found
        missing = [name for name in objects if name not in state["objects"]]
        if missing:
            raise KeyError(
                f"checkpoint {path} has no state for {', '.join(missing)} "
                f"(it has: {', '.join(state['objects']) or 'nothing'})"
            )
        for name, obj in objects.items():
            _stateful(name, obj).load_state_dict(state["objects"][name])
        restore_rng(state.get("rng", {}))
        log.info("restored step %d from %s", step, path)
        return step + 1

    def _check_ranks_agree(self, step: int | None) -> None:
        """Under torch.distributed every rank restores, and they must all find the same
        generation: a rank that resumed elsewhere would train different weights in lockstep
        with the others (a folder on each node's own disk, say, where only node 0 saves)."""
        dist = _process_group()
        if dist is None:
            return
        (highest,), (lowest,) = _across_ranks([-1 if step is None else step], dist)
        if highest != lowest:
            found = "nothing" if step is None else f"step {step}"
            raise RuntimeError(
                f"the ranks restored different checkpoints from {self.folder}: steps from "
                f"{_step_text(lowest)} to {_step_text(highest)} (rank {dist.get_rank()} found "
                f"{found}). Every rank must read the checkpoints rank 0 writes: give "
                "Checkpointer a folder that all ranks share"
            )

    def load_newest(self) -> tuple[int, Path, dict[str, Any]] | None:
        """The newest generation that loads: (step, path, payload), or None."""
        for step, path in list_generations(self.folder):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or state.get("format") != FORMAT:
                    raise ValueError("not a colab-bootstrap checkpoint")
            except Exception as exc:  # a torn file raises many kinds of errors
                if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
                    # Whole, but holding a type torch will not load with weights_only: the
                    # older generations hold it too, and skipping them all would restart the
                    # training from step 0.
                    raise RuntimeError(
                        f"checkpoint {path} holds a type that torch.load(weights_only=True) "
                        f"refuses ({_refused_global(exc)}). Allow it before restore() with "
                        "torch.serialization.add_safe_globals([...]) if you trust the file, "
                        "and save plain values (float(x), x.tolist(), tensors) from now on"
                    ) from exc
                log.warning(
                    "skipping unreadable checkpoint %s (%s); trying the previous one", path, exc
                )
                continue
            return step, path, state
        return None


def _stateful(name: str, obj: Any) -> Any:
    """``obj``, or a wrapper with ``state_dict``/``load_state_dict`` for a torch.Generator."""
    if isinstance(obj, torch.Generator):
        return GeneratorState(obj)
    if callable(getattr(obj, "state_dict", None)):
        return obj
    raise TypeError(
        f"cannot checkpoint {name}: a {type(obj).__name__} has no state_dict() method. "
        "Checkpointer takes modules, optimizers, schedulers, scalers, torch.Generators and "
        "any object with state_dict()/load_state_dict(); keep plain values (a step, a best "
        "loss) in such an object"
    )


def _step_text(step: int) -> str:
    return "none" if step < 0 else str(step)


def _checked_step(step: Any) -> int:
    try:
        value = operator.index(step)  # an int, a NumPy int or a 0-d integer tensor; not 3.0
    except TypeError:
        raise TypeError(f"save(step=...) must be an int, got {step!r}") from None
    if value < 0:
        raise ValueError(f"save(step=...) must be 0 or more, got {value}")
    return value


def _refused_global(exc: BaseException) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return found.group(1) if found else str(exc).splitlines()[0]
