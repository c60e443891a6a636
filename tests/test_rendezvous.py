"""torchrun's rendezvous: one machine (--standalone) unless BOOTSTRAP_NNODES and friends
describe a group of machines, as the SkyPilot task sets them on each node."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.errors import UsageError
from bootstrap.host import Host
from bootstrap.plan import Plan, resolve_plan
from bootstrap.recipe.load import load_recipe
from bootstrap.runner.launch import torchrun_options
from tests.conftest import write_recipe

NODE = Host(
    on_colab=False, content_dir=Path("/nonexistent"), drive_mounted=False, gpu_names=("A100",) * 4,
    boot_time=0.0,
)  # fmt: skip


def _plan(tmp_path: Path, environ: dict[str, str] | None = None) -> Plan:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        "name: r\nrepo: {url: code}\nrun: {script: t.py, launcher: torchrun, stop_grace: 30s}\n",
    )
    recipe_model = load_recipe(recipe, environ={})
    return resolve_plan(recipe_model, NODE, persist="/p", scratch="/s", environ=environ or {})


def test_one_machine_is_standalone(tmp_path: Path) -> None:
    for environ in ({}, {"BOOTSTRAP_NNODES": "1"}, {"BOOTSTRAP_NNODES": ""}):
        assert torchrun_options(_plan(tmp_path), environ) == [
            "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
            "--max-restarts", "0", "--shutdown-timeout", "30",
        ]  # fmt: skip


def test_several_machines_meet_at_node_0(tmp_path: Path) -> None:
    environ = {
        "BOOTSTRAP_NNODES": "3",
        "BOOTSTRAP_NODE_RANK": "2",
        "BOOTSTRAP_MASTER_ADDR": " 10.0.0.7 ",
    }
    assert torchrun_options(_plan(tmp_path), environ) == [
        "-m", "torch.distributed.run",
        "--nnodes", "3", "--node-rank", "2", "--master-addr", "10.0.0.7", "--master-port", "29500",
        "--nproc-per-node", "4", "--max-restarts", "0", "--shutdown-timeout", "30",
    ]  # fmt: skip
    environ["BOOTSTRAP_MASTER_PORT"] = "31000"
    assert "31000" in torchrun_options(_plan(tmp_path), environ)


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"BOOTSTRAP_NNODES": "2", "BOOTSTRAP_NODE_RANK": "0"}, "BOOTSTRAP_MASTER_ADDR is not set"),
        ({"BOOTSTRAP_NNODES": "2", "BOOTSTRAP_MASTER_ADDR": "h"}, "BOOTSTRAP_NODE_RANK is not set"),
        (
            {"BOOTSTRAP_NNODES": "2", "BOOTSTRAP_NODE_RANK": "2", "BOOTSTRAP_MASTER_ADDR": "h"},
            "BOOTSTRAP_NODE_RANK is 2, but BOOTSTRAP_NNODES is 2",
        ),
        ({"BOOTSTRAP_NNODES": "two"}, "BOOTSTRAP_NNODES is 'two', not a whole number"),
        ({"BOOTSTRAP_NNODES": "0"}, "BOOTSTRAP_NNODES is '0', not a whole number of 1 or more"),
        (
            {
                "BOOTSTRAP_NNODES": "2",
                "BOOTSTRAP_NODE_RANK": "1",
                "BOOTSTRAP_MASTER_ADDR": "h",
                "BOOTSTRAP_MASTER_PORT": "65536",
            },
            "BOOTSTRAP_MASTER_PORT is '65536', not a whole number of 1 to 65535",
        ),
    ],
)
def test_an_incomplete_group_is_refused_naming_the_variable(
    tmp_path: Path, environ: dict[str, str], needle: str
) -> None:
    with pytest.raises(UsageError, match=needle):
        torchrun_options(_plan(tmp_path), environ)


def test_only_node_0_keeps_state_and_logs_in_the_run_folder(tmp_path: Path) -> None:
    """The nodes share the run folder (a bucket): node 0 writes it, the others their own."""
    group = {"BOOTSTRAP_NNODES": "2", "BOOTSTRAP_MASTER_ADDR": "h"}
    node0 = _plan(tmp_path, {**group, "BOOTSTRAP_NODE_RANK": "0"})
    node1 = _plan(tmp_path, {**group, "BOOTSTRAP_NODE_RANK": "1"})
    alone = _plan(tmp_path, {"BOOTSTRAP_NODE_RANK": "1"})  # no group: the rank means nothing
    for plan in (node0, alone):
        assert plan.state_file == Path("/p/runs/r/state.json")
        assert plan.logs_dir == Path("/p/runs/r/logs")
    assert node1.state_file == Path("/p/runs/r/nodes/1/state.json")
    assert node1.logs_dir == Path("/p/runs/r/nodes/1/logs")
    assert node1.mirror_dir == node0.mirror_dir  # every node restores from node 0's mirror
    with pytest.raises(UsageError, match="BOOTSTRAP_NODE_RANK is not set"):
        _plan(tmp_path, group)
