"""RNG state: capture and restore the Python, NumPy, torch and CUDA generators, and save a
``torch.Generator`` like a module, all in a form ``torch.load(weights_only=True)`` accepts.

Imported by training processes only (it imports torch).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger(__name__)


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"python": _python_rng_to_list(random.getstate())}
    with contextlib.suppress(ImportError):
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    if "python" in state:
        random.setstate(_python_rng_from_list(state["python"]))
    if "numpy" in state:
        with contextlib.suppress(ImportError):
            import numpy as np

            saved = state["numpy"]
            np.random.set_state(
                (
                    saved["kind"],
                    saved["keys"].numpy().astype(np.uint32),
                    saved["pos"],
                    saved["has_gauss"],
                    saved["cached_gaussian"],
                )
            )
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved_cuda = list(state["cuda"])
        count = torch.cuda.device_count()
        if len(saved_cuda) != count:
            log.warning(
                "checkpoint has CUDA RNG state for %d device(s), this machine has %d; "
                "restoring the ones that match",
                len(saved_cuda),
                count,
            )
        for index, rng in enumerate(saved_cuda[:count]):
            torch.cuda.set_rng_state(rng, index)


def _python_rng_to_list(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_list(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


class GeneratorState:
    """Saves a ``torch.Generator`` (e.g. the one a DataLoader shuffles with) like a module."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])
