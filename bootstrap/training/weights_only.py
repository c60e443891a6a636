"""What ``restore`` can load: the check ``save`` makes that a state holds nothing
``torch.load(weights_only=True)`` refuses, before a checkpoint no resume could read is written.

Imported by training processes only (it imports torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def refuse_what_restore_cannot_load(value: Any, where: str) -> None:
    """Raise TypeError, naming the place, for NumPy values in a state to be saved.

    ``restore`` loads with ``torch.load(weights_only=True)``, which refuses NumPy scalars and
    arrays (the usual way a ``float(loss)`` that was not called ends up in a state): finding out
    at the first save beats a checkpoint that no resume can load. Other types torch refuses are
    reported by ``restore``, which names them.
    """
    if isinstance(value, torch.Tensor):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            refuse_what_restore_cannot_load(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        if all(type(item) in _PLAIN for item in value):
            return  # e.g. an optimizer's param_groups "params": one int per parameter
        for index, item in enumerate(value):
            refuse_what_restore_cannot_load(item, f"{where}[{index}]")
    elif type(value).__module__.partition(".")[0] == "numpy" and not _numpy_allowed():
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        raise TypeError(
            f"cannot checkpoint {where}: it is a {kind}, which torch.load(weights_only=True) "
            "(what restore uses) refuses; store a plain value instead: float(x), int(x), "
            "x.tolist() or torch.from_numpy(x)"
        )


_PLAIN = frozenset({int, float, bool, str, type(None)})


def _numpy_allowed() -> bool:
    """Whether the user allowlisted NumPy for weights-only loads (add_safe_globals)."""
    safe: list[Any] = getattr(torch.serialization, "get_safe_globals", list)()
    return any(
        getattr(g[0] if isinstance(g, tuple) else g, "__module__", "").startswith("numpy")
        for g in safe
    )
