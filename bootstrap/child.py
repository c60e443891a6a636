"""The child side of a ``run.callable`` entry point: import ``module:function`` and call it.

Started by the supervisor as ``python -m bootstrap.child`` in ``{repo}``, which is also put first
on ``sys.path``. The environment says what to do:

- BOOTSTRAP_CALLABLE  ``module:function``; BOOTSTRAP_KWARGS its keyword arguments as JSON,
  placeholders already applied. When the function has a parameter named ``checkpoint`` it also
  gets a ``Checkpointer`` bound to BOOTSTRAP_CHECKPOINTS (``run.checkpoints``).
- BOOTSTRAP_SETUP and BOOTSTRAP_EPOCHS: loop mode (see ``bootstrap.loop``).

An exception is a crash: the traceback goes to the output (and so to the log) and the exit code
is 1, so the supervisor restarts and the next attempt resumes. A stop request (SIGINT) that
the code does not handle exits with 130.

The Checkpointer is given no deadline here: the supervisor owns the time limit and sends SIGINT
when it passes, which ``should_stop`` sees. A child that stopped on its own clock could exit 0
before the supervisor noticed the deadline, and a stopped run would be recorded as finished.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

EXIT_CRASH = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def resolve(spec: str) -> Callable[..., Any]:
    """The object named by ``module:function`` (``function`` may be dotted: ``Class.method``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r} is not of the form module:function")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is {type(target).__name__}, not a function")
    return target


def takes_checkpoint(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has a parameter named ``checkpoint`` that can be passed by keyword."""
    try:
        param = inspect.signature(fn).parameters.get("checkpoint")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Call ``fn(**kwargs)``, adding ``checkpoint=`` when it asks for one."""
    if not takes_checkpoint(fn) or "checkpoint" in kwargs:
        fn(**kwargs)
        return
    from bootstrap.checkpoint import Checkpointer  # imports torch: only when needed

    with Checkpointer.from_env(deadline=None) as checkpoint:  # close() waits for async saves
        fn(**kwargs, checkpoint=checkpoint)


def loop(spec: str, setup_spec: str, epochs: int, kwargs: dict[str, Any]) -> None:
    from bootstrap.checkpoint import Checkpointer
    from bootstrap.loop import run_loop

    checkpoint = Checkpointer.from_env(deadline=None)
    # Installed before the imports and setup below, which can take a while, so that a stop
    # request at any point after this is a polite one.
    checkpoint.install_signal_handlers()
    run_loop(resolve(setup_spec), resolve(spec), epochs, kwargs, checkpoint)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        return f"[bootstrap] {level}{record.getMessage()}"


def configure_logging() -> None:
    """Our messages (restores, stops, epochs) to stderr, which the supervisor tees to the log.

    Only the ``bootstrap`` logger, not propagated: the training's own logging setup stays its
    own and sees no duplicates.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("bootstrap")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def main() -> int:
    configure_logging()
    spec = os.environ.get("BOOTSTRAP_CALLABLE", "")
    try:
        kwargs = json.loads(os.environ.get("BOOTSTRAP_KWARGS") or "{}")
        setup_spec = os.environ.get("BOOTSTRAP_SETUP")
        epochs = int(os.environ.get("BOOTSTRAP_EPOCHS") or 0)
    except ValueError as exc:
        log.error("bad BOOTSTRAP_KWARGS or BOOTSTRAP_EPOCHS: %s", exc)
        return EXIT_USAGE
    if not spec or not isinstance(kwargs, dict) or (setup_spec and epochs < 1):
        log.error(
            "bootstrap.child is started by `python -m bootstrap RECIPE` for run.callable; "
            "it needs BOOTSTRAP_CALLABLE (and BOOTSTRAP_SETUP with BOOTSTRAP_EPOCHS >= 1 "
            "for loop mode)"
        )
        return EXIT_USAGE
    # `python -m` puts the working folder ({repo}) on sys.path already; be explicit anyway,
    # since the recipe promises it.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if setup_spec:
            loop(spec, setup_spec, epochs, kwargs)
        else:
            call(resolve(spec), kwargs)
    except KeyboardInterrupt:
        log.warning("interrupted; re-run the same command to continue from the last checkpoint")
        return EXIT_INTERRUPTED
    except Exception:
        # A crash, not a hang: the supervisor restarts from the newest checkpoint.
        traceback.print_exc()
        sys.stderr.flush()
        return EXIT_CRASH
    return 0


if __name__ == "__main__":
    sys.exit(main())
