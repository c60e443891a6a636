"""Resolving a recipe into a Plan: storage precedence, placeholders, Colab defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.errors import HostError
from bootstrap.host import Host
from bootstrap.plan import resolve_plan
from bootstrap.recipe.load import load_recipe
from tests.conftest import write_recipe

LAPTOP = Host(
    on_colab=False,
    content_dir=Path("/nonexistent"),
    drive_mounted=False,
    gpu_names=(),
    boot_time=0.0,
)

RECIPE = """\
name: exp-1
repo: {url: ./code, path: src}
data:
  - {source: "{persist}/sets/a.tar", to: "{scratch}/datasets"}
  - {source: "https://example.com/b.zip"}
run:
  script: train.py
  args: ["--data", "{scratch}/datasets", "--out", "{ckpt}", "--home", "${HOME_DIR:-/home/x}"]
  env: {RUN_DIR: "{run}"}
  resume: ["--resume", "{checkpoint}"]
  time_limit: 1h
"""


def _colab(tmp_path: Path, *, mounted: bool) -> Host:
    return Host(
        on_colab=True,
        content_dir=tmp_path / "content",
        drive_mounted=mounted,
        gpu_names=("T4",),
        boot_time=1000.0,
    )


def test_every_placeholder_resolves(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", RECIPE), environ={})
    plan = resolve_plan(recipe, LAPTOP, persist="/p", scratch="/s", environ={}, now=50.0)
    assert plan.run_dir == Path("/p/runs/exp-1")
    assert plan.clone_dir == Path("/s/repos/exp-1")
    assert plan.work_dir == Path("/s/repos/exp-1/src")
    assert plan.repo_url == str(tmp_path / "code")  # relative to the recipe's folder
    assert plan.checkpoints == Path("/s/checkpoints/exp-1")
    assert plan.data[0].source == "/p/sets/a.tar"
    assert plan.data[0].dest == Path("/s/datasets")
    assert plan.data[1].source == "https://example.com/b.zip"
    assert plan.data[1].dest == Path("/s/data")
    assert plan.args == (
        "--data",
        "/s/datasets",
        "--out",
        "/s/checkpoints/exp-1",
        "--home",
        "/home/x",
    )
    assert plan.env == {"RUN_DIR": "/p/runs/exp-1"}
    assert plan.resume_for(Path("/s/checkpoints/exp-1/e3.pt")) == [
        "--resume",
        "/s/checkpoints/exp-1/e3.pt",
    ]
    assert plan.deadline == 50.0 + 3600  # off Colab: from the start of the run


def test_storage_precedence_cli_then_env_then_recipe(tmp_path: Path) -> None:
    text = RECIPE.replace("name: exp-1\n", "name: exp-1\nstorage: {persist: from-recipe}\n")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", text), environ={})
    env = {"BOOTSTRAP_PERSIST": "/from-env", "HOME": str(tmp_path)}
    assert resolve_plan(recipe, LAPTOP, environ={}).persist == tmp_path / "from-recipe"
    assert resolve_plan(recipe, LAPTOP, environ=env).persist == Path("/from-env")
    plan = resolve_plan(recipe, LAPTOP, persist="/from-cli", environ=env)
    assert plan.persist == Path("/from-cli") and plan.persist_origin == "--persist"
    assert plan.scratch == tmp_path / ".cache" / "colab-bootstrap"  # auto, off Colab


def test_colab_auto_uses_drive_and_content(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", RECIPE), environ={})
    plan = resolve_plan(recipe, _colab(tmp_path, mounted=True), environ={})
    assert plan.persist == tmp_path / "content/drive/MyDrive/colab-bootstrap"
    assert plan.scratch == tmp_path / "content"
    assert plan.deadline == 1000.0 + 3600  # on Colab: from the VM's boot


def test_colab_without_drive_stops_with_the_cell_to_run(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", RECIPE), environ={})
    with pytest.raises(HostError) as caught:
        resolve_plan(recipe, _colab(tmp_path, mounted=False), environ={})
    assert "drive.mount('/content/drive')" in str(caught.value.hint)
    # --smoke never needs Drive, and an explicit persist does not either
    assert resolve_plan(
        recipe, _colab(tmp_path, mounted=False), smoke=True, environ={"HOME": str(tmp_path)}
    ).persist.is_relative_to(tmp_path)
    assert resolve_plan(
        recipe, _colab(tmp_path, mounted=False), persist="/x", environ={}
    ).persist == Path("/x")

    # ... but an explicit one on Drive does: it would fill the VM's disk under the mount point
    on_drive = str(tmp_path / "content/drive/MyDrive/experiments")
    with pytest.raises(HostError) as caught:
        resolve_plan(recipe, _colab(tmp_path, mounted=False), persist=on_drive, environ={})
    assert f"storage.persist is {on_drive} (--persist), on Google Drive, but Drive is not" in str(
        caught.value
    )
    assert "drive.mount('/content/drive')" in str(caught.value.hint)
    assert resolve_plan(
        recipe, _colab(tmp_path, mounted=True), persist=on_drive, environ={}
    ).persist == Path(on_drive)


def test_run_keep_becomes_one_mirrored_tree_per_root(tmp_path: Path) -> None:
    text = RECIPE + (
        '  keep: ["{repo}/runs", "{repo}/metrics.csv", "{scratch}/samples/*.png",'
        ' "/elsewhere/logs", "{persist}/already-safe"]\n'
        '  exclude: ["**/wandb"]\n'
        '  match: "checkpoint-*/trainer_state.json"\n'
    )
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", text), environ={})
    plan = resolve_plan(recipe, LAPTOP, persist="/p", scratch="/s", environ={}, now=50.0)
    main, *kept = plan.trees
    assert (main.src, main.dst, main.include) == (plan.checkpoints, plan.mirror_dir, ("**/*",))
    assert [(t.src, t.dst, t.include, t.label) for t in kept] == [
        (
            Path("/s/repos/exp-1/src"),
            Path("/p/runs/exp-1/kept/repo"),
            ("runs", "runs/**/*", "metrics.csv", "metrics.csv/**/*"),
            "kept/repo",
        ),
        (Path("/s"), Path("/p/runs/exp-1/kept/scratch"), ("samples/*.png",), "kept/scratch"),
        (
            Path("/"),
            Path("/p/runs/exp-1/kept/root"),
            ("elsewhere/logs", "elsewhere/logs/**/*"),
            "kept/root",
        ),
    ]  # {persist}/already-safe is on persist already: left where it is
    assert all(tree.exclude == ("**/wandb",) for tree in plan.trees)
    # A glob from its first part on is relative to the recipe's folder, as every path is.
    starts_with_glob = load_recipe(
        write_recipe(tmp_path / "g.yaml", RECIPE + '  keep: ["*.log"]\n'), environ={}
    )
    (tree,) = resolve_plan(starts_with_glob, LAPTOP, persist="/p", scratch="/s", environ={}).kept
    assert tree.src / tree.include[0] == tmp_path / "*.log"
    assert [(r.folder, r.marker) for r in plan.folder_checkpoints] == [
        ("checkpoint-*", "trainer_state.json")
    ]
