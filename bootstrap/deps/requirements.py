"""Find a repo's requirement files and read them into one filtered list, like pip would.

``requirement_sources`` picks what to read (``auto``: requirements.txt, else the repo's own
package). ``RequirementsReader`` reads the files: comments, line continuations, ``-r``/``-c``
includes (relative to the including file), option lines passed through; a requirement naming a
held package is dropped and reported, the pins go into the constraints, and every byte read is
hashed for the install marker. Its limits are listed in ``bootstrap.deps.install``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from bootstrap.errors import InstallError
from bootstrap.values import is_url

REQUIREMENTS_KEY = "install.requirements"  # the recipe key named in messages
_COMMENT = re.compile(r"(^|\s+)#.*$")
_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9._-]+)")


def canonical_name(name: str) -> str:
    """PEP 503: ``Torch_Vision`` and ``torch-vision`` are the same package."""
    return str(canonicalize_name(name))


def asks_any_version(spec: str) -> bool:
    """Whether a requirement is satisfied by any version (``torch``, ``torch[cuda]``)."""
    try:
        requirement = Requirement(spec)
    except InvalidRequirement:
        return False
    return not requirement.specifier and requirement.url is None


def requirement_sources(
    repo_root: Path, requirements: str | Sequence[str]
) -> tuple[list[Path], Path | None]:
    """The requirement files to read, and the packaging file when the repo itself is installed."""
    if isinstance(requirements, str):
        if requirements != "auto":
            raise ValueError(f"requirements must be 'auto' or a list, not {requirements!r}")
        if (repo_root / "requirements.txt").is_file():
            return [repo_root / "requirements.txt"], None
        pyproject = repo_root / "pyproject.toml"
        if pyproject.is_file() and _has_project_table(pyproject):
            return [], pyproject
        setup_py = repo_root / "setup.py"
        return [], setup_py if setup_py.is_file() else None
    files = []
    for name in requirements:
        path = repo_root / name
        if not path.is_file():
            raise InstallError(
                f"{REQUIREMENTS_KEY}: {name} is not a file in the repo ({path})",
                hint=f"fix {REQUIREMENTS_KEY} in the recipe (paths are relative to the repo root), "
                "or use [] to install nothing from the repo",
            )
        files.append(path)
    return files, None


def _has_project_table(pyproject: Path) -> bool:
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            return isinstance(tomllib.loads(text).get("project"), dict)
        except tomllib.TOMLDecodeError:
            return False
    return re.search(r"^\s*\[project\]\s*(#.*)?$", text, re.M) is not None


@dataclass
class RequirementsReader:
    """Reads requirement files into one filtered requirements list and one constraints list."""

    repo_root: Path
    pins: dict[str, tuple[str, str]]
    keep: frozenset[str] = frozenset()  # canonical names the recipe holds, installed or not
    requirements: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # what was asked for, for messages
    reports: list[tuple[str, str, str, str]] = field(default_factory=list)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    wanted: int = 0  # requirement lines left for the installer
    # (spec, where) of requirements naming a kept package that is not installed: nothing holds it
    unheld: list[tuple[str, str]] = field(default_factory=list)

    @property
    def held(self) -> list[tuple[str, str, str]]:
        return list(dict.fromkeys((who, ver, spec) for who, ver, spec, _ in self.reports))

    def show(self, path: Path) -> str:
        try:
            return path.relative_to(self.repo_root).as_posix()
        except ValueError:
            return str(path)

    def read(self, path: Path, *, constraint: bool, origin: str | None = None) -> None:
        if any(os.path.samefile(path, seen) for seen in self.files):
            return  # pip would recurse forever; reading once is what was meant
        if origin is None:
            self.labels.append(self.show(path))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InstallError(
                f"cannot read {path}: {exc}", hint=f"check {REQUIREMENTS_KEY}"
            ) from exc
        self.files.append(path)
        self.digest.update(f"{self.show(path)}\0{len(data)}\0".encode() + data)
        for number, text in logical_lines(data.decode("utf-8-sig", errors="replace")):
            self.line(text, path, constraint, f"{self.show(path)}:{number}")

    def project(self, packaging_file: Path) -> None:
        self.labels.append(f"the repo's package ({packaging_file.name})")
        for name in ("pyproject.toml", "setup.py", "setup.cfg"):
            path = self.repo_root / name
            if path.is_file():
                self.files.append(path)
                self.digest.update(f"{name}\0".encode() + path.read_bytes())
        self.requirements.append("-e .")
        self.wanted += 1

    def line(self, text: str, base: Path | None, constraint: bool, where: str) -> None:
        origin = where.rsplit(":", 1)[0] if base is not None else "install.packages"
        spec = re.split(r"\s+(?=-)", text, maxsplit=1)[0]  # without per-requirement options
        if text.startswith("-"):
            option, value = split_option(text)
            if option in ("-r", "--requirement", "-c", "--constraint") and not _is_url(value):
                nested = (base.parent if base else self.repo_root) / value
                if not nested.is_file():
                    raise InstallError(
                        f"{where}: {text}: no such file {nested}",
                        hint=f"fix the include in {origin}, or {REQUIREMENTS_KEY} in the recipe",
                    )
                self.read(nested, constraint=option in ("-c", "--constraint"), origin=where)
                return
            if option in ("-f", "--find-links") and value and not _is_url(value):
                text = f"{option} {shlex.quote(self._local_path(value, base))}"
            if option not in ("-e", "--editable"):
                self.requirements.append(text)
                return
            spec = value
        name = name_of(spec)
        if name is not None and name in self.pins:
            who, version = self.pins[name]
            self.reports.append((who, version, spec, origin))
            return
        if name is not None and name in self.keep and not constraint:
            self.unheld.append((spec, where))
        (self.constraints if constraint else self.requirements).append(text)
        self.wanted += 0 if constraint else 1

    def _local_path(self, value: str, base: Path | None) -> str:
        """A find-links folder as an absolute path. The filtered file is read from state_dir, and
        uv resolves a relative find-links path against the file naming it (pip: that file's
        folder when the path exists there, else the working directory, the repo root)."""
        try:
            words = shlex.split(value)
        except ValueError:
            words = []
        path = Path(words[0] if len(words) == 1 else value)
        if not path.is_absolute() and base is not None and (base.parent / path).exists():
            path = base.parent / path
        return os.path.abspath(self.repo_root / path)  # an absolute path is kept as it is

    def render(self) -> tuple[str, str]:
        head = "# written by colab-bootstrap; the installer runs in the repo root\n"
        pins = [f"{n}=={v}" for _, (n, v) in sorted(self.pins.items())]
        return (
            head + "".join(f"{r}\n" for r in self.requirements),
            head + "".join(f"{c}\n" for c in [*self.constraints, *pins]),
        )


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) with continuations joined and comments removed, like pip."""
    parts: list[str] = []
    first = 0
    lines = text.splitlines()
    for number, raw in enumerate(lines, 1):
        if not parts:
            first = number
        if raw.endswith("\\") and not raw.lstrip().startswith("#") and number < len(lines):
            parts.append(raw[:-1])
            continue
        joined = _COMMENT.sub("", "".join([*parts, raw.rstrip("\\")])).strip()
        parts = []
        if joined:
            yield first, joined


def _is_url(text: str) -> bool:
    # pip also reads file:relative/path, without the slashes of a URL
    return is_url(text) or text.startswith("file:")


def split_option(text: str) -> tuple[str, str]:
    """``-rfile``, ``-r file``, ``--requirement=file`` -> ("-r"/"--requirement", "file")."""
    match = re.match(r"(--[A-Za-z0-9-]+)(?:\s*=\s*|\s+|$)(.*)", text) or re.match(
        r"(-[A-Za-z])\s*(.*)", text
    )
    return (match.group(1), match.group(2).strip()) if match else (text, "")


def name_of(spec: str) -> str | None:
    """The canonical project name a requirement line asks for, when one can be told."""
    spec = spec.strip()
    if _is_url(spec) or spec.startswith((".", "/", "~")) or spec.lower().endswith(_ARCHIVES):
        egg = _EGG.search(spec)
        if egg:
            return canonical_name(egg.group(1))
        last = spec.split("#")[0].rstrip("/").rsplit("/", 1)[-1]
        # A wheel's name is its first dash-separated part (dashes in it are escaped). Not
        # packaging's parse_wheel_filename: it refuses names seen in real URLs, such as
        # torch-2.0.0%2Bcu118-cp310-linux.whl. An sdist or a folder keeps its name inside.
        return canonical_name(last.split("-")[0]) if last.lower().endswith(".whl") else None
    try:
        return canonical_name(Requirement(spec).name)
    except InvalidRequirement:  # e.g. "pkg/sub": a path, not a name
        return None
