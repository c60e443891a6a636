"""Shared fixtures: an isolated environment, the demo repo copied to a temp folder, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


@dataclass
class Sandbox:
    """A fake machine: persist and scratch folders, and the environment the CLI sees."""

    root: Path
    persist: Path
    scratch: Path
    env: dict[str, str]

    def cli(
        self, *args: str | os.PathLike[str], timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bootstrap", *map(str, args)],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def popen(
        self, *args: str | os.PathLike[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bootstrap", *map(str, args)],
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.root,
            start_new_session=True,
        )

    def wipe_scratch(self) -> None:
        """What a new Colab VM looks like: everything on local disk is gone."""
        shutil.rmtree(self.scratch)
        self.scratch.mkdir()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    persist, scratch = tmp_path / "persist", tmp_path / "scratch"
    persist.mkdir()
    scratch.mkdir()
    # One definition of the fake machine's environment, shared with the standalone stress script.
    from tests.stress_exact_resume import sandbox_env

    yield Sandbox(tmp_path, persist, scratch, sandbox_env(persist, scratch))


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A copy of the demo recipe, its repo and its data, in a temp folder."""
    target = tmp_path / "recipes"
    shutil.copytree(RECIPES / "demo", target / "demo")
    shutil.copy(RECIPES / "demo.yaml", target / "demo.yaml")
    return target / "demo.yaml"


def write_recipe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> str:
    """Read the process's output until a line containing ``needle``; return what was read."""
    import selectors
    import time

    assert proc.stdout is not None
    seen: list[str] = []
    end = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < end:
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return "".join(seen)
    raise AssertionError(f"{needle!r} not seen in output:\n{''.join(seen)}")


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


def args_of(values: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"
