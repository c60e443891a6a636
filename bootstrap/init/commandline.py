"""An entry point's command line as ``init`` sees it: its ``Flag``s and how it reads them
(``Cli``), whichever framework declares them (the readers are in ``bootstrap.init.argclick``
and ``bootstrap.init.configs``; ``bootstrap.init.flags`` picks among them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bootstrap.init.source import MISSING, Where


@dataclass(frozen=True)
class Flag:
    """One option of the training's command line."""

    dest: str  # the Python name, e.g. out_dir
    option: str  # how it is written, e.g. --out-dir; "" for a positional argument
    switch: bool = False  # takes no value (store_true, is_flag, a bool field)
    default: object = MISSING
    choices: tuple[object, ...] = ()
    kind: str = ""  # "str", "int", "float", "bool" when the declaration says
    help: str = ""
    where: Where | None = None
    aliases: tuple[str, ...] = ()  # other spellings, e.g. -r
    required: bool = False

    @property
    def positional(self) -> bool:
        return not self.option

    def spelled(self) -> str:
        names = [self.option or self.dest, *self.aliases]
        return "/".join(names)


@dataclass(frozen=True)
class Cli:
    """How an entry point reads its command line."""

    framework: str  # shown to the user: "argparse", "click", "fire", ...
    where: Where
    flags: tuple[Flag, ...]
    equals: bool = False  # values must be written --key=value (the configurator)
    subcommand: str | None = None  # e.g. "fit" for a Lightning CLI
    notes: tuple[str, ...] = ()

    def find(self, *dests: str) -> Flag | None:
        """The first flag whose name (dest or spelled option) is one of ``dests``."""
        wanted = [_norm(d) for d in dests]
        for name in wanted:
            for flag in self.flags:
                if name in (_norm(flag.dest), _norm(flag.option)):
                    return flag
        return None

    def matching(self, test: Callable[[Flag], bool]) -> list[Flag]:
        return [flag for flag in self.flags if test(flag)]

    def args(self, flag: Flag, value: str | None = None) -> list[str]:
        """The argv words that give ``flag`` the ``value`` (a switch takes none)."""
        if flag.switch or value is None:
            return [flag.option]
        if flag.positional:
            return [value]
        return [f"{flag.option}={value}"] if self.equals else [flag.option, value]

    def head(self) -> list[str]:
        """The words before any flag (a subcommand)."""
        return [self.subcommand] if self.subcommand else []


def _norm(name: str) -> str:
    return name.lstrip("-").replace("-", "_").lower()


def norm(name: str) -> str:
    """A flag name as compared: no dashes in front, '-' as '_', lower case."""
    return _norm(name)


def words_of(text: str) -> set[str]:
    """Lower-case words of a help text or comment, for hints such as "'scratch' or 'resume'"."""
    return set(re.findall(r"[a-z_]+", text.lower()))
