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
    """Read the process's output until a line containing ``needle``; return what was read.

    Byte by byte from the pipe itself, never through the file object's buffer: a buffered read
    takes in the lines after the first of a chunk, where select() cannot see them (a needle
    among them was missed), and where communicate(timeout=...), which reads the pipe itself,
    would never find them either. So what follows the needle's line stays in the pipe."""
    import select
    import time

    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen: list[str] = []
    line = bytearray()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
        if byte == b"\n":
            seen.append(line.decode(errors="replace"))
            line.clear()
            if needle in seen[-1]:
                return "".join(seen)
    seen.append(line.decode(errors="replace"))
    raise AssertionError(f"{needle!r} not seen in output:\n{''.join(seen)}")


def processes() -> Iterator[tuple[int, int, int, list[bytes]]]:
    """Every living process (Linux, from /proc): pid, parent's pid, process group, argv."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z":
            yield int(entry), int(ppid), int(pgrp), argv


def group(pgid: int) -> list[tuple[int, list[bytes]]]:
    """The living processes of a process group: (pid, argv)."""
    return [(pid, argv) for pid, _, pgrp, argv in processes() if pgrp == pgid]


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
