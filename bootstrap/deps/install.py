"""Install a repo's requirements into the training interpreter, holding preinstalled packages.

Holding. Colab's torch (and friends) are built for the VM's CUDA; a repo that pins another torch
would pull gigabytes and break CUDA. Every ``keep`` package installed in the target interpreter is
pinned at its installed version in a constraints file, which holds it for dependencies too. A
requirement that names it directly is dropped from what the installer sees (a constraint cannot
override a direct requirement) and reported in ``InstallResult.held``. So the requirement files are
read (``requirements``): comments, line continuations, ``-r``/``-c`` includes (relative to
the including file), option lines passed through, and one filtered file written to ``state_dir``.
The installer runs in the repo root, where pip and uv both resolve relative paths (``-e .``,
``./pkg``); ``--find-links`` folders are made absolute (uv reads them against the filtered file).

Limitations of the reader, kept small on purpose (``packaging`` is not a dependency): a line is
matched by its PEP 508 name only; a kept package given as a path or URL is recognised by its wheel
file name or ``#egg=`` fragment, otherwise passed through; ``-r``/``-c`` with a URL are passed
through unread; ``pip_args`` are passed through unread; hash-checking mode is not adapted to pins.

Skipping. A marker in ``state_dir`` is keyed by a sha256 of everything the install depends on: the
bytes of each file read, the filtered files (they carry the pins and ``packages``), ``pip_args``,
the interpreter and the installer. The repo itself is installed editable (``-e .``), so a new
commit needs no reinstall unless its packaging files changed.

Interrupted installs. The marker is cleared before the installer starts, so a killed install is
redone, and what it left behind is dealt with first. uv links a wheel's files in no set order, so
a package it was writing can pass for installed; uv and pip write INSTALLER after every other
file, so a .dist-info without it is half-done, and uv is told to reinstall it (pip cannot
reinstall one package alone, but it writes a wheel's .dist-info last). INSTALLER is not enough:
uv rewrites RECORD after it, 8 KiB at a time, and a package whose RECORD was cut short looks
installed but cannot be uninstalled, so its .dist-info outlives the next upgrade. So while the
installer runs, a file named ``PENDING`` sits in the target's site-packages (it lives and dies
with the packages, whatever happens to scratch); found by the next install, every .dist-info
changed since it was written is reinstalled too. An uninstall cut short
leaves debris that is deleted: uv's, a .dist-info without METADATA (it removes the folder last;
no tool can read or uninstall it); pip's, the ~-named folders it moves the old version to until
the new one is in (pip takes them for the package and keeps the old .dist-info beside the new).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bootstrap.deps.requirements import (
    RequirementsReader,
    asks_any_version,
    canonical_name,
    requirement_sources,
)
from bootstrap.errors import InstallError
from bootstrap.fsutil import Marker, atomic_write_text
from bootstrap.progress import ProgressFactory, no_progress

__all__ = ["InstallResult", "Installer", "install_requirements"]

log = logging.getLogger(__name__)

# The CLI installs into (and trains with) the Python that runs it; the library takes python=.
_PYTHON_HINT = (
    "packages go into the Python that runs the tool: start `python -m bootstrap` with the "
    "interpreter the training should use (or pass python= to install_requirements)"
)
_MARKER_VERSION = 1  # bump when what an install does for the same inputs changes
_TAIL_LINES = 20
_SHOWN = re.compile(
    r"\s*(Collecting|Downloading|Building|Installing|Uninstalling|Resolved|"
    r"Prepared|Installed|Successfully|\+ )"
)
_COUNTED = re.compile(r"\s*(Collecting |\+ )")
_USERINFO = re.compile(r"(://)[^/@\s]+@")
# Run by the training's interpreter, which may lack packaging: PEP 503 names by hand there.
_VERSIONS = """
import json, re, sys
from importlib import metadata
want, found = set(sys.argv[1:]), {}
for dist in metadata.distributions():
    key = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
    if key in want and key not in found:
        found[key] = dist.version
print(json.dumps(found))
"""
PENDING = ".colab-bootstrap-install-pending"
# Run by the training's interpreter: what a killed install left in its site-packages. argv[1] is
# PENDING; a .dist-info is changed since it when the folder's entries or its RECORD are.
_LEFTOVERS = """
import json, os, sys, sysconfig
purelib = sysconfig.get_path("purelib")
try:
    since = os.stat(os.path.join(purelib, sys.argv[1])).st_mtime_ns
except OSError:
    since = None
half, debris = [], []
for folder in dict.fromkeys([purelib, sysconfig.get_path("platlib")]):
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        path = os.path.join(folder, name)
        info = name.endswith(".dist-info") and os.path.isdir(path)
        if name.startswith("~") or info and not os.path.exists(os.path.join(path, "METADATA")):
            debris.append(path)
            continue
        if not info:
            continue
        changed = False
        if since is not None:
            record = os.path.join(path, "RECORD")
            times = [os.stat(p).st_mtime_ns for p in (path, record) if os.path.exists(p)]
            changed = max(times) >= since
        if changed or not os.path.exists(os.path.join(path, "INSTALLER")):
            half.append(name[: -len(".dist-info")].rsplit("-", 1)[0])
print(json.dumps([half, debris, purelib]))
"""

Installer = Literal["auto", "uv", "pip"]


@dataclass(frozen=True)
class InstallResult:
    skipped: bool
    installer: str  # "uv" | "pip" | "none" (nothing to install)
    held: list[tuple[str, str, str]]  # (name, installed version, requirement that asked otherwise)
    requirement_files: list[Path]  # every file read, includes too; pyproject.toml/setup.py for -e .
    seconds: float
    log_path: Path


def install_requirements(
    repo_root: Path,
    *,
    requirements: str | Sequence[str],
    packages: Sequence[str] = (),
    keep: Sequence[str] = ("torch", "torchvision", "torchaudio"),
    pip_args: Sequence[str] = (),
    python: Path = Path(sys.executable),
    state_dir: Path,
    log_path: Path,
    progress: ProgressFactory = no_progress,
    installer: Installer = "auto",
) -> InstallResult:
    """Install the repo's requirements and ``packages`` into ``python``; skip when unchanged."""
    started = time.monotonic()
    repo_root, state_dir, log_path = Path(repo_root), Path(state_dir), Path(log_path)
    if not repo_root.is_dir():
        raise InstallError(f"the repo folder {repo_root} does not exist", hint="clone it first")
    files, project = requirement_sources(repo_root, requirements)
    if not files and project is None and not packages:
        return InstallResult(False, "none", [], [], time.monotonic() - started, log_path)
    state_dir.mkdir(parents=True, exist_ok=True)
    pins = _installed(python, keep, state_dir)
    reader = RequirementsReader(repo_root, pins, frozenset(map(canonical_name, keep)))
    for path in files:
        reader.read(path, constraint=False)
    if project is not None:
        reader.project(project)
    if packages:
        reader.labels.append("install.packages")
    for number, spec in enumerate(packages):
        reader.line(spec.strip(), None, False, f"install.packages[{number}]")
    name, argv = _find_installer(installer, python)
    filtered, constraints = reader.render()
    digest = reader.digest
    for part in (filtered, constraints, json.dumps([name, str(python), list(pip_args)])):
        digest.update(part.encode() + b"\0")
    key = {"version": _MARKER_VERSION, "sha256": digest.hexdigest()}
    marker = Marker(state_dir / "install.json")
    held = reader.held
    if marker.is_done(key):
        log.debug("requirements unchanged since the last install; skipping")
        return InstallResult(True, name, held, reader.files, time.monotonic() - started, log_path)
    for who, version, spec, origin in reader.reports:
        if asks_any_version(spec):
            # A bare `torch` line is satisfied by what is installed: nothing was overridden.
            log.debug("kept %s %s (%s asks for any version)", who, version, origin)
        else:
            log.warning("held %s at %s (%s asked for %s)", who, version, origin, spec)
    for spec, where in reader.unheld:
        # Off Colab, often no torch yet: the installer then picks one, for torch a CUDA build
        # of several GB from PyPI. Worth a word before a download that size.
        log.warning(
            "%s asks for %s, which install.keep would hold, but it is not installed in %s: the "
            "installer picks a version (torch from PyPI is a CUDA build of several GB; for a "
            "CPU-only machine, install a CPU wheel first)",
            where,
            spec,
            python,
        )
    # Cleared first: an install that dies halfway must not pass for an older good one.
    marker.clear()
    if reader.wanted:
        req_file, con_file = state_dir / "install-requirements.txt", state_dir / "install-con.txt"
        atomic_write_text(req_file, filtered)
        atomic_write_text(con_file, constraints)
        repair, pending = _repair(name, python, pins, state_dir)
        argv += ["-r", str(req_file), "-c", str(con_file), *repair, *pip_args]
        _run(argv, repo_root, log_path, progress, name, reader.labels, pins)
        if pending is not None:
            pending.unlink(missing_ok=True)
    else:
        log.debug("nothing left to install once kept packages are held")
    marker.mark_done(key, installer=name, files=[str(f) for f in reader.files], held=held)
    used = name if reader.wanted else "none"
    return InstallResult(False, used, held, reader.files, time.monotonic() - started, log_path)


def _installed(python: Path, keep: Sequence[str], cwd: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as kept, installed version) for each kept package installed."""
    names = {canonical_name(n): n for n in keep}
    if not names:
        return {}
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        found = _versions_here(set(names))
    else:
        try:
            done = subprocess.run(
                [str(python), "-c", _VERSIONS, *names],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(
                f"cannot run the Python interpreter {python}: {exc}",
                hint=_PYTHON_HINT,
            ) from exc
        if done.returncode != 0:
            raise InstallError(
                f"the Python interpreter {python} failed to list its packages "
                f"(exit {done.returncode})",
                hint=_PYTHON_HINT,
                details=done.stderr.strip()[-2000:],
            )
        found = json.loads(done.stdout)
    return {key: (names[key], version) for key, version in found.items()}


def _versions_here(want: set[str]) -> dict[str, str]:
    """canonical name -> version of each wanted package this interpreter imports.

    Read from the ``.dist-info``/``.egg-info`` folders on ``sys.path``, the first one winning as
    for imports; ``importlib.metadata`` would parse every installed package's metadata and its
    import pulls in the email package: ~40 ms of every warm re-run for two or three names.
    """
    found: dict[str, str] = {}
    for entry in sys.path:
        folder = entry or "."
        try:
            names = os.listdir(folder)
        except OSError:  # a zip file, or gone
            continue
        for name in names:
            stem, _, suffix = name.rpartition(".")
            if suffix not in ("dist-info", "egg-info"):
                continue
            key = canonical_name(stem.split("-", 1)[0])
            if key in want and key not in found:
                version = _metadata_version(os.path.join(folder, name))
                if version:
                    found[key] = version
    return found


def _metadata_version(info: str) -> str | None:
    """The ``Version:`` header of a .dist-info's METADATA or an .egg-info's PKG-INFO."""
    if os.path.isdir(info):
        info = os.path.join(info, "METADATA" if info.endswith(".dist-info") else "PKG-INFO")
    try:
        with open(info, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Version:"):
                    return line[len("Version:") :].strip() or None
                if not line.strip():  # the headers end at the first blank line
                    return None
    except OSError:
        pass
    return None


def _repair(
    installer: str, python: Path, pins: dict[str, tuple[str, str]], cwd: Path
) -> tuple[list[str], Path | None]:
    """Clear what a killed install left behind; installer arguments that finish its work, and
    the PENDING file, written now unless a killed install left it (its time says what it did)."""
    try:
        done = subprocess.run(
            [str(python), "-c", _LEFTOVERS, PENDING],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        half, debris, purelib = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        log.debug("could not look for what an interrupted install left: %s", exc)
        return [], None
    pending = _mark_pending(Path(purelib) / PENDING)
    if debris:
        log.warning("removing %s, left by an interrupted uninstall", ", ".join(debris))
    for path in map(Path, debris):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    found = sorted({canonical_name(n) for n in half} - set(pins))  # held ones are never written
    if not found or installer != "uv":
        return [], pending
    log.warning(
        "reinstalling %s, which an interrupted install may have left half-done", ", ".join(found)
    )
    return [arg for name in found for arg in ("--reinstall-package", name)], pending


def _mark_pending(path: Path) -> Path | None:
    """Write the PENDING file, unless a killed install left it: its time says what it touched."""
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write("colab-bootstrap installs here; a killed install leaves this file\n")
    except FileExistsError:
        pass
    except OSError as exc:  # a read-only site-packages: the installer will say so
        log.debug("cannot write %s: %s", path, exc)
        return None
    return path


def _find_installer(choice: Installer, python: Path) -> tuple[str, list[str]]:
    if choice not in ("auto", "uv", "pip"):
        raise ValueError(f"installer must be 'auto', 'uv' or 'pip', not {choice!r}")
    if choice != "pip":
        uv = shutil.which("uv")
        if uv is None and importlib.util.find_spec("uv") is not None:
            from uv import find_uv_bin

            with contextlib.suppress(FileNotFoundError):  # the package without its binary
                uv = find_uv_bin()
        if uv:
            return "uv", [uv, "pip", "install", "--python", str(python)]
        if choice == "uv":
            raise InstallError("uv is not installed", hint="install it (pip install uv) or use pip")
    return "pip", [str(python), "-m", "pip", "install", "--progress-bar", "off"]


def _run(
    argv: list[str],
    cwd: Path,
    log_path: Path,
    progress: ProgressFactory,
    name: str,
    labels: list[str],
    pins: dict[str, tuple[str, str]],
) -> None:
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    command = "uv pip install" if name == "uv" else "pip install"
    what = " and ".join(dict.fromkeys(labels))
    log.debug("installing %s with %s", what, command)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InstallError(f"cannot write the install log {log_path}: {exc}") from exc
    bar = progress("install", None, "pkg")
    try:
        log_file.write("$ " + " ".join(_USERINFO.sub(r"\1***@", a) for a in argv) + "\n")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise InstallError(
                f"cannot start {command} ({argv[0]}): {exc}",
                hint=_PYTHON_HINT,
            ) from exc
        try:
            for raw in proc.stdout or ():
                log_file.write(raw)
                text = raw.rstrip()
                if text:
                    tail.append(text)
                if _SHOWN.match(text):
                    bar.set_description(text.strip()[:80])
                    bar.advance(1 if _COUNTED.match(text) else 0)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        bar.close()
        log_file.close()
    if code != 0:
        held = ", ".join(f"{n}=={v}" for n, v in pins.values())
        raise InstallError(
            f"{command} failed ({_exit(code)}) for {what}",
            hint=f"full log: {log_path}" + (f"; held by install.keep: {held}" if held else ""),
            details="\n".join(tail),
        )


def _exit(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"
