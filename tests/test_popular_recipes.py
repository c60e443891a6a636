"""The shipped recipes for karpathy/nanoGPT and kuangliu/pytorch-cifar, checked against what
those repos expect, with no download.

The fast tests check the recipes' keys and placeholders: the arguments parse as the repos'
argument parsers want them, the paths resolve where the repos look (dry runs against an empty
local repo), and the resume flag is added only when the checkpoint file is there.

The slow tests run each real recipe file on a stand-in of its repo (tests/popular/: the entry
point's flags and parsing, data paths, checkpoint file, keys and resume logic, with a tiny model
on tiny generated data, on the CPU), SIGKILL the tool's process group once a checkpoint has
reached persist, wipe scratch (a new VM), run again, and check that the training resumed from
that checkpoint and finished. Only the repo URL, the data source and what cannot work offline are
redirected; each redirection is named where it is made.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from bootstrap.recipe.load import load_recipe
from tests.conftest import RECIPES, Sandbox, git

NANOGPT = RECIPES / "nanogpt.yaml"
CIFAR = RECIPES / "pytorch-cifar.yaml"
STAND_INS = Path(__file__).resolve().parent / "popular"
# How long a stand-in waits after the save a slow test kills it at (it is killed long before).
HOLD = {"STANDIN_HOLD_AFTER_SAVE": "120"}
# One torch thread: on a small shared machine a second one mostly waits for a core.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

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
def test_recipe_header_url_and_gpu_key(path: Path) -> None:
    """The schema header for editors, the real repo URL, and `gpu: required`."""
    first = path.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../bootstrap/recipe.schema.json"
    recipe = load_recipe(path, environ={})
    owner = "karpathy/nanoGPT" if path == NANOGPT else "kuangliu/pytorch-cifar"
    assert recipe.repo.url == f"https://github.com/{owner}.git"
    assert recipe.gpu == "required"


def test_nanogpt_recipe_args_are_configurator_keys() -> None:
    """Every arg, the resume arg included, parses as nanoGPT's configurator wants it: the
    config file first, then --key=value with a known key; and the CPU profile is small."""
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


def test_nanogpt_recipe_placeholders_resolve_in_dry_run(sandbox: Sandbox, tmp_path: Path) -> None:
    """{ckpt} and {repo} resolve where nanoGPT writes and reads (a dry run, an empty repo)."""
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


def test_nanogpt_recipe_resume_arg_only_when_ckpt_pt_exists(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """--init_from=resume is appended, last, only when {ckpt}/ckpt.pt is there (dry runs)."""
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


def test_pytorch_cifar_recipe_keys_and_placeholders_resolve(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """main.py, ./checkpoint/ckpt.pth, --resume and ./data as main.py has them; {repo} resolves
    to the clone (a dry run, an empty repo)."""
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


def test_pytorch_cifar_smoke_profile_stops_an_endless_main_py(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The smoke profile stages no data and its run.stop_after ends a main.py that never ends
    on its own (a loop that sleeps; the stand-in in tests/popular is for the slow test)."""
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


# -- stand-ins of the repos, killed and resumed -------------------------------------------------


def standin_repo(name: str, tmp_path: Path) -> Path:
    """tests/popular/<name> committed into a fresh git repo, standing in for the real URL."""
    repo = tmp_path / name
    shutil.copytree(STAND_INS / name, repo, ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", f"stand-in of {name}", cwd=repo)
    return repo


def output_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    """Read the tool's output until ``pattern`` matches it; the match (``.string``: all read).

    Unlike conftest's read_until it reads the pipe unbuffered: a stand-in goes quiet right after
    the line looked for, which may come in one chunk with the line before it and then sit unseen
    in a buffer that select() does not look at."""
    assert proc.stdout is not None
    fd, seen = proc.stdout.fileno(), b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # the tool exited: wait for its code, for the message
                proc.wait(timeout=10)
                break
            seen += chunk
            found = re.search(pattern, seen.decode(errors="replace"))
            if found:
                return found
    text = seen.decode(errors="replace")
    raise AssertionError(f"{pattern!r} not seen (the tool exited {proc.poll()}):\n{text[-3000:]}")


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None while it is missing or not whole yet."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None


def wait_for_mirrored(
    path: Path, key: str, value: int, proc: subprocess.Popen[str]
) -> dict[str, Any]:
    """The checkpoint mirrored to ``path`` once it is the one saved at ``key == value``."""
    end = time.monotonic() + 30
    while time.monotonic() < end and proc.poll() is None:
        found = load_checkpoint(path)
        if found is not None and found[key] == value:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{path} never held {key} {value} (the tool exited {proc.poll()})")


def sigkill_group(proc: subprocess.Popen[str]) -> None:
    """A VM lost: the tool's whole process group at once (the training dies with the tool)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def epochs_in(output: str) -> list[int]:
    """The epochs pytorch-cifar's main.py started, in order ("Epoch: N" lines)."""
    return [int(e) for e in re.findall(r"^Epoch: (\d+)\r?$", output, re.MULTILINE)]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    archive.addfile(info, io.BytesIO(data))


def commented_data_entry(recipe: Path) -> list[dict[str, str]]:
    """The recipe's commented-out `data:` block, uncommented: its documented offline path."""
    lines = recipe.read_text().splitlines()
    block = []
    for line in lines[lines.index("# data:") :]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    return yaml.safe_load("\n".join(block))["data"]


def shakespeare_archive(path: Path) -> None:
    """A tar.gz holding input.txt: made-up text, 20 kB, the format of tinyshakespeare."""
    import random

    rng = random.Random(0)
    words = ("to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis")
    text = ""
    while len(text) < 20_000:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 10)))
        text += line.capitalize() + ".\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        add_file(archive, "input.txt", text.encode())


def cifar_archive(path: Path, per_batch: int = 20, tests: int = 100) -> None:
    """A tar.gz laid out like cifar-10-python.tar.gz (cifar-10-batches-py/data_batch_1..5,
    test_batch, batches.meta: pickled dicts, 'data' rows of 3072 uint8 in CHW order). The classes
    differ by a faint, coarse colour pattern under heavy noise, so the test accuracy climbs over
    several epochs (main.py saves only when it improves)."""
    import numpy as np

    rng = np.random.default_rng(0)
    patterns = np.kron(rng.normal(size=(10, 3, 4, 4)), np.ones((1, 1, 8, 8))).reshape(10, 3072)

    def batch(labels: list[int], title: str) -> bytes:
        pixels = 0.2 * patterns[labels] + rng.normal(size=(len(labels), 3072))
        entry = {
            "batch_label": title,
            "labels": labels,
            "data": np.clip(128 + 40 * pixels, 0, 255).astype(np.uint8),
            "filenames": [f"{i}.png" for i in range(len(labels))],
        }
        return pickle.dumps(entry, protocol=2)

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    meta = {"label_names": [*names, "truck"], "num_cases_per_batch": per_batch, "num_vis": 3072}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for i in range(1, 6):
            labels = rng.integers(0, 10, per_batch).tolist()
            add_file(archive, f"cifar-10-batches-py/data_batch_{i}", batch(labels, f"batch {i}"))
        test_labels = [i % 10 for i in range(tests)]
        add_file(archive, "cifar-10-batches-py/test_batch", batch(test_labels, "test batch"))
        add_file(archive, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))


def test_nanogpt_standin_has_the_configurator_keys() -> None:
    """The stand-in train.py accepts exactly the keys the fast tests check the recipe against."""
    import ast

    tree = ast.parse((STAND_INS / "nanogpt" / "train.py").read_text())
    config_globals = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "config_keys":
                break
            config_globals.add(name)
    assert config_globals == NANOGPT_KEYS


@pytest.mark.slow
def test_nanogpt_smoke_killed_after_ckpt_pt_resumes_at_its_iter_num(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """recipes/nanogpt.yaml --smoke on the nanoGPT stand-in: the staged input.txt, prepare.py,
    train.py with the profile's args; killed (the tool's process group, SIGKILL) once ckpt.pt of
    iteration 50 is on persist; scratch wiped; the re-run restores ckpt.pt into --out_dir, runs
    prepare.py again, and train.py with --init_from=resume goes on from iteration 50 to 150."""
    repo = standin_repo("nanogpt", tmp_path)
    # The recipe's documented offline path: input.txt in a tar on persist (--smoke: persist/smoke),
    # staged into the clone, where prepare.py finds it and so does not download it.
    data = commented_data_entry(NANOGPT)
    assert data == [
        {
            "source": "{persist}/datasets/shakespeare_input.tar.gz",
            "to": "{repo}/data/shakespeare_char",
        }
    ]
    shakespeare_archive(sandbox.persist / "smoke" / "datasets" / "shakespeare_input.tar.gz")
    args = (
        NANOGPT,
        "--smoke",  # the recipe's CPU profile: its train.py args, unchanged
        "--set", f"repo.url={repo}",
        "--set", f"data={json.dumps(data)}",
        # install.packages (numpy, requests) would install into this test's own interpreter, and
        # requests needs the network; numpy is here, requests is only for the download.
        "--set", "install.packages=[]",
    )  # fmt: skip
    run = sandbox.persist / "smoke" / "runs" / "nanogpt-shakespeare-char"
    ckpt = sandbox.scratch / "smoke" / "checkpoints" / "nanogpt-shakespeare-char"

    proc = sandbox.popen(*args, env={**HOLD, **ONE_THREAD})
    try:
        first = output_until(proc, "stand-in: holding after saving iter 50\n").string
        wait_for_mirrored(run / "checkpoints" / "ckpt.pt", "iter_num", 50, proc)
    finally:
        sigkill_group(proc)
    assert "Initializing a new model from scratch" in first and "step 0:" in first
    assert f"saving checkpoint to {ckpt}\n" in first  # --out_dir={ckpt}: where the tool watches
    sandbox.wipe_scratch()  # a new VM: the clone, its data/*.bin and ckpt.pt are gone

    again = sandbox.cli(*args, env=ONE_THREAD)
    out = again.stdout
    assert again.returncode == 0, out + again.stderr
    assert "restored" in again.stderr
    assert "vocab size: " in out  # prepare.py ran again on the new VM, from the staged input.txt
    assert f"Resuming training from {ckpt}\n" in out  # --init_from=resume, appended
    assert "Initializing a new model from scratch" not in out
    assert "iter 0:" not in out
    assert re.findall(r"^step (\d+):", out, re.MULTILINE) == ["50", "100", "150"], out
    final = load_checkpoint(run / "checkpoints" / "ckpt.pt")
    assert final is not None and final["iter_num"] == 150
    assert final["config"]["always_save_checkpoint"] is True


@pytest.mark.slow
def test_pytorch_cifar_killed_after_ckpt_pth_resumes_at_its_epoch(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """recipes/pytorch-cifar.yaml on the pytorch-cifar stand-in: the archive extracted into
    ./data, main.py on a terminal (utils.py runs `stty size`); killed once ./checkpoint/ckpt.pth
    of an epoch after the first is on persist; scratch wiped; the re-run restores it into the new
    clone and main.py --resume starts at that epoch and runs its 200 epochs from there."""
    repo = standin_repo("pytorch-cifar", tmp_path)
    # Where the recipe's data[0].source looks; its sha256 is the official archive's.
    archive = sandbox.persist / "datasets" / "cifar-10-python.tar.gz"
    cifar_archive(archive)
    args = (
        CIFAR,
        "--set", f"repo.url={repo}",
        "--set", f"data[0].sha256={sha256_of(archive)}",
        "--set", "gpu=optional",  # the full recipe (not --smoke) on this GPU-less machine
    )  # fmt: skip
    mirrored = sandbox.persist / "runs" / "pytorch-cifar" / "checkpoints" / "ckpt.pth"

    proc = sandbox.popen(*args, env={**HOLD, **ONE_THREAD})
    try:
        held = output_until(proc, r"stand-in: holding after saving epoch (\d+)\r?\n")
        first, epoch = held.string, int(held.group(1))
        saved = wait_for_mirrored(mirrored, "epoch", epoch, proc)
    finally:
        sigkill_group(proc)
    assert "==> Resuming from checkpoint.." not in first
    assert epochs_in(first) == list(range(epoch + 1))  # saved when test accuracy improved
    sandbox.wipe_scratch()  # a new VM: the clone, ./data and ./checkpoint in it are gone

    again = sandbox.cli(*args, env=ONE_THREAD)
    out = again.stdout
    assert again.returncode == 0, out[-3000:] + again.stderr
    assert "restored" in again.stderr
    assert "==> Resuming from checkpoint.." in out  # --resume, after ./checkpoint came back
    # main.py restarts at the saved epoch and runs 200 more
    assert epochs_in(out) == list(range(epoch, epoch + 200)), out[:3000]
    final = load_checkpoint(mirrored)
    # saved again only when the accuracy it resumed with (best_acc) was beaten
    assert final is not None and final["epoch"] >= epoch and final["acc"] >= saved["acc"]
