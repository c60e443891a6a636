"""The child side of a ``run.callable`` entry point: import ``module:function`` and call it.

Started by the supervisor as ``python -m bootstrap.child`` in ``{repo}``; what to call comes in
BOOTSTRAP_CALLABLE and its keyword arguments, placeholders already applied, as JSON in
BOOTSTRAP_KWARGS. An exception is a crash: the traceback goes to the log and the exit code is 1.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any


def resolve(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target


def main() -> int:
    spec = os.environ["BOOTSTRAP_CALLABLE"]
    kwargs = json.loads(os.environ.get("BOOTSTRAP_KWARGS", "{}"))
    # `python -m` puts the working folder ({repo}) on sys.path already; be explicit anyway,
    # since the recipe promises it.
    sys.path.insert(0, os.getcwd())
    resolve(spec)(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
