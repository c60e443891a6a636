"""What to install: which of the repo's files to read (``install.requirements``), extra
packages, and the pins that would change a package Colab already has.

Colab's own list (``colab-packages.txt``, from googlecolab/backend-info's pip freeze of the
GPU runtime) tells which pinned packages would be replaced. Torch and its companions are held
at Colab's versions by default (``install.keep``); packages built against NumPy's or CUDA's
binary interface are added to ``keep`` when the repo pins another version, and every other such
pin is listed in a comment, since holding it may break code that needs the old version.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.deps.requirements import logical_lines
from bootstrap.init.source import Finding, PyFile, RepoScan, Where

DEFAULT_KEEP = ("torch", "torchvision", "torchaudio")
# Replacing these on Colab breaks its other packages (NumPy's binary interface, CUDA builds).
HOLD_TOO = ("numpy", "jax", "jaxlib", "tensorflow", "torchtext", "torchdata", "xformers")
_IMPORT_NAMES = {
    "cv2": "opencv-python", "PIL": "pillow", "sklearn": "scikit-learn", "yaml": "PyYAML",
    "skimage": "scikit-image", "bs4": "beautifulsoup4", "attr": "attrs",
    "dateutil": "python-dateutil", "pytorch_lightning": "pytorch-lightning",
    "google": "protobuf", "Crypto": "pycryptodome", "fitz": "pymupdf",
}  # fmt: skip
_CONDA_ONLY = {
    "python", "pip", "cudatoolkit", "cudnn", "mkl", "blas", "cuda", "nccl", "pytorch-cuda",
    "libgcc", "ca-certificates", "openssl", "setuptools", "wheel",
}  # fmt: skip


@lru_cache(maxsize=1)
def colab_packages() -> dict[str, str]:
    """Canonical name -> version, of what Colab's GPU runtime preinstalls."""
    text = (Path(__file__).with_name("colab-packages.txt")).read_text(encoding="utf-8")
    found = {}
    for line in text.splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            found[str(canonicalize_name(name))] = version.strip()
    return found


@dataclass
class InstallPlan:
    requirements: str | list[str]  # "auto" or files
    packages: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=lambda: list(DEFAULT_KEEP))
    findings: list[Finding] = field(default_factory=list)
    pins: list[str] = field(default_factory=list)  # "numpy==1.23.5 (Colab 2.1.3; held)"
    todo: str | None = None
    package: bool = False  # "auto" installs the repo itself as a package


def plan_install(scan: RepoScan, files: list[PyFile], subfolder: str | None = None) -> InstallPlan:
    """What to install; ``subfolder`` is repo.path, when the training lives in one: the
    recipe's requirement files are relative to the repo root, where ``auto`` looks."""
    plan = _plan(scan, files)
    if subfolder:
        prefix = subfolder.strip("/") + "/"
        if plan.requirements == "auto" and not plan.package:
            plan.requirements = [prefix + "requirements.txt"]
        elif plan.requirements == "auto":  # the subfolder is a package of its own
            plan.requirements = []
            plan.packages.insert(0, f"-e ./{prefix}")
        elif isinstance(plan.requirements, list):
            plan.requirements = [prefix + n for n in plan.requirements]
        plan.packages = [f"-e ./{prefix}" if p == "-e ." else p for p in plan.packages]
    return plan


def _plan(scan: RepoScan, files: list[PyFile]) -> InstallPlan:
    root = scan.listdir()
    txt = [n for n in root if re.fullmatch(r"requirements[\w.-]*\.(txt|in)", n, re.I)]
    txt += [f"requirements/{n}" for n in scan.listdir("requirements") if n.endswith(".txt")]
    lines: list[tuple[str, Where]] = []
    if "requirements.txt" in txt:
        extra = [n for n in txt if n != "requirements.txt" and "train" in n.lower()]
        plan = InstallPlan("auto" if not extra else ["requirements.txt", *extra])
        what = "requirements.txt" + "".join(f" + {n}" for n in extra)
        plan.findings.append(Finding(what, None, "sure"))
        for name in ["requirements.txt", *extra]:
            lines += _requirement_lines(scan, name)
    elif txt:
        pick = next((n for n in txt if "train" in n.lower()), None) or next(
            (n for n in txt if re.search(r"gpu|cuda|torch", n, re.I)), txt[0]
        )
        plan = InstallPlan([pick])
        note = f"also there: {', '.join(n for n in txt if n != pick)}" if len(txt) > 1 else ""
        plan.findings.append(Finding(pick, Where(pick), "likely", note))
        lines += _requirement_lines(scan, pick)
    elif _is_package(scan):
        plan = InstallPlan("auto", package=True)
        what = "the repo itself, as a package (pyproject.toml [project] or setup.py)"
        plan.findings.append(Finding(what, None, "sure"))
        lines += _package_lines(scan)
    elif scan.exists("pyproject.toml") or scan.exists("setup.cfg"):
        plan = InstallPlan([], packages=["-e ."])
        note = "no [project] table: installed as a package by its build backend"
        plan.findings.append(Finding("pyproject.toml/setup.cfg", None, "likely", note))
    else:
        plan = InstallPlan([])
        env = next((n for n in ("environment.yml", "environment.yaml") if n in root), None)
        if env is not None:
            plan.packages = _conda_packages(scan, env)
            note = "a conda environment, installed with pip: check the names"
            plan.findings.append(Finding(f"{env}", Where(env), "likely", note))
        else:
            plan.packages = missing_imports(scan, files)
            if plan.packages:
                note = "no requirement file: the imports that Colab does not preinstall"
                plan.findings.append(Finding("imports", None, "guess", note))
                plan.todo = "check install.packages: init guessed them from the imports"
            else:
                note = "no requirement file, and Colab preinstalls every package it imports"
                plan.findings.append(Finding("imports", None, "likely", note))
        lines += [(p, Where(env or "imports")) for p in plan.packages]
    _pins(plan, lines)
    return plan


def _requirement_lines(scan: RepoScan, name: str) -> list[tuple[str, Where]]:
    text = scan.text(name) or ""
    return [(line, Where(name, n)) for n, line in logical_lines(text) if not line.startswith("-")]


def _is_package(scan: RepoScan) -> bool:
    text = scan.text("pyproject.toml") or ""
    return scan.exists("setup.py") or re.search(r"^\s*\[project\]", text, re.M) is not None


def _package_lines(scan: RepoScan) -> list[tuple[str, Where]]:
    """Dependencies named in pyproject.toml's [project] or setup.py's install_requires."""
    found: list[tuple[str, Where]] = []
    for name in ("pyproject.toml", "setup.py", "setup.cfg"):
        text = scan.text(name) or ""
        block = re.search(r"(dependencies|install_requires)\s*=\s*\[([^\]]*)\]", text, re.S)
        if block is None:
            continue
        start = text[: block.start(2)].count("\n") + 1
        for match in re.finditer(r"['\"]([^'\"]+)['\"]", block.group(2)):
            line = start + block.group(2)[: match.start()].count("\n")
            found.append((match.group(1), Where(name, line)))
    return found


def _conda_packages(scan: RepoScan, name: str) -> list[str]:
    try:
        data = yaml.safe_load(scan.text(name) or "") or {}
    except yaml.YAMLError:
        scan.notes.append(f"{name}: not valid YAML, not read")
        return []
    packages: list[str] = []
    for dep in data.get("dependencies", []) if isinstance(data, dict) else []:
        if isinstance(dep, dict):
            packages += [str(p) for p in dep.get("pip", []) or []]
        elif isinstance(dep, str):
            pkg, _, version = dep.split("::")[-1].partition("=")
            pkg = {"pytorch": "torch"}.get(pkg.strip(), pkg.strip())
            if pkg.lower() not in _CONDA_ONLY and pkg:
                version = version.lstrip("=").split("=")[0]
                packages.append(f"{pkg}=={version}" if version and "*" not in version else pkg)
    return packages


def missing_imports(scan: RepoScan, files: list[PyFile]) -> list[str]:
    """Third-party packages the code imports that Colab does not preinstall."""
    local = {n.removesuffix(".py") for n in scan.listdir()}
    for py in files:
        local |= {part for part in py.path.removesuffix(".py").split("/")}
    colab = colab_packages()
    wanted: list[str] = []
    for py in files:
        for node in ast.walk(py.tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top == "__future__":
                    continue
                package = _IMPORT_NAMES.get(top, top)
                if str(canonicalize_name(package)) not in colab and package not in wanted:
                    wanted.append(package)
    return wanted


def _pins(plan: InstallPlan, lines: list[tuple[str, Where]]) -> None:
    colab = colab_packages()
    for text, where in lines:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        name = str(canonicalize_name(req.name))
        have = colab.get(name)
        if not req.specifier or have is None:
            continue
        try:
            fits = req.specifier.contains(Version(have), prereleases=True)
        except InvalidVersion:
            continue
        if fits:
            continue
        held = name in DEFAULT_KEEP or name in HOLD_TOO
        if name in HOLD_TOO and name not in plan.keep:
            plan.keep.append(name)
        what = "held at Colab's" if held else "would replace Colab's"
        plan.pins.append(f"{req.name}{req.specifier} ({where}): {what} {have}")
