"""How library code reports progress without printing.

A long step takes a ``ProgressFactory`` and opens one ``ProgressBar`` per long operation. The
CLI passes a factory that draws tqdm bars (or plain lines); library callers and tests get the silent
default.
"""

from __future__ import annotations

from typing import Protocol


class ProgressBar(Protocol):
    def advance(self, amount: int) -> None: ...

    def set_total(self, total: int | None) -> None: ...

    def set_description(self, text: str) -> None: ...

    def close(self) -> None: ...


class ProgressFactory(Protocol):
    def __call__(self, description: str, total: int | None = None, unit: str = "B") -> ProgressBar:
        """Open a bar. ``unit`` is "B" for bytes (shown scaled), anything else for counts."""
        ...


class _SilentBar:
    def advance(self, amount: int) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(description: str, total: int | None = None, unit: str = "B") -> ProgressBar:
    return _SilentBar()
