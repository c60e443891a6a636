"""The rank wrapper torchrun starts (bootstrap.training.ranked), run here without torchrun:
it must run a script or a module as `python` would, on a terminal of its own, with every line
marked with the rank, whole, and nothing lost at exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROBE = """\
import os, sys
print("argv", sys.argv[1:], "name", __name__)
print("path0", sys.path[0])
print("tty", [os.isatty(fd) for fd in (1, 2)], "size", os.get_terminal_size(1))
sys.stdout.write("bar 10%\\rbar 99%\\rbar done\\n")
sys.stderr.write("to stderr\\n")
sys.stdout.write("no newline at the end")
"""


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "RANK": "3", "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}
    return subprocess.run(
        [sys.executable, "-m", "bootstrap.training.ranked", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )


def test_a_script_runs_as_python_runs_it_with_every_line_marked(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "probe.py").write_text(PROBE)
    result = _run(tmp_path, "script", str(scripts / "probe.py"), "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""  # the training's stderr came through the marked output
    lines = result.stdout.decode().split("\n")
    assert lines[0] == "[rank 3] argv ['--epochs', '2'] name __main__"
    assert lines[1] == f"[rank 3] path0 {scripts}"  # the script's folder, as `python x.py`
    assert lines[2].startswith("[rank 3] tty [True, True] size os.terminal_size(")
    assert lines[3] == "[rank 3] bar 10%\r[rank 3] bar 99%\r[rank 3] bar done"
    assert lines[4] == "[rank 3] to stderr"
    assert lines[5] == "[rank 3] no newline at the end"  # drained at exit


def test_a_module_runs_as_python_dash_m_runs_it(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(PROBE)
    result = _run(tmp_path, "module", "pkg.probe", "x")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().split("\n")
    assert lines[0] == "[rank 3] argv ['x'] name __main__"


def test_a_crash_keeps_its_traceback_and_exit_code(tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text("print('before')\nraise SystemExit(7)\n")
    result = _run(tmp_path, "script", str(tmp_path / "crash.py"))
    assert result.returncode == 7
    assert result.stdout == b"[rank 3] before\n"
    (tmp_path / "boom.py").write_text("1 / 0\n")
    result = _run(tmp_path, "script", str(tmp_path / "boom.py"))
    assert result.returncode == 1
    # Python 3.13 colours a traceback on a terminal, as the rank's pty is.
    shown = re.sub(rb"\x1b\[[0-9;]*m", b"", result.stdout).decode()
    assert shown.splitlines() == [
        "[rank 3] Traceback (most recent call last):",  # then the script's frame alone,
        f'[rank 3]   File "{tmp_path / "boom.py"}", line 1, in <module>',  # as `python` shows
        "[rank 3]     1 / 0",
        *(["[rank 3]     ~~^~~"] if sys.version_info >= (3, 11) else []),
        "[rank 3] ZeroDivisionError: division by zero",
    ]
