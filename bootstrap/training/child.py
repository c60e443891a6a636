"""The child side of a ``run.callable`` entry point: import ``module:function`` and call it.

Started by the supervisor as ``python -m bootstrap.training.child`` in ``{repo}``, which is also
put first on ``sys.path``. The environment says what to do:

- BOOTSTRAP_CALLABLE  ``module:function``; BOOTSTRAP_KWARGS its keyword arguments as JSON,
  placeholders already applied. When the function has a parameter named ``checkpoint`` it also
  gets a ``Checkpointer`` bound to BOOTSTRAP_CHECKPOINTS (``run.checkpoints``).
- BOOTSTRAP_SETUP and BOOTSTRAP_EPOCHS: loop mode (see ``bootstrap.training.loop``).

An exception is a crash: the traceback goes to the output (and so to the log) and the exit code
is 1, so the supervisor restarts and the next attempt resumes. A stop request (SIGINT) that
the code does not handle exits with 130.

An entry point that is not there (no such module, no such function, or not callable) is a
mistake in the recipe, not a crash: one ``[bootstrap] error:`` line naming the recipe key, with a
"did you mean" when a close name exists, and exit code 78 (EXIT_ENTRY_POINT, sysexits'
EX_CONFIG: rarer in training code than small numbers), which the supervisor does not restart.
An exception raised while the module imports, including a missing package it imports itself,
is still a crash.

The Checkpointer is given no deadline here: the supervisor owns the time limit and sends SIGINT
when it passes, which ``should_stop`` sees. A child that stopped on its own clock could exit 0
before the supervisor noticed the deadline, and a stopped run would be recorded as finished.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import logging
import os
import pkgutil
import sys
import traceback
from collections.abc import Callable
from typing import Any

# Not __name__: run as `python -m bootstrap.training.child` that is "__main__", outside the
# "bootstrap" logger that configure_logging formats ("[bootstrap] error: ...").
log = logging.getLogger("bootstrap.training.child")

EXIT_CRASH = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_ENTRY_POINT = 78


class EntryPointError(Exception):
    """The recipe names an entry point that does not exist: fix the recipe, do not restart."""

    def __init__(self, key: str, spec: str, problem: str, name: str, candidates: list[str]):
        close = difflib.get_close_matches(name, candidates, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        super().__init__(f"{key}: {spec}: {problem}{hint}")


def resolve(spec: str, key: str = "run.callable") -> Callable[..., Any]:
    """The object named by ``module:function`` (``function`` may be dotted: ``Class.method``).

    Raises EntryPointError, naming the recipe ``key``, when the entry point itself is missing.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EntryPointError(key, spec, "not of the form module:function", "", [])
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the entry module or one of its parent packages being absent is the recipe's
        # fault; a package the module imports for itself (say wandb) missing is a crash.
        missing = exc.name or ""
        if missing != module_name and not module_name.startswith(missing + "."):
            raise
        parent, _, leaf = missing.rpartition(".")
        where = getattr(sys.modules.get(parent), "__path__", None) if parent else [os.getcwd()]
        names = [m.name for m in pkgutil.iter_modules(where)] if where else []
        raise EntryPointError(key, spec, f"no module named {missing!r}", leaf, names) from None
    target: Any = module
    parts = attr.split(".")
    for i, part in enumerate(parts):
        try:
            target = getattr(target, part)
        except AttributeError:
            owner = f"module {module_name}" if i == 0 else f"{module_name}:{'.'.join(parts[:i])}"
            public = [n for n in dir(target) if not n.startswith("_")]
            problem = f"{owner} has no attribute {part!r}"
            raise EntryPointError(key, spec, problem, part, public) from None
    if not callable(target):
        problem = f"not callable (it is a {type(target).__name__})"
        raise EntryPointError(key, spec, problem, "", [])
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
    from bootstrap.training.checkpoint import Checkpointer  # imports torch: only when needed

    with Checkpointer.from_env(deadline=None) as checkpoint:  # close() waits for async saves
        fn(**kwargs, checkpoint=checkpoint)


def loop(spec: str, setup_spec: str, epochs: int, kwargs: dict[str, Any]) -> None:
    from bootstrap.training.checkpoint import Checkpointer
    from bootstrap.training.loop import run_loop

    checkpoint = Checkpointer.from_env(deadline=None)
    # Installed before the imports and setup below, which can take a while, so that a stop
    # request at any point after this is a polite one.
    checkpoint.install_signal_handlers()
    run_loop(resolve(setup_spec, "run.setup"), resolve(spec), epochs, kwargs, checkpoint)


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
            "bootstrap.training.child is started by `python -m bootstrap RECIPE` for run.callable; "
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
    except EntryPointError as exc:
        log.error("%s", exc)  # a recipe mistake: the traceback would only point at us
        return EXIT_ENTRY_POINT
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
