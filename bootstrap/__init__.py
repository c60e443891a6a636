"""colab-bootstrap: from a YAML recipe to a supervised, resumable training run.

Command line: ``python -m bootstrap recipe.yaml``. From Python: ``bootstrap.run(recipe)``, or
``bootstrap.prepare(recipe)`` to set up in a notebook kernel and train there; no recipe yet:
``python -m bootstrap init URL`` (``bootstrap.init_recipe(url)``) writes one. Importing the
package does nothing else: names are loaded on first use (torch only with ``Checkpointer``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Options": "bootstrap.options",
    "run_recipe": "bootstrap.runner.pipeline",
    "load_recipe": "bootstrap.recipe.load",
    "BootstrapError": "bootstrap.errors",
    "ExitCode": "bootstrap.errors",
    "Checkpointer": "bootstrap.training.checkpoint",
    "prepare": "bootstrap.notebook",
    "run": "bootstrap.notebook",
    "init_recipe": "bootstrap.init.command",
}

if TYPE_CHECKING:
    from bootstrap.errors import BootstrapError, ExitCode
    from bootstrap.init.command import init_recipe
    from bootstrap.notebook import prepare, run
    from bootstrap.options import Options
    from bootstrap.recipe.load import load_recipe
    from bootstrap.runner.pipeline import run_recipe
    from bootstrap.training.checkpoint import Checkpointer


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bootstrap' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "BootstrapError",
    "Checkpointer",
    "ExitCode",
    "Options",
    "init_recipe",
    "load_recipe",
    "prepare",
    "run",
    "run_recipe",
]
