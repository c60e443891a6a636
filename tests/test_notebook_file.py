"""recipes/colab.ipynb is a valid notebook, and its cells (apart from the Colab-only ones) run
here against the demo recipe, `!` shell lines included."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RECIPES, Sandbox

NOTEBOOK = RECIPES / "colab.ipynb"


def _cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def test_notebook_structure_is_valid() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 5
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(ids) == len(set(ids))
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert all(isinstance(line, str) for line in cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    sources = ["".join(c["source"]) for c in notebook["cells"]]
    assert any("drive.mount('/content/drive')" in s for s in sources)
    assert any("!python -m bootstrap {RECIPE}" in s for s in sources)
    assert any("bootstrap.prepare(RECIPE)" in s for s in sources)
    assert "colab.research.google.com/assets/colab-badge.svg" in sources[0]


def _run_shell_line(line: str, namespace: dict, env: dict[str, str]) -> None:
    """IPython's `!cmd {VAR}`: expand {VAR} from the namespace, run without a shell."""
    command = re.sub(r"\{(\w+)\}", lambda m: shlex.quote(str(namespace[m.group(1)])), line[1:])
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    namespace.setdefault("_shell_output", []).append(result.stdout)


def test_notebook_cells_run_against_the_demo(
    sandbox: Sandbox, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {**sandbox.env, "RECIPE": str(demo)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace: dict = {}
    ran = 0
    try:
        for cell in _cells():
            if cell["cell_type"] != "code" or "colab-only" in cell["metadata"].get("tags", []):
                continue
            source = "".join(cell["source"])
            python_lines = []
            for line in source.splitlines():
                if line.startswith("!"):
                    _run_shell_line(line, namespace, {**sandbox.env, "RECIPE": str(demo)})
                else:
                    python_lines.append(line)
            exec(compile("\n".join(python_lines), f"cell-{ran}", "exec"), namespace)  # noqa: S102
            ran += 1
    finally:
        sys.modules.pop("train", None)
        if "env" in namespace:
            namespace["env"].sync()
    assert ran >= 5
    outputs = "".join(namespace["_shell_output"])
    assert "demo: finished" in outputs  # the --status cell after the run cell
    assert Path(namespace["train"].__file__).parent == namespace["env"].repo
