"""Processes, as /proc lists them (Linux; empty elsewhere): who started whom.

Needed where a process we started starts others in sessions of their own, out of reach of a
signal to our child's process group: torchrun's ranks, git's remote helpers.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
from pathlib import Path

__all__ = ["children", "descendants", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


def children(parent: int) -> set[int]:
    return {pid for pid, ppid in _parents().items() if ppid == parent}


def descendants(root: int, skip: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """The processes below ``root``, parents first, leaving out the subtrees of ``skip``."""
    parents = _parents()
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        below = [pid for pid, ppid in parents.items() if ppid == parent and pid not in skip]
        found += below
        frontier += below
    return found


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process in /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    parents = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; nothing elsewhere).

    For a child the tool starts (as its preexec_fn) and for each torchrun rank, which torchrun
    starts in a session of its own and does not end when it is killed itself: a training
    outliving the tool would hold the GPU with nobody to stop it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
