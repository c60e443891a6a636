"""The CLI as a user meets it: one-line errors, exit codes, no tracebacks, no side effects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, Sandbox, write_recipe

GOOD = "name: t\nrepo: {url: repo}\ninstall: {requirements: []}\nrun: {script: train.py}\n"


def _repo(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "repo" / "train.py").write_text("print('trained')\n")


def _persist_is_empty(sandbox: Sandbox) -> bool:
    return not any(sandbox.persist.iterdir()) and not any(sandbox.scratch.iterdir())


def test_help_lists_exit_codes_without_importing_the_library() -> None:
    probe = (
        "import sys\n"
        "from bootstrap.cli import build_parser\n"
        "text = build_parser().format_help()\n"
        "assert 'exit codes' in text and '130 interrupted' in text, text\n"
        "heavy = ('torch', 'git', 'pydantic', 'bootstrap.runner.pipeline')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "HEAVY []" in out.stdout


def test_bad_recipe_exit_2_all_problems_no_traceback(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "bad.yaml",
        "name: t\nrepo: {url: repo}\nrun:\n  script: train.py\n  restarts: three\n  resartz: 1\n",
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 2
    assert f"{recipe}:5: run.restarts: " in result.stderr
    assert f"{recipe}:6: run.resartz: " in result.stderr and "did you mean" in result.stderr
    assert "Traceback" not in result.stderr
    assert _persist_is_empty(sandbox)


def test_bad_set_override_exit_2(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD)
    result = sandbox.cli(recipe, "--set", "run.restarts")
    assert result.returncode == 2 and "--set" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_profile_exit_2(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD)
    result = sandbox.cli(recipe, "--profile", "nope")
    assert result.returncode == 2 and "nope" in result.stderr


def test_colab_without_drive_stops_before_any_work(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD)
    env = {k: v for k, v in sandbox.env.items() if k != "BOOTSTRAP_PERSIST"}
    env.update(BOOTSTRAP_COLAB="1", BOOTSTRAP_CONTENT_DIR=str(tmp_path / "content"))
    result = subprocess.run(
        [sys.executable, "-m", "bootstrap", str(recipe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "Google Drive is not mounted" in result.stderr
    assert "from google.colab import drive; drive.mount('/content/drive')" in result.stderr
    assert "Traceback" not in result.stderr
    assert _persist_is_empty(sandbox)


def test_recipe_on_unmounted_drive_says_to_mount_it(sandbox: Sandbox, tmp_path: Path) -> None:
    content = tmp_path / "content"
    (content / "drive").mkdir(parents=True)  # the mount point, empty: Drive is not mounted
    recipe = content / "drive" / "MyDrive" / "recipes" / "r.yaml"
    env = {"BOOTSTRAP_COLAB": "1", "BOOTSTRAP_CONTENT_DIR": str(content)}
    result = sandbox.cli(recipe, env=env)
    assert result.returncode == 3, result.stderr
    assert f"the recipe {recipe} is on Google Drive, which is not mounted" in result.stderr
    assert "drive.mount('/content/drive')" in result.stderr
    assert "not found" not in result.stderr


def test_smoke_needs_neither_drive_nor_gpu(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD + "gpu: required\n")
    env = {k: v for k, v in sandbox.env.items() if k != "BOOTSTRAP_PERSIST"}
    env.update(
        BOOTSTRAP_COLAB="1",
        BOOTSTRAP_CONTENT_DIR=str(tmp_path / "content"),
        HOME=str(tmp_path / "home"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "bootstrap", str(recipe), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "trained" in result.stdout


SHARED_ROOTS = """name: t
repo: {url: repo}
install: {requirements: []}
run:
  script: train.py
  args: ["--out", "{ckpt}", "--epochs", "3"]
  resume: ["--resume", "{checkpoint}"]
profiles:
  smoke:
    run: {args: ["--out", "{ckpt}", "--epochs", "1"]}
"""


def test_smoke_run_is_kept_apart_from_the_real_run(sandbox: Sandbox, tmp_path: Path) -> None:
    """Off Colab both runs get the same storage roots: a smoke run must not leave the real
    run finished, nor a checkpoint for it to resume."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "train.py").write_text(
        "import pathlib, sys\n"
        "args = sys.argv[1:]\n"
        "print('argv', args)\n"
        "out = pathlib.Path(args[args.index('--out') + 1])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'last.txt').write_text(args[args.index('--epochs') + 1])\n"
    )
    recipe = write_recipe(tmp_path / "r.yaml", SHARED_ROOTS)
    smoke = sandbox.cli(recipe, "--smoke")
    assert smoke.returncode == 0, smoke.stderr
    assert "'--epochs', '1'" in smoke.stdout
    real = sandbox.cli(recipe)
    assert real.returncode == 0, real.stderr
    assert "already finished" not in real.stderr
    assert "'--epochs', '3'" in real.stdout and "--resume" not in real.stdout
    assert (sandbox.persist / "smoke" / "runs" / "t").is_dir()
    assert (sandbox.scratch / "checkpoints" / "t" / "last.txt").read_text() == "3"
    assert (sandbox.scratch / "smoke" / "checkpoints" / "t" / "last.txt").read_text() == "1"


def test_gpu_required_without_gpu_exit_3_with_the_fix(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD + "gpu: required\n")
    result = sandbox.cli(recipe, env={"BOOTSTRAP_COLAB": "1"})
    assert result.returncode == 3
    assert "gpu: required, but this runtime has no GPU" in result.stderr
    assert "Change runtime type" in result.stderr
    assert _persist_is_empty(sandbox)


def test_missing_data_source_exit_3_one_line(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD + "data: [{source: nowhere.tar.gz}]\n")
    result = sandbox.cli(recipe)
    assert result.returncode == 3
    assert "nowhere.tar.gz" in result.stderr
    assert "Traceback" not in result.stderr
    assert "trained" not in result.stdout


def test_verbose_shows_the_traceback(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD + "data: [{source: nowhere.tar.gz}]\n")
    result = sandbox.cli(recipe, "--verbose")
    assert result.returncode == 3
    assert "Traceback" in result.stderr


def test_quiet_prints_only_the_training_and_the_outcome(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD)
    result = sandbox.cli(recipe, "--quiet")
    assert result.returncode == 0
    assert result.stdout == "trained\n"
    assert "✓" not in result.stderr


def test_plain_output_has_no_escape_codes(sandbox: Sandbox, tmp_path: Path) -> None:
    _repo(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", GOOD)
    result = sandbox.cli(recipe)
    assert result.returncode == 0
    assert "\x1b[" not in result.stderr + result.stdout
    assert "✓ repo" in result.stderr
