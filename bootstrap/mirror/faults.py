"""Fault injection for tests and drills: make persist fail on purpose.

    BOOTSTRAP_FAULT_PERSIST=ENOTCONN:30    every persist write fails with ENOTCONN for 30 s
    BOOTSTRAP_FAULT_PERSIST=EIO:5          ... with EIO for 5 s
    BOOTSTRAP_FAULT_PERSIST=SLOW:0.2       every persist write takes 0.2 s longer (a slow Drive)

The clock starts at the first persist write the mirror attempts, so a drill does not depend
on how long the training takes to write its first checkpoint. This is how Drive behaves
when its FUSE mount drops ("Transport endpoint is not connected") and comes back; the
tests use it to show the training keeps its speed and the mirror catches up.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from bootstrap.errors import UsageError

FaultHook = Callable[[str, Path], None]
ENV = "BOOTSTRAP_FAULT_PERSIST"
_WRITES = ("open", "write", "replace")


def persist_fault_hook(
    environ: Mapping[str, str], clock: Callable[[], float] = time.monotonic
) -> FaultHook | None:
    raw = environ.get(ENV, "").strip()
    if not raw:
        return None
    name, _, seconds = raw.partition(":")
    code = -1 if name.upper() == "SLOW" else getattr(errno, name.upper(), None)
    try:
        duration = float(seconds)
    except ValueError:
        duration = -1.0
    if not isinstance(code, int) or duration < 0:
        raise UsageError(
            f"{ENV}={raw!r} is not ERRNO:SECONDS",
            hint=f"e.g. {ENV}=ENOTCONN:30, or unset it",
        )
    if code == -1:

        def slow(operation: str, path: Path) -> None:
            if operation in _WRITES:
                time.sleep(duration)

        return slow

    window: list[float] = []  # [end of the failure window], set on the first write

    def hook(operation: str, path: Path) -> None:
        if not window:
            if operation not in _WRITES:
                return
            window.append(clock() + duration)
        if clock() < window[0]:
            raise OSError(code, f"{os.strerror(code)} (injected by {ENV})", str(path))

    return hook
