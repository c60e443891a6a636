"""The command-line flags of an entry point, whatever declares them, as one list of ``Flag``s.

Each framework has its reader (``bootstrap.init.argclick`` for argparse and click,
``bootstrap.init.configs`` for fire, dataclass configs, Hugging Face, Lightning CLI and the
nanoGPT-style configurator); ``read_cli`` asks them all of the entry file, then of the repo's
own modules that it imports (flags often live in an ``options.py``), and keeps the richest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from bootstrap.init.argclick import read_argparse, read_click
from bootstrap.init.commandline import Cli, words_of
from bootstrap.init.configs import (
    read_configurator,
    read_dataclass_cli,
    read_fire,
    read_lightning_cli,
)
from bootstrap.init.source import (
    MISSING,
    Confidence,
    Finding,
    PyFile,
    RepoScan,
    Where,
    local_imports,
)

Reader = Callable[[PyFile, RepoScan], "Cli | None"]


@dataclass
class CliChoice:
    cli: Cli | None
    findings: list[Finding] = field(default_factory=list)
    files: list[PyFile] = field(default_factory=list)  # the entry and the modules it imports


def read_cli(scan: RepoScan, entry: PyFile, readers: Sequence[Reader] | None = None) -> CliChoice:
    """The command line of ``entry``: from the entry file first, then from its local imports."""
    if readers is None:
        readers = (
            read_configurator, read_lightning_cli, read_dataclass_cli, read_fire, read_click,
            read_argparse,
        )  # fmt: skip
    files = related_files(scan, entry)
    choice = CliChoice(None, files=files)
    for depth, py in enumerate(files):
        found = [cli for cli in (reader(py, scan) for reader in readers) if cli is not None]
        if not found:
            continue
        found.sort(key=lambda c: -len(c.flags))
        best = _required_by_help(found[0])
        others = ", ".join(f"{c.framework} ({c.where})" for c in found[1:])
        note = f"also read: {others}" if others else ""
        confidence: Confidence = "sure" if depth == 0 and not others else "likely"
        if depth:
            note = (note + "; " if note else "") + f"imported by {entry.path}"
        choice.cli = best
        choice.findings.append(
            Finding(f"{best.framework}, {len(best.flags)} flags", best.where, confidence, note)
        )
        return choice
    if "sys.argv" in entry.text:
        line = entry.text[: entry.text.index("sys.argv")].count("\n") + 1
        choice.findings.append(
            Finding(
                "reads sys.argv itself", Where(entry.path, line), "guess", "no flags could be read"
            )
        )
    return choice


def _required_by_help(cli: Cli) -> Cli:
    """A flag whose help says it is required ("# the only required argument") and that has no
    real default is treated as required: the code checks it by itself."""
    flags = tuple(
        replace(f, required=True)
        if "required" in words_of(f.help) and not f.switch and f.default in (MISSING, None, "")
        else f
        for f in cli.flags
    )
    return replace(cli, flags=flags)


def related_files(scan: RepoScan, entry: PyFile, depth: int = 2) -> list[PyFile]:
    """``entry`` and the repo's modules it imports, and theirs, ``depth`` levels down."""
    seen = [entry]
    frontier = [entry]
    for _ in range(depth):
        nxt: list[PyFile] = []
        for py in frontier:
            for dep in local_imports(scan, py):
                if dep not in seen:
                    seen.append(dep)
                    nxt.append(dep)
        frontier = nxt
    return seen
