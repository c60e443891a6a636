"""``python -m bootstrap init URL``: write a recipe for a repo by reading it, never running it.

``command`` orchestrates: the clone (``bootstrap.repo.checkout``, shallow), then one reader per
question, each in its own module: ``entry`` (which file trains), ``flags`` with ``argclick``
and ``configs`` (its command line, whatever declares it), ``resume``, ``checkpoints`` (with
``paths``), ``requirements``, ``data``, ``gpu``, ``smoke``; ``draft`` puts the answers into
recipe items and ``render`` writes them as commented YAML. ``source`` reads the files.

From Python: ``bootstrap.init_recipe(url, output=...)``.
"""

from __future__ import annotations

from bootstrap.init.command import InitResult, init_recipe

__all__ = ["InitResult", "init_recipe"]
