"""recipes/colab.ipynb and recipes/kaggle.ipynb are valid notebooks, and their cells (apart from
the Colab-only or Kaggle-only ones) run here against the demo recipe, `!` shell lines included
(the Kaggle one on a fake Kaggle machine, twice: a second session resumes from the first's
output)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
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


# ---------------------------------------------------------------- recipes/kaggle.ipynb

KAGGLE_NOTEBOOK = RECIPES / "kaggle.ipynb"


def test_kaggle_notebook_structure_is_valid() -> None:
    notebook = json.loads(KAGGLE_NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 5
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(ids) == len(set(ids))
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert all(isinstance(line, str) for line in cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    sources = ["".join(c["source"]) for c in notebook["cells"]]
    assert not any("google.colab" in s or "import kaggle" in s for s in sources)
    assert any("!python -m bootstrap {RECIPE}" in s for s in sources)
    assert any('os.environ["BOOTSTRAP_RESUME_FROM"] = RESUME_FROM' in s for s in sources)
    assert any("bootstrap.prepare(RECIPE)" in s for s in sources)
    assert "kaggle.com/static/images/open-in-kaggle.svg" in sources[0]
    assert notebook["metadata"]["kaggle"]["accelerator"] == "nvidiaTeslaT4"


def _run_kaggle_cells(namespace: dict) -> int:
    """Every code cell but the Kaggle-only ones, in this process; `!` lines see os.environ,
    as a kernel's child processes do (the RESUME_FROM cell sets a variable there)."""
    ran = 0
    for cell in json.loads(KAGGLE_NOTEBOOK.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code" or "kaggle-only" in cell["metadata"].get("tags", []):
            continue
        python_lines = []
        for line in "".join(cell["source"]).splitlines():
            if line.startswith("!"):
                _run_shell_line(line, namespace, dict(os.environ))
            else:
                python_lines.append(line)
        exec(compile("\n".join(python_lines), f"cell-{ran}", "exec"), namespace)  # noqa: S102
        ran += 1
    return ran


def _kaggle_session(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, root: Path, recipe: Path, resume: str
) -> dict:
    """One session of the notebook on a fake Kaggle machine at ``root``: its defaults for the
    storage roots (the sandbox's left out), a session started now."""
    (root / "working").mkdir(parents=True)
    (root / "input").mkdir(exist_ok=True)
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    for key in ("BOOTSTRAP_PERSIST", "BOOTSTRAP_SCRATCH", "BOOTSTRAP_KAGGLE"):
        monkeypatch.delenv(key, raising=False)
    # Set here, so that monkeypatch takes back what the cells set in os.environ themselves
    # (the RESUME_FROM cell, and prepare()): later tests must not see them. "" is unset.
    for key in ("BOOTSTRAP_RESUME_FROM", "BOOTSTRAP_RUN_DIR", "BOOTSTRAP_CHECKPOINTS"):
        monkeypatch.setenv(key, "")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("BOOTSTRAP_KAGGLE_DIR", str(root))
    monkeypatch.setenv("BOOTSTRAP_BOOT_TIME", str(time.time()))
    monkeypatch.setenv("RECIPE", str(recipe))
    monkeypatch.setenv("RESUME_FROM", resume)
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace: dict = {}
    try:
        assert _run_kaggle_cells(namespace) >= 5
    finally:
        sys.modules.pop("train", None)
        if "env" in namespace:
            namespace["env"].sync()
    return namespace


def test_kaggle_notebook_cells_run_and_a_second_session_resumes_from_the_first(
    sandbox: Sandbox, demo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = tmp_path / "kaggle-1"
    with monkeypatch.context() as patch:
        ran = _kaggle_session(patch, sandbox, first, demo, resume="")
    outputs = "".join(ran["_shell_output"])
    assert "demo: finished" in outputs
    persist = first / "working" / "colab-bootstrap"
    assert ran["env"].persist == persist and ran["env"].scratch == first / "temp"
    assert Path(ran["train"].__file__).parent == ran["env"].repo
    assert (persist / "runs/demo/checkpoints/epoch-009.pt").is_file()

    # The next session: the first one's output attached as an input, named in RESUME_FROM.
    second = tmp_path / "kaggle-2"
    attached = second / "input" / "my-notebook"
    shutil.copytree(first / "working", attached)
    with monkeypatch.context() as patch:
        again = _kaggle_session(patch, sandbox, second, demo, resume=str(attached))
    outputs = "".join(again["_shell_output"])
    assert "resumed from" in outputs and "epoch-009.pt" in outputs
    assert (second / "working/colab-bootstrap/runs/demo/checkpoints/epoch-009.pt").is_file()
