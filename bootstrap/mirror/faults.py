"""Fault injection for tests and drills: make persist fail on purpose.

    BOOTSTRAP_FAULT_PERSIST=ENOTCONN:30    every persist write fails with ENOTCONN for 30 s
    BOOTSTRAP_FAULT_PERSIST=EIO:5          ... with EIO for 5 s
    BOOTSTRAP_FAULT_PERSIST=SLOW:0.2       every persist write takes 0.2 s longer (a slow Drive)
    BOOTSTRAP_PERSIST_READ_MBPS=100        restores read persist at 100 MB/s at most (a Drive
                                           read rate, for benchmarks on a fast local disk)

The clock starts at the first persist write the mirror attempts, so a drill does not depend
on how long the training takes to write its first checkpoint. This is how Drive behaves
when its FUSE mount drops ("Transport endpoint is not connected") and comes back; the
tests use it to show the training keeps its speed and the mirror catches up.
"""

from __future__ import annotations

import errno
import os
import threading
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


READ_ENV = "BOOTSTRAP_PERSIST_READ_MBPS"


def read_pacer(
    environ: Mapping[str, str], clock: Callable[[], float] = time.monotonic
) -> Callable[[int], None] | None:
    """A function to call with the size of each chunk read from persist, which sleeps as long
    as the reads are ahead of ``BOOTSTRAP_PERSIST_READ_MBPS``; None when it is not set."""
    raw = environ.get(READ_ENV, "").strip()
    if not raw:
        return None
    try:
        rate = float(raw) * 1e6
    except ValueError:
        rate = 0.0
    if rate <= 0:
        raise UsageError(f"{READ_ENV}={raw!r} is not a rate in MB/s", hint=f"e.g. {READ_ENV}=100")
    lock = threading.Lock()  # restores of several trees may share it
    sent = [0, 0.0]  # bytes so far, and when the first was read

    def pace(amount: int) -> None:
        with lock:
            if not sent[1]:
                sent[1] = clock()
            sent[0] += amount
            ahead = sent[0] / rate - (clock() - sent[1])
        if ahead > 0:
            time.sleep(ahead)

    return pace
