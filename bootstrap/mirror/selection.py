"""What the mirror keeps, and which of the kept files are checkpoints.

A *tree* is a folder on scratch kept under a folder on persist: every file in it, subfolders
included, except hidden names, ``*.tmp`` and the recipe's ``run.exclude`` globs. Resume code
reads what was saved beside a checkpoint (a config, a vocabulary, ``meta.pkl``), so the whole
``run.checkpoints`` folder is one tree; ``run.keep`` adds more (a TensorBoard folder).

``run.match`` only chooses among the kept files: which one is ``{checkpoint}`` and whether there
is anything to resume from. A glob whose last part is a plain file name inside a folder pattern,
``checkpoint-*/trainer_state.json``, names a *folder checkpoint*: the folder is the checkpoint,
the file marks it complete, and the mirror keeps such a folder whole or not at all.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootstrap.mirror.files import Match, is_complete, is_ignored, patterns

EVERYTHING = ("**/*",)
_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True)
class Tree:
    """One mirrored folder: the files of ``src`` (scratch) kept under ``dst`` (persist)."""

    src: Path
    dst: Path
    include: tuple[str, ...] = EVERYTHING  # globs relative to src
    exclude: tuple[str, ...] = ()  # globs relative to src; a matched folder leaves all of it out
    label: str = ""  # "" for the checkpoints folder; "kept/..." for run.keep entries


@dataclass(frozen=True)
class FolderRule:
    """A folder checkpoint: folders matching ``folder`` (relative to the checkpoints folder)
    are whole once they hold ``marker``."""

    folder: str
    marker: str

    def folders(self, root: Path) -> list[Path]:
        """The folders under ``root`` this rule covers, complete or not."""
        return sorted(p for p in _glob(root, self.folder) if p.is_dir() and not _hidden(root, p))

    def files(self, folder: Path) -> list[Path]:
        """The files of one such folder: the kept ones, and the marker even when its name is
        hidden (a torch DCP folder's ``.metadata``)."""
        found = set(find_files(folder))
        if (folder / self.marker).is_file():
            found.add(folder / self.marker)
        return sorted(found)


def has_wildcard(text: str) -> bool:
    return any(c in _WILDCARDS for c in text)


def folder_rules(match: Match) -> tuple[FolderRule, ...]:
    """The folder checkpoints ``run.match`` names: each glob whose last part is a plain name
    after a folder part."""
    rules = []
    for pattern in patterns(match):
        folder, _, name = pattern.rstrip("/").rpartition("/")
        if folder and name and not has_wildcard(name) and name not in (".", ".."):
            rules.append(FolderRule(folder, name))
    return tuple(rules)


def find_files(
    folder: Path, include: Sequence[str] = EVERYTHING, exclude: Sequence[str] = ()
) -> list[Path]:
    """The kept files under ``folder``: matching a glob of ``include``, not hidden, not
    ``*.tmp``, not matching (or inside a folder matching) a glob of ``exclude``. Sorted;
    [] when there is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    left_out: set[Path] = set()
    for pattern in exclude:
        left_out.update(_glob(folder, pattern))
    found: set[Path] = set()
    for pattern in include:
        for path in _glob(folder, pattern):
            relative = path.relative_to(folder)
            if is_ignored(relative) or not path.is_file():
                continue
            if left_out and (path in left_out or any(p in left_out for p in path.parents)):
                continue
            found.add(path)
    return sorted(found)


def find_checkpoints(folder: Path, match: Match) -> list[Path]:
    """The checkpoints under ``folder``: files matching ``match``, and the folders of folder
    checkpoints whose marker is there. Sorted; [] when there is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: set[Path] = set()
    rules = folder_rules(match)
    marker_globs = {f"{rule.folder}/{rule.marker}" for rule in rules}
    for pattern in patterns(match):
        for path in _glob(folder, pattern):
            if _hidden(folder, path) or not path.is_file():
                continue
            found.add(path.parent if pattern.rstrip("/") in marker_globs else path)
    return sorted(found)


def newest_checkpoint(folder: Path, match: Match, *, complete_only: bool = True) -> Path | None:
    """The checkpoint (file, or folder of a folder checkpoint) written last: by modification
    time of the file or of its marker; ties go to the greatest name.

    With ``complete_only`` (the default) checkpoints that look torn are passed over, so a
    resume never starts from one a crash cut short."""
    stamped: list[tuple[int, str, Path, Path]] = []
    markers = {rule.marker for rule in folder_rules(match)}
    for found in find_checkpoints(folder, match):
        witness = _marker_of(found, markers) if found.is_dir() else found
        if witness is None:
            continue
        with contextlib.suppress(FileNotFoundError):
            stamped.append((witness.stat().st_mtime_ns, str(found), found, witness))
    for _, _, found, witness in sorted(stamped, reverse=True):
        if not complete_only or is_complete(witness):
            return found
    return None


def _marker_of(folder: Path, markers: Iterable[str]) -> Path | None:
    for name in sorted(markers):
        if (folder / name).is_file():
            return folder / name
    return None


def _glob(root: Path, pattern: str) -> Iterable[Path]:
    # glob.glob, not Path.glob: Path.glob would take "a/**" to mean folders only (before
    # Python 3.13) and cannot be told to keep hidden names out.
    pattern = pattern.strip("/") or "*"
    for name in glob.glob(glob.escape(str(root)) + "/" + pattern, recursive=True):
        yield Path(name)


def _hidden(root: Path, path: Path) -> bool:
    return is_ignored(path.relative_to(root))
