"""What the person running a recipe chose: the command line's options, as plain typed values.

The CLI and the notebook API build an ``Options``; the runner, ``--dry-run`` and ``--status``
read it. It lives on its own so that none of them imports another to get it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Options:
    recipe: Path
    profile: str | None = None
    smoke: bool = False
    sets: tuple[str, ...] = ()
    persist: str | None = None
    scratch: str | None = None
    fresh: bool = False
    extend: bool = False  # a finished run trains on from its newest checkpoint
    python: str = sys.executable
    resume_from: str | None = None  # --resume-from: over storage.resume_from
