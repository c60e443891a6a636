"""colab-bootstrap: from a YAML recipe to a supervised, resumable training run.

Command line: ``python -m bootstrap recipe.yaml``. From Python: ``bootstrap.run(recipe)``, or
``bootstrap.prepare(recipe)`` to set up in a notebook kernel and train there. Importing the
package does nothing else: names are loaded on first use (torch only with ``Checkpointer``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Options": "bootstrap.runner",
    "run_recipe": "bootstrap.runner",
    "load_recipe": "bootstrap.recipe",
    "BootstrapError": "bootstrap.errors",
    "ExitCode": "bootstrap.errors",
    "Checkpointer": "bootstrap.checkpoint",
    "prepare": "bootstrap.notebook",
    "run": "bootstrap.notebook",
}

if TYPE_CHECKING:
    from bootstrap.checkpoint import Checkpointer
    from bootstrap.errors import BootstrapError, ExitCode
    from bootstrap.notebook import prepare, run
    from bootstrap.recipe import load_recipe
    from bootstrap.runner import Options, run_recipe


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
    "load_recipe",
    "prepare",
    "run",
    "run_recipe",
]
