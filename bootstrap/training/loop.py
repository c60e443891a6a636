"""Loop mode: make a repo with no checkpoint code resumable, one epoch at a time.

``run.setup`` returns a dict of named objects; ``run.callable`` is called once per epoch as
``fn(epoch=e, **objects, **kwargs)`` for ``e`` in ``0 .. run.epochs - 1``. Before the first
epoch the objects that have ``state_dict()``/``load_state_dict()`` (model, optimizer,
scheduler, ...) and the RNG states are restored from the newest checkpoint; after each epoch
they are saved as generation ``e`` (``step-00000000e.pt``), so a run killed at any instant
continues at the epoch after the last one saved, with the same weights and random numbers as
if it had never stopped. Other objects (a DataLoader, a device string) are passed through and
rebuilt by ``setup`` on every start.

Stopping: the Checkpointer's SIGINT/SIGTERM handlers are installed before ``setup`` runs, so the
supervisor's stop request (Colab's Stop button, the time limit) never raises KeyboardInterrupt
mid-epoch: the epoch finishes, is saved, and the loop returns. A second signal kills at once.

This module runs in the training child only (it imports torch through the Checkpointer).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from bootstrap.training.checkpoint import Checkpointer

log = logging.getLogger(__name__)


def split_objects(objects: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(what is checkpointed, by name; the names passed through unsaved)."""
    saved: dict[str, Any] = {}
    passed: list[str] = []
    for name, obj in objects.items():
        if isinstance(obj, torch.Generator) or (  # the Checkpointer saves generators too
            callable(getattr(obj, "state_dict", None))
            and callable(getattr(obj, "load_state_dict", None))
        ):
            saved[name] = obj
        else:
            passed.append(name)
    return saved, passed


def accepted_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``kwargs`` that ``fn`` names as parameters (all of them for ``**kw``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: pass nothing
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    named = {
        name
        for name, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {k: v for k, v in kwargs.items() if k in named}


def check_objects(objects: Any, setup_name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(objects, Mapping):
        raise TypeError(
            f"run.setup {setup_name} returned {type(objects).__name__}, expected a dict of "
            "named objects, e.g. {'model': model, 'optimizer': optimizer, 'loader': loader}"
        )
    bad = [repr(name) for name in objects if not (isinstance(name, str) and name.isidentifier())]
    if bad:
        raise TypeError(
            f"run.setup {setup_name} returned keys that are not parameter names: {', '.join(bad)}"
        )
    clash = sorted(set(objects) & ({"epoch"} | set(kwargs)))
    if clash:
        raise TypeError(
            f"run.setup {setup_name} returned {', '.join(clash)}, which the epoch function "
            "also receives as epoch= or from run.kwargs: rename one of them"
        )
    return dict(objects)


def _name_of(fn: Callable[..., Any]) -> str:
    qualname = getattr(fn, "__qualname__", None)
    return f"{fn.__module__}:{qualname}" if qualname else repr(fn)


def run_loop(
    setup: Callable[..., Any],
    epoch_fn: Callable[..., Any],
    epochs: int,
    kwargs: Mapping[str, Any],
    checkpoint: Checkpointer,
) -> int:
    """Run the epochs not yet saved; return the epoch to continue from (``epochs`` when done).

    ``setup`` receives the entries of ``kwargs`` it names as parameters; ``epoch_fn`` receives
    all of them. Progress goes to the ``bootstrap.training.loop`` logger, one line per epoch.
    """
    checkpoint.install_signal_handlers()
    setup_name = _name_of(setup)
    objects = check_objects(setup(**accepted_kwargs(setup, kwargs)), setup_name, kwargs)
    saved, passed = split_objects(objects)
    log.info(
        "loop mode: %d epoch(s); checkpointing %s%s",
        epochs,
        ", ".join(saved) or "the RNG state only",
        f"; passed through unsaved (no state_dict): {', '.join(passed)}" if passed else "",
    )
    start = checkpoint.restore(**saved)
    if start >= epochs:
        log.info("all %d epochs were already done", epochs)
        return start
    if start:
        log.info("resuming at epoch %d (%d of %d done)", start, start, epochs)
    if checkpoint.should_stop:  # asked to stop while setting up: don't start a long epoch
        log.info("stop requested before epoch %d; re-run to continue", start)
        return start
    for epoch in range(start, epochs):
        epoch_fn(epoch=epoch, **objects, **kwargs)
        path = checkpoint.save(epoch, **saved)
        log.info(
            "epoch %d done (%d/%d%s)",
            epoch,
            epoch + 1,
            epochs,
            f", checkpoint {path.name}" if path is not None else "",
        )
        if checkpoint.should_stop and epoch + 1 < epochs:
            checkpoint.close()
            log.info(
                "stopping after epoch %d as asked; re-run to continue at epoch %d", epoch, epoch + 1
            )
            return epoch + 1
    checkpoint.close()
    log.info("all %d epochs done", epochs)
    return epochs
