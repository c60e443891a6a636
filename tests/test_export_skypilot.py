"""--export skypilot: the task a recipe becomes on cloud machines, checked by SkyPilot's own
loader (offline), its run script executed by bash as a node would run it, and the recipes that
cannot leave this machine refused with the key and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bootstrap.errors import RecipeError, UsageError
from bootstrap.export.skypilot import PERSIST_MOUNT, TOOL, SkyPilotChoices, export_skypilot
from bootstrap.options import Options
from tests.conftest import ROOT, Sandbox, write_recipe

ONE_GPU = """\
name: one-gpu
repo: {url: "https://github.com/me/project.git", ref: main}
data:
  - source: "{persist}/datasets/set.tar"
gpu: required
run:
  script: train.py
  args: ["--out", "{ckpt}"]
  resume: ["--resume", "{checkpoint}"]
"""

# Quotes, $, backticks, a heredoc-like line and ${VAR}: what the run script must carry intact.
TWO_NODES = """\
name: ddp
repo: {url: "git@github.com:me/private.git", token_env: GITHUB_TOKEN}
data:
  - source: "https://example.com/set.zip"
  - source: "{repo}/data/extra.tar"
gpu: required
run:
  script: train.py
  args: ["--note", "it's $(rm -rf ~) `id` \\"q\\"", "--key", "${WANDB_API_KEY}"]
  env: {PROJECT: "${WANDB_PROJECT:-demo}"}
  launcher: torchrun
  nproc: 2
# EOF
"""


def _export(recipe: Path, choices: SkyPilotChoices, **options: Any) -> str:
    environ = {"WANDB_API_KEY": "not-for-the-task", "GITHUB_TOKEN": "ghp_not_for_the_task"}
    return export_skypilot(Options(recipe=recipe, **options), choices, environ=environ)


@pytest.fixture(scope="module", autouse=True)
def sky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """SkyPilot (a test dependency: missing, this is an error, not a skip), imported with HOME
    in a temp folder: importing it writes ~/.sky, and its loader reads ~/.sky/config.yaml,
    neither of them the person's who runs the tests."""
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path_factory.mktemp("sky-home"))
    try:
        import sky

        yield sky
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved


def _load(text: str, tmp_path: Path) -> Any:
    """The task as SkyPilot's own loader reads it (offline: it checks the schema only)."""
    import sky

    path = tmp_path / "task.yaml"
    path.write_text(text)
    return sky.Task.from_yaml(str(path))


def _resources(task: Any) -> Any:
    (resources,) = task.resources
    return resources


def test_one_node_task_loads_with_skypilot(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "one.yaml", ONE_GPU)
    task = _load(_export(recipe, SkyPilotChoices(bucket="my-runs")), tmp_path)
    assert task.name == "one-gpu" and task.num_nodes == 1
    resources = _resources(task)
    assert resources.accelerators == {"T4": 1} and not resources.use_spot
    mount = task.storage_mounts[PERSIST_MOUNT]
    assert (mount.name, mount.source, mount.mode.value, mount.persistent) == (
        "my-runs",
        None,
        "MOUNT",
        True,
    )
    assert f"python -m pip install {TOOL}" in task.setup
    last = task.run.strip().splitlines()[-1]
    assert last == (
        f"python -m bootstrap ~/.colab-bootstrap/recipe/one.yaml --persist {PERSIST_MOUNT}"
    )
    assert "BOOTSTRAP_NNODES" not in task.run and not task.managed_secret_refs


def test_two_node_task_loads_with_skypilot(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "ddp.yaml", TWO_NODES)
    choices = SkyPilotChoices(bucket="gs://team-runs", accelerators="A100:2", nodes=2, spot=True)
    text = _export(recipe, choices, sets=("run.restarts=5",), scratch="/mnt/ssd")
    task = _load(text, tmp_path)
    assert task.num_nodes == 2
    resources = _resources(task)
    assert resources.accelerators == {"A100": 2} and resources.use_spot
    mount = task.storage_mounts[PERSIST_MOUNT]
    assert (mount.source, mount.mode.value) == ("gs://team-runs", "MOUNT")
    assert [ref.name for ref in task.managed_secret_refs] == ["GITHUB_TOKEN", "WANDB_API_KEY"]
    for line in (
        'export BOOTSTRAP_NNODES="$SKYPILOT_NUM_NODES"',
        'export BOOTSTRAP_NODE_RANK="$SKYPILOT_NODE_RANK"',
        "export BOOTSTRAP_MASTER_PORT=29500",
        "python -m bootstrap ~/.colab-bootstrap/recipe/ddp.yaml --persist /colab-bootstrap "
        "--scratch /mnt/ssd --set run.restarts=5",
    ):
        assert line in task.run.splitlines()
    # Values of the variables stay on this machine; only their names travel.
    assert "not-for-the-task" not in text and "ghp_" not in text
    assert "sky jobs launch -n ddp task.yaml --secret GITHUB_TOKEN --secret WANDB_API_KEY" in text


def test_recipe_without_gpu_asks_for_none(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "cpu.yaml", ONE_GPU.replace("gpu: required", "gpu: none"))
    task = _load(_export(recipe, SkyPilotChoices(bucket="my-runs")), tmp_path)
    assert _resources(task).accelerators is None


FAKE_PYTHON = """\
#!{python}
import json, os, sys
keys = ("BOOTSTRAP_NNODES", "BOOTSTRAP_NODE_RANK", "BOOTSTRAP_MASTER_ADDR", "BOOTSTRAP_MASTER_PORT")
with open(os.environ["RECORD"], "w") as out:
    json.dump({{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keys}}}}, out)
if os.environ.get("THEN_DRY_RUN"):  # the real tool, showing the command it would start
    os.execv(sys.executable, [sys.executable, *sys.argv[1:], "--dry-run"])
"""


def _run_on_node(task: Any, tmp_path: Path, rank: int, dry_run: bool = False) -> Any:
    """Run the task's run script with bash as SkyPilot runs it on node ``rank`` of 2, with a
    `python` that records its arguments (and then, with ``dry_run``, runs the real tool)."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir(exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BOOTSTRAP_")},
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RECORD": str(tmp_path / "record.json"),
        "SKYPILOT_NUM_NODES": "2",
        "SKYPILOT_NODE_RANK": str(rank),
        "SKYPILOT_NODE_IPS": "10.0.0.7\n10.0.0.8\n",
        "PYTHONPATH": str(ROOT),
        "BOOTSTRAP_GPU": "2",  # the node's GPUs (gpu: required)
        "BOOTSTRAP_COLAB": "0",
        "BOOTSTRAP_KAGGLE": "0",
        "WANDB_API_KEY": "k",  # as `--secret WANDB_API_KEY` sets it
        **({"THEN_DRY_RUN": "1"} if dry_run else {}),
    }
    result = subprocess.run(
        ["bash", "-c", task.run], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, json.loads((tmp_path / "record.json").read_text()), home


def test_run_script_carries_the_recipe_and_the_rendezvous(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipes" / "my ddp.yaml", TWO_NODES)
    choices = SkyPilotChoices(bucket="team-runs", nodes=2)
    task = _load(_export(recipe, choices, profile=None, sets=("run.args=['a b']",)), tmp_path)
    _, record, home = _run_on_node(task, tmp_path, rank=1)
    written = home / ".colab-bootstrap" / "recipe" / "my ddp.yaml"
    assert written.read_text() == TWO_NODES  # byte for byte: nothing expanded or cut
    assert record["argv"] == [
        "-m", "bootstrap", str(written), "--persist", PERSIST_MOUNT, "--set", "run.args=['a b']",
    ]  # fmt: skip
    assert record["env"] == {
        "BOOTSTRAP_NNODES": "2",
        "BOOTSTRAP_NODE_RANK": "1",
        "BOOTSTRAP_MASTER_ADDR": "10.0.0.7",
        "BOOTSTRAP_MASTER_PORT": "29500",
    }


def test_each_node_starts_torchrun_in_the_same_group(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "ddp.yaml", TWO_NODES)
    task = _load(_export(recipe, SkyPilotChoices(bucket="team-runs", nodes=2)), tmp_path)
    for rank in (0, 1):
        out, _, _ = _run_on_node(task, tmp_path, rank=rank, dry_run=True)
        command = next(line for line in out.splitlines() if line.startswith("command"))
        assert (
            "-m torch.distributed.run --nnodes 2 "
            f"--node-rank {rank} --master-addr 10.0.0.7 --master-port 29500 --nproc-per-node 2"
        ) in command, out
        assert "--standalone" not in command


def test_local_repo_and_local_data_are_refused_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    recipe = write_recipe(
        tmp_path / "local.yaml",
        "name: local\n"
        "repo: {url: ./code}\n"
        "data:\n"
        '  - source: "{persist}/on-the-bucket.tar"\n'
        f'  - source: "{tmp_path}/here.tar"\n'
        "run: {script: train.py}\n",
    )
    with pytest.raises(RecipeError) as caught:
        _export(recipe, SkyPilotChoices(bucket="my-runs"))
    problems = {problem.key: problem for problem in caught.value.problems}
    assert set(problems) == {"repo.url", "data[1].source"}
    assert problems["repo.url"].line == 2 and "push it to a git host" in str(problems["repo.url"])
    assert problems["data[1].source"].line == 5
    assert '"{persist}/' in str(problems["data[1].source"])


@pytest.mark.parametrize(
    ("choices", "options", "needle"),
    [
        (SkyPilotChoices(), {}, "needs --bucket"),
        (SkyPilotChoices(bucket="My Bucket"), {}, "neither a bucket name nor a bucket URI"),
        (SkyPilotChoices(bucket="b-1", accelerators="A100:x"), {}, "not NAME or NAME:COUNT"),
        (SkyPilotChoices(bucket="b-1"), {"fresh": True}, "--fresh does not go with --export"),
        (SkyPilotChoices(bucket="b-1"), {"persist": "/p"}, "--persist does not go"),
    ],
)
def test_choices_that_cannot_work_are_refused(
    tmp_path: Path, choices: SkyPilotChoices, options: dict[str, Any], needle: str
) -> None:
    recipe = write_recipe(tmp_path / "one.yaml", ONE_GPU)
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        _export(recipe, choices, **options)


def test_several_nodes_need_torchrun_and_enough_gpus(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "one.yaml", ONE_GPU)
    with pytest.raises(RecipeError) as caught:
        _export(recipe, SkyPilotChoices(bucket="b-1", nodes=2))
    (problem,) = caught.value.problems
    assert problem.key == "run.launcher" and "--set run.launcher=torchrun" in problem.message
    recipe = write_recipe(tmp_path / "ddp.yaml", TWO_NODES)
    with pytest.raises(RecipeError) as caught:
        _export(recipe, SkyPilotChoices(bucket="b-1", accelerators="L4:1"))
    (problem,) = caught.value.problems
    assert problem.key == "run.nproc" and problem.line == 12
    assert "--accelerators L4:2" in problem.message
    recipe = write_recipe(
        tmp_path / "shared.yaml",
        TWO_NODES.replace("token_env: GITHUB_TOKEN}", "token_env: GITHUB_TOKEN, into: persist}"),
    )
    _export(recipe, SkyPilotChoices(bucket="b-1"))  # one node: its own clone on the bucket
    with pytest.raises(RecipeError) as caught:
        _export(recipe, SkyPilotChoices(bucket="b-1", nodes=2))
    (problem,) = caught.value.problems
    assert problem.key == "repo.into" and problem.line == 2
    assert "--set repo.into=scratch" in problem.message


def test_cli_exports_from_a_machine_without_gpu(sandbox: Sandbox, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "one.yaml", ONE_GPU)  # gpu: required; BOOTSTRAP_GPU=0
    result = sandbox.cli(recipe, "--export", "skypilot", "--bucket", "my-runs", "--spot")
    assert result.returncode == 0, result.stderr
    assert _resources(_load(result.stdout, tmp_path)).use_spot
    assert not any(sandbox.persist.iterdir()) and not any(sandbox.scratch.iterdir())


def test_cli_refusals_exit_2_with_key_and_fix(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    recipe = write_recipe(
        tmp_path / "local.yaml", "name: l\nrepo: {url: code}\nrun: {script: t.py}\n"
    )
    result = sandbox.cli(recipe, "--export", "skypilot", "--bucket", "my-runs")
    assert result.returncode == 2 and result.stdout == ""
    assert f"{recipe}:2: repo.url: " in result.stderr and "Traceback" not in result.stderr
    result = sandbox.cli(recipe, "--bucket", "my-runs")  # a cloud option without --export
    assert result.returncode == 2 and "--export skypilot" in result.stderr


@pytest.mark.slow
def test_two_nodes_train_as_one_group_on_this_machine(sandbox: Sandbox, tmp_path: Path) -> None:
    """The rendezvous the run script sets, for real: two tools on this CPU, each a "node"
    with its own disk, one rank each, sharing one persist folder as the nodes share a bucket;
    torchrun joins them into one group of 2 over gloo. Only node 0 writes the run folder:
    node 1 keeps its state and logs in nodes/1 and mirrors nothing."""
    import socket

    from tests.test_torchrun import DDP

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "ddp.py").write_text(DDP)
    recipe = write_recipe(
        tmp_path / "ddp.yaml",
        f"name: ddp\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {script: ddp.py, launcher: torchrun, nproc: 1, args: ['{ckpt}', '3', '0'],"
        " checkpoints: '{ckpt}', match: '*.pt', restarts: 0}\n",
    )
    with socket.socket() as probe:  # a free port: other tests may run a group at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    stray = tmp_path / "node1/scratch/checkpoints/ddp/node1-only.txt"  # node 0 has none
    stray.parent.mkdir(parents=True)
    stray.write_text("a node 1 mirror would copy this to the bucket")
    nodes = []
    for rank in (0, 1):
        disk = tmp_path / f"node{rank}"
        (disk / "scratch").mkdir(parents=True, exist_ok=True)
        env = {
            "BOOTSTRAP_PERSIST": str(bucket),
            "BOOTSTRAP_SCRATCH": str(disk / "scratch"),
            "BOOTSTRAP_NNODES": "2",
            "BOOTSTRAP_NODE_RANK": str(rank),
            "BOOTSTRAP_MASTER_ADDR": "127.0.0.1",
            "BOOTSTRAP_MASTER_PORT": str(port),
        }
        nodes.append(sandbox.popen(recipe, env=env))
    try:
        outputs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    run = bucket / "runs/ddp"
    for rank, (node, out) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, out
        folder = run / "nodes/1" if rank else run
        log = next((folder / "logs").glob("attempt-001-*.log"))
        assert f"rank {rank} of 2" in log.read_text(), out
        assert '"status": "finished"' in (folder / "state.json").read_text()
    assert [p.name for p in (run / "nodes").iterdir()] == ["1"]
    assert (run / "checkpoints/final.pt").is_file()
    assert not (run / "checkpoints/node1-only.txt").exists()
