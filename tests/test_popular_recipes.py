"""The shipped recipes for karpathy/nanoGPT and kuangliu/pytorch-cifar, checked against what
those repos expect (their argument syntax, paths and resume flags), without their code."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bootstrap.recipe.load import load_recipe
from tests.conftest import RECIPES, Sandbox

NANOGPT = RECIPES / "nanogpt.yaml"
CIFAR = RECIPES / "pytorch-cifar.yaml"

# The config globals of nanoGPT's train.py that its configurator accepts as --key=value.
NANOGPT_KEYS = {
    "out_dir", "eval_interval", "log_interval", "eval_iters", "eval_only",
    "always_save_checkpoint", "init_from", "wandb_log", "wandb_project", "wandb_run_name",
    "dataset", "gradient_accumulation_steps", "batch_size", "block_size", "n_layer", "n_head",
    "n_embd", "dropout", "bias", "learning_rate", "max_iters", "weight_decay", "beta1", "beta2",
    "grad_clip", "decay_lr", "warmup_iters", "lr_decay_iters", "min_lr", "backend", "device",
    "dtype", "compile",
}  # fmt: skip


def nanogpt_overrides(args: tuple[str, ...]) -> dict[str, str]:
    """nanoGPT's configurator rules: config files first (no '--'), then --key=value with exactly
    one '=' (it does ``key, val = arg.split('=')``) naming a known key."""
    overrides: dict[str, str] = {}
    for arg in args:
        if "=" not in arg:
            assert not arg.startswith("--") and not overrides, f"{arg!r} is not a config file"
            continue
        assert arg.startswith("--") and arg.count("=") == 1, f"nanoGPT cannot parse {arg!r}"
        key, value = arg[2:].split("=")
        assert key in NANOGPT_KEYS, f"nanoGPT has no config key {key!r}"
        overrides[key] = value
    return overrides


def git_repo(path: Path) -> Path:
    """An empty local git repo standing in for the real URL, so that nothing is downloaded."""
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


@pytest.mark.parametrize("path", [NANOGPT, CIFAR], ids=lambda p: p.name)
def test_recipe_header_and_real_url(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../bootstrap/recipe.schema.json"
    recipe = load_recipe(path, environ={})
    owner = "karpathy/nanoGPT" if path == NANOGPT else "kuangliu/pytorch-cifar"
    assert recipe.repo.url == f"https://github.com/{owner}.git"
    assert recipe.gpu == "required"


def test_nanogpt_args_parse_as_nanogpt_expects() -> None:
    full = load_recipe(NANOGPT, environ={})
    smoke = load_recipe(NANOGPT, smoke=True, environ={})
    for recipe in (full, smoke):
        assert recipe.run.script == "train.py"
        assert recipe.run.args[0] == "config/train_shakespeare_char.py"
        overrides = nanogpt_overrides(recipe.run.args + (recipe.run.resume or ()))
        # ckpt.pt lands where the tool watches, and is written at every eval, not only the best
        assert overrides["out_dir"] == recipe.run.checkpoints == "{ckpt}"
        assert overrides["always_save_checkpoint"] == "True"
        assert overrides["init_from"] == "resume"
    assert full.run.match == ("ckpt.pt",)
    assert full.run.resume == ("--init_from=resume",)
    cpu = nanogpt_overrides(smoke.run.args)
    assert cpu["device"] == "cpu" and cpu["compile"] == "False" and cpu["dtype"] == "float32"
    # small enough for minutes on a CPU, and at least two checkpoints to resume between
    assert int(cpu["n_layer"]) * int(cpu["n_embd"]) <= 256
    assert int(cpu["max_iters"]) // int(cpu["eval_interval"]) >= 2
    assert int(cpu["max_iters"]) <= 500 and int(cpu["eval_iters"]) <= 20


def test_nanogpt_dry_run_resolves_paths(sandbox: Sandbox, tmp_path: Path) -> None:
    url = git_repo(tmp_path / "nanogpt")
    result = sandbox.cli(NANOGPT, "--smoke", "--dry-run", "--set", f"repo.url={url}")
    assert result.returncode == 0, result.stderr
    repo = sandbox.scratch / "smoke" / "repos" / "nanogpt-shakespeare-char"  # --smoke: apart
    ckpt = sandbox.scratch / "smoke" / "checkpoints" / "nanogpt-shakespeare-char"
    out = result.stdout
    # train.py reads data/<dataset>/*.bin relative to its cwd, the repo root
    assert f"train.py config/train_shakespeare_char.py --out_dir={ckpt} " in out
    assert f"in         {repo}\n" in out
    assert "--init_from=resume" not in out  # no ckpt.pt yet: resuming would crash nanoGPT
    # nanoGPT's own prepare.py runs first, in the clone, and is skipped once its outputs exist
    assert f"prepare[0]   {sys.executable} {repo}/data/shakespeare_char/prepare.py " in out
    assert "data/shakespeare_char/train.bin" in out


def test_nanogpt_resumes_only_when_ckpt_exists(sandbox: Sandbox, tmp_path: Path) -> None:
    url = git_repo(tmp_path / "nanogpt")
    ckpt = sandbox.scratch / "smoke" / "checkpoints" / "nanogpt-shakespeare-char"
    ckpt.mkdir(parents=True)
    (ckpt / "notes.txt").write_text("not a checkpoint")
    args = (NANOGPT, "--smoke", "--dry-run", "--set", f"repo.url={url}")
    assert "--init_from=resume" not in sandbox.cli(*args).stdout
    # a complete torch-style file (a zip with its central directory) is one to resume from
    with zipfile.ZipFile(ckpt / "ckpt.pt", "w") as archive:
        archive.writestr("ckpt/data.pkl", b"0")
    out = sandbox.cli(*args).stdout
    assert out.rstrip().count("--init_from=resume") == 1
    assert "--log_interval=10 --init_from=resume" in out  # appended after the overrides
    assert "--init_from=resume" not in sandbox.cli(*args, "--fresh").stdout  # sets it aside


def test_pytorch_cifar_resume_matches_main_py(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = load_recipe(CIFAR, environ={})
    # main.py: torch.save(state, './checkpoint/ckpt.pth'); `--resume` is a store_true flag
    assert recipe.run.script == "main.py" and recipe.run.args == ()
    assert recipe.run.checkpoints == "{repo}/checkpoint"
    assert recipe.run.match == ("ckpt.pth",)
    assert recipe.run.resume == ("--resume",)
    # torchvision looks in ./data/cifar-10-batches-py; the official archive holds that folder
    assert recipe.data[0].to == "{repo}/data"
    assert recipe.data[0].source.endswith("cifar-10-python.tar.gz")
    url = git_repo(tmp_path / "cifar")
    result = sandbox.cli(CIFAR, "--dry-run", "--set", f"repo.url={url}", "--set", "gpu=optional")
    assert result.returncode == 0, result.stderr
    repo = sandbox.scratch / "repos" / "pytorch-cifar"
    assert f"checkpoints  {repo}/checkpoint\n" in result.stdout
    assert "train.py" not in result.stdout and "main.py\n" in result.stdout


def test_pytorch_cifar_smoke_trains_for_a_bounded_time(sandbox: Sandbox, tmp_path: Path) -> None:
    smoke = load_recipe(CIFAR, smoke=True, environ={})
    assert smoke.data == ()  # a CI runner has no Drive: torchvision downloads CIFAR-10 itself
    assert smoke.run.script == "main.py" and smoke.run.stop_after == 180
    # a stand-in main.py that, like the real one, trains far longer than a smoke run may take
    # and does not catch Ctrl-C
    repo = git_repo(tmp_path / "cifar")
    (repo / "main.py").write_text(
        "import time\nprint('Epoch: 0', flush=True)\nwhile True:\n    time.sleep(0.05)\n"
    )
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m"],
        check=True,
    )
    result = sandbox.cli(
        CIFAR, "--smoke", "--set", f"repo.url={repo}", "--set", "run.stop_after=2s"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Epoch: 0" in result.stdout
    assert "stopped after 2s as run.stop_after asks" in result.stdout + result.stderr
