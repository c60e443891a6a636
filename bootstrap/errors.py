"""One exception family for the whole library, and the exit codes the CLI maps them to.

The library raises these and never exits; ``cli.main`` is the one place that turns them into
a one-line message and an exit code (see RECIPE.md, "Exit codes").
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    FINISHED = 0
    USAGE = 2  # recipe or usage error
    SETUP = 3  # a setup step failed: clone, install, data, host
    TRAINING_FAILED = 4  # training failed after its restarts
    TIME_LIMIT = 5  # stopped at the time limit, resumable
    INTERRUPTED = 130  # interrupted by the user, resumable


class BootstrapError(Exception):
    """Base of every error the library raises on purpose.

    ``message`` says what is wrong and where; ``hint`` says what to do next. Both are plain
    sentences shown to the user without a traceback.
    """

    exit_code: ExitCode = ExitCode.SETUP

    def __init__(self, message: str, *, hint: str | None = None, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Extra text for the user, e.g. the tail of an installer's output. Shown after the
        # one-line message, never instead of it.
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


@dataclass(frozen=True)
class Problem:
    """One problem found in a recipe: where it is and what is wrong."""

    file: str
    line: int | None
    key: str  # dotted key, e.g. "run.restarts" or "data[0].source"; "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class RecipeError(BootstrapError):
    """The recipe (or a command-line override of it) is invalid. Carries every problem found."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        count = len(self.problems)
        head = "recipe has 1 problem" if count == 1 else f"recipe has {count} problems"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class UsageError(BootstrapError):
    """The command line is invalid (a bad --set, a missing profile, ...)."""

    exit_code = ExitCode.USAGE


class StepError(BootstrapError):
    """A setup step failed. Subclasses name the step."""

    exit_code = ExitCode.SETUP


class HostError(StepError):
    """The machine cannot run this recipe as it is (Drive not mounted, no GPU, ...)."""


class DriveNotMounted(HostError):
    """The recipe or a storage root is on Google Drive, which is not mounted: a notebook
    kernel can mount it and try again; a ``!`` cell cannot."""


class RepoError(StepError):
    """Cloning, updating or copying the repository failed."""


class InstallError(StepError):
    """Installing the requirements failed."""


class PrepareError(StepError):
    """A ``run.prepare`` command failed."""


class DataError(StepError):
    """Staging a data item failed."""


class StepCancelled(Exception):
    """Raised inside a setup step that is stopped because another one failed or Stop was
    pressed. Never shown: the failure or the interrupt that caused it is."""
