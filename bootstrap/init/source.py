"""Read a cloned repo without running any of it: its Python files as ASTs, its text files.

Nothing from the repo is imported or executed: files are read as text and parsed with
``ast.parse``. Files that are too big, not UTF-8 or not valid Python 3 are skipped with a note,
so one odd file never stops ``init``; the notes end up in the recipe's header.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Confidence = Literal["sure", "likely", "guess"]

MAX_FILE_BYTES = 1_000_000  # bigger .py files are generated tables or vendored code
MAX_FILES = 3000  # a monorepo: read this many and say the rest was not read
# Folders that hold no training code of the repo's own, or that are not the repo's at all.
SKIP_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".venv", "venv", "env", "node_modules", "__pycache__", "build",
        "dist", "site-packages", ".tox", ".eggs", ".mypy_cache", ".pytest_cache", "wandb",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Where:
    """A place in the repo: a file relative to the repo root, and a line when one is known."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Finding:
    """One thing ``init`` decided, where it read it and how sure it is."""

    text: str  # what was found, e.g. "argparse --resume PATH"
    where: Where | None
    confidence: Confidence
    note: str = ""  # why, or what to check

    def comment(self) -> str:
        where = f" ({self.where})" if self.where else ""
        note = f"; {self.note}" if self.note else ""
        return f"{self.text}{where} [{self.confidence}]{note}"


@dataclass
class PyFile:
    path: str  # relative to the repo root, with '/'
    text: str
    tree: ast.Module

    @property
    def module(self) -> str:
        """The dotted module name this file has when the repo root is on sys.path."""
        parts = self.path[: -len(".py")].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts)

    def at(self, node: ast.AST | int | None) -> Where:
        line = node if isinstance(node, int) or node is None else getattr(node, "lineno", None)
        return Where(self.path, line)


@dataclass
class RepoScan:
    """The files of one clone, read once. ``root`` is the folder the training runs in."""

    root: Path
    notes: list[str] = field(default_factory=list)
    _files: list[PyFile] | None = None

    def python_files(self) -> list[PyFile]:
        if self._files is None:
            self._files = list(self._read_all())
        return self._files

    def get(self, path: str) -> PyFile | None:
        return next((f for f in self.python_files() if f.path == path), None)

    def module(self, dotted: str) -> PyFile | None:
        """The repo's own file for an import name (``pkg.mod``), or None for a third party."""
        return next((f for f in self.python_files() if f.module == dotted), None)

    def exists(self, relative: str) -> bool:
        try:
            return (self.root / relative).exists()
        except (OSError, ValueError):
            return False

    def text(self, relative: str) -> str | None:
        """A text file of the repo (README, requirements), or None when absent or unreadable."""
        path = self.root / relative
        try:
            if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                return None
            return path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            self.notes.append(f"{relative}: not read (not UTF-8 text)")
            return None

    def listdir(self, relative: str = "") -> list[str]:
        try:
            return sorted(os.listdir(self.root / relative))
        except OSError:
            return []

    def _paths(self) -> Iterator[Path]:
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                if name.endswith(".py"):
                    yield Path(folder) / name

    def _read_all(self) -> Iterator[PyFile]:
        for count, path in enumerate(self._paths()):
            rel = path.relative_to(self.root).as_posix()
            if count >= MAX_FILES:
                self.notes.append(f"more than {MAX_FILES} Python files: the rest was not read")
                return
            parsed = self._parse(path, rel)
            if parsed is not None:
                yield parsed

    def _parse(self, path: Path, rel: str) -> PyFile | None:
        try:
            if path.is_symlink() or path.stat().st_size > MAX_FILE_BYTES:
                self.notes.append(f"{rel}: skipped (a link, or over {MAX_FILE_BYTES} bytes)")
                return None
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            self.notes.append(f"{rel}: skipped (not UTF-8)")
            return None
        except OSError as exc:
            self.notes.append(f"{rel}: skipped ({exc.strerror or exc})")
            return None
        try:
            tree = ast.parse(text, filename=rel)
        except (SyntaxError, ValueError) as exc:  # Python 2 code, a template, a NUL byte
            line = getattr(exc, "lineno", None)
            self.notes.append(f"{rel}{f':{line}' if line else ''}: skipped (not Python 3 syntax)")
            return None
        return PyFile(rel, text, tree)


def literal(node: ast.AST | None) -> object:
    """The value of a constant expression (``'out'``, ``-1``, ``[1, 2]``), else ``MISSING``."""
    if node is None:
        return MISSING
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return MISSING


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: object = _Missing()


def dotted_name(node: ast.AST) -> str:
    """``torch.save`` for ``torch.save``, ``args.out_dir`` for that attribute, '' otherwise."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call):  # e.g. argparse.ArgumentParser().add_argument
        inner = dotted_name(node.func)
        return ".".join([inner + "()", *reversed(parts)]) if inner else ""
    return ""


def call_name(call: ast.Call) -> str:
    """The last part of what is called: ``add_argument``, ``save``, ``Fire``."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def has_main_guard(tree: ast.Module) -> ast.If | None:
    """The ``if __name__ == "__main__":`` block at module level, if any."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            sides = [node.test.left, *node.test.comparators]
            names = {s.id for s in sides if isinstance(s, ast.Name)}
            values = {s.value for s in sides if isinstance(s, ast.Constant)}
            if "__name__" in names and "__main__" in values:
                return node
    return None


def local_imports(scan: RepoScan, py: PyFile) -> list[PyFile]:
    """The repo's own modules that ``py`` imports (one level), resolved from the repo root and
    from the file's own folder, as Python would with the script's folder on sys.path."""
    here = py.path.rsplit("/", 1)[0] if "/" in py.path else ""
    found: list[PyFile] = []
    for node in ast.walk(py.tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = here.split("/") if here else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            prefix = ".".join([*base, node.module] if node.module else base)
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        for name in names:
            candidates = [name]
            if here:
                candidates.append(f"{here.replace('/', '.')}.{name}")
            for dotted in candidates:
                target = scan.module(dotted)
                if target is not None and target is not py and target not in found:
                    found.append(target)
    return found
