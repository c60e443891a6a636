"""How the library tells its caller what is happening, without printing.

``run_recipe`` reports each step through a ``Reporter``: the CLI's draws a step list with
timings and progress bars; the default one is silent. Messages meant for people go through
``logging`` as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from bootstrap.progress import ProgressFactory, no_progress


class Step(Protocol):
    def skip(self, reason: str) -> None:
        """The step had nothing to do; ``reason`` says why (e.g. "already staged")."""

    def note(self, detail: str) -> None:
        """A short result shown next to the step when it completes."""

    def failed(self, detail: str) -> None:
        """The step ran to its end without doing its job (the training failed); ``detail`` why."""

    def stopped(self, detail: str) -> None:
        """The step stopped part way, as asked, and a re-run continues it; ``detail`` says why."""


class Reporter(Protocol):
    @property
    def progress(self) -> ProgressFactory: ...

    def step(self, title: str) -> contextlib.AbstractContextManager[Step]: ...

    def output(self, chunk: bytes) -> None:
        """The training's own output, passed through untouched."""


class _SilentStep:
    def skip(self, reason: str) -> None:
        pass

    def note(self, detail: str) -> None:
        pass

    def failed(self, detail: str) -> None:
        pass

    def stopped(self, detail: str) -> None:
        pass


class SilentReporter:
    progress: ProgressFactory = staticmethod(no_progress)  # type: ignore[assignment]

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        yield _SilentStep()

    def output(self, chunk: bytes) -> None:
        pass
