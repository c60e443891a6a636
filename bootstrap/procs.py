"""Processes, as /proc lists them (Linux; empty elsewhere): who started whom.

Needed where a process we started starts others in sessions of their own, out of reach of a
signal to our child's process group: torchrun's ranks, git's remote helpers.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["children", "descendants"]


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
