"""Kaggle notebooks: the host told from its facts (faked under tmp_path), the defaults there, data
sets read in place from /kaggle/input, a new session resuming from an earlier version's output
(read only), and torchrun on both of a 2-GPU machine. The runs go through the real CLI."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.data.stage import use_in_place
from bootstrap.errors import DataError, RecipeError, StepError, UsageError
from bootstrap.host import Host, _process_start, detect_host
from bootstrap.plan import KAGGLE_TIME_LIMIT, Plan, resolve_plan
from bootstrap.recipe.load import load_recipe
from bootstrap.runner.kept import restore_source
from bootstrap.runner.launch import build_command, process_count
from tests.conftest import RECIPES, Sandbox, write_recipe

# ---------------------------------------------------------------- a fake Kaggle machine


def _kaggle_root(tmp_path: Path, name: str = "kaggle") -> Path:
    root = tmp_path / name
    (root / "working").mkdir(parents=True)
    (root / "input").mkdir()
    return root


def _kaggle_env(root: Path, **extra: str) -> dict[str, str]:
    """What a `!python` cell of a Kaggle notebook sees, with /kaggle at ``root``."""
    return {
        "KAGGLE_KERNEL_RUN_TYPE": "Batch",
        "BOOTSTRAP_KAGGLE_DIR": str(root),
        "BOOTSTRAP_GPU": "0",
        "BOOTSTRAP_BOOT_TIME": "1000.0",
        **extra,
    }


def _kaggle_host(root: Path, gpus: int = 0) -> Host:
    return Host(
        on_colab=False,
        content_dir=root.parent / "no-content",
        drive_mounted=False,
        gpu_names=tuple(f"Tesla T4 #{i}" for i in range(gpus)),
        boot_time=1000.0,
        on_kaggle=True,
        kaggle_dir=root,
        kaggle_run_type="Batch",
    )


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``folder`` (itself included) with its mode, size and mtime: a folder
    whose entries were added, removed or renamed has a new mtime."""
    entries = {}
    for path in [folder, *folder.rglob("*")]:
        info = path.lstat()
        entries[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return entries


def _read_only(folder: Path) -> None:
    """As Kaggle mounts its inputs (tests run as root, which chmod does not stop: callers
    also compare a _snapshot before and after)."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)


@pytest.fixture
def writable_again(tmp_path: Path) -> Iterator[None]:
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:  # so that pytest can remove tmp_path
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)


# ---------------------------------------------------------------- the host


def test_kaggle_is_told_from_its_run_type_and_working_folder(tmp_path: Path) -> None:
    root = _kaggle_root(tmp_path)
    host = detect_host(_kaggle_env(root))
    assert host.on_kaggle and not host.on_colab
    assert host.kaggle_working == root / "working" and host.kaggle_input == root / "input"
    assert host.describe() == "Kaggle (Batch), no GPU"
    # The variable alone (copied into another shell) or the folder alone (Kaggle's Docker
    # image run elsewhere) is not Kaggle.
    without_folder = _kaggle_env(tmp_path / "elsewhere")
    assert not detect_host(without_folder).on_kaggle
    without_variable = _kaggle_env(root)
    del without_variable["KAGGLE_KERNEL_RUN_TYPE"]
    assert not detect_host(without_variable).on_kaggle


def test_kaggle_overrides_win_and_exclude_colab(tmp_path: Path) -> None:
    root = _kaggle_root(tmp_path)
    assert not detect_host(_kaggle_env(root, BOOTSTRAP_KAGGLE="0")).on_kaggle
    forced = detect_host({"BOOTSTRAP_KAGGLE": "1", "BOOTSTRAP_GPU": "0"})
    assert forced.on_kaggle and forced.kaggle_dir == Path("/kaggle")
    # Colab's own variable does not make a Kaggle machine Colab, and forcing one rules out
    # the other ...
    on_both = detect_host(_kaggle_env(root, COLAB_RELEASE_TAG="release-colab_20260801"))
    assert on_both.on_kaggle and not on_both.on_colab
    colab = detect_host(_kaggle_env(root, BOOTSTRAP_COLAB="1"))
    assert colab.on_colab and not colab.on_kaggle
    # ... but forcing both is a mistake, said as such.
    with pytest.raises(UsageError, match="BOOTSTRAP_COLAB and BOOTSTRAP_KAGGLE are both on"):
        detect_host({"BOOTSTRAP_COLAB": "1", "BOOTSTRAP_KAGGLE": "yes"})


def test_process_start_reads_proc(tmp_path: Path) -> None:
    """The session's start on Kaggle is its container's first process's: the same reading,
    checked here on a process whose start we know."""
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    after = time.time()
    try:
        started = _process_start(child.pid, boot)
    finally:
        child.kill()
        child.wait()
    assert started is not None
    # Clock ticks are 10 ms, and btime is whole seconds: it may be up to a second early.
    assert before - 1.05 <= started <= after + 0.05
    assert _process_start(2**22 + 1, boot) is None  # no such process


def test_kaggle_session_starts_with_pid_1_not_the_machine(tmp_path: Path) -> None:
    env = _kaggle_env(_kaggle_root(tmp_path))
    del env["BOOTSTRAP_BOOT_TIME"]
    boot = detect_host({**env, "BOOTSTRAP_KAGGLE": "0"}).boot_time  # the kernel's btime
    assert detect_host(env).boot_time == _process_start(1, boot)


def test_bootstrap_gpu_fakes_a_number_of_gpus(tmp_path: Path) -> None:
    env = _kaggle_env(_kaggle_root(tmp_path))
    assert len(detect_host({**env, "BOOTSTRAP_GPU": "2"}).gpu_names) == 2
    assert len(detect_host({**env, "BOOTSTRAP_GPU": "1"}).gpu_names) == 1
    assert detect_host({**env, "BOOTSTRAP_GPU": "0"}).gpu_names == ()


def test_cuda_visible_devices_narrows_the_gpus_found() -> None:
    from bootstrap.host import _visible

    found = ("Tesla T4", "Tesla P100")
    assert _visible(found, None) == found
    assert _visible(found, "1") == ("Tesla P100",)
    assert _visible(found, "1,0") == ("Tesla P100", "Tesla T4")
    assert _visible(found, "") == ()
    assert _visible(found, "0,7,1") == ("Tesla T4",)  # CUDA stops at the first missing one
    assert _visible(found, "GPU-5d0c8bd4") == ("Tesla T4",)  # a UUID: counted


# ---------------------------------------------------------------- the plan

RECIPE = """\
name: exp-1
repo: {url: ./code}
data:
  - source: "DATA"
    to: "{scratch}/datasets"
COPY
run:
  script: train.py
  args: ["--data", "{data0}", "--out", "{ckpt}"]
"""


def _plan(
    tmp_path: Path, root: Path, data: str, *, copy: str = "", extra: str = "", smoke: bool = False
) -> Plan:
    text = RECIPE.replace("DATA", data).replace("COPY\n", f"    copy: {copy}\n" if copy else "")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", text + extra), environ={}, smoke=smoke)
    return resolve_plan(recipe, _kaggle_host(root), environ={}, smoke=smoke)


def test_kaggle_defaults_persist_scratch_and_time_limit(tmp_path: Path) -> None:
    root = _kaggle_root(tmp_path)
    plan = _plan(tmp_path, root, "{scratch}/a.tar")
    assert plan.persist == root / "working" / "colab-bootstrap"
    assert plan.scratch == root / "temp"
    # The limit counts from the session's start and leaves half an hour of Kaggle's 12 h.
    assert plan.time_limit == KAGGLE_TIME_LIMIT == 11.5 * 3600
    assert plan.deadline == 1000.0 + KAGGLE_TIME_LIMIT
    assert plan.time_limit_origin == "Kaggle's default"
    given = _plan(tmp_path, root, "{scratch}/a.tar", extra="  time_limit: 2h\n")
    assert given.deadline == 1000.0 + 7200 and given.time_limit_origin == "run.time_limit"
    # --smoke keeps the same roots, a run of its own under smoke/.
    smoke = _plan(tmp_path, root, "{scratch}/a.tar", smoke=True)
    assert smoke.persist == root / "working" / "colab-bootstrap" / "smoke"
    # Off Kaggle nothing changes: no default limit.
    recipe = load_recipe(tmp_path / "r.yaml", environ={})
    laptop = Host(False, tmp_path / "nowhere", False, (), 0.0)
    assert resolve_plan(recipe, laptop, persist="/p", scratch="/s", environ={}).deadline is None


def test_a_folder_under_kaggle_input_is_used_in_place(tmp_path: Path) -> None:
    root = _kaggle_root(tmp_path)
    data_set = root / "input" / "rod-synrod"
    data_set.mkdir()
    plan = _plan(tmp_path, root, str(data_set))
    (step,) = plan.data
    assert step.in_place and step.folder == data_set
    assert plan.args == ("--data", str(data_set), "--out", str(root / "temp/checkpoints/exp-1"))
    # ... unless the recipe asks for a copy: then {data0} is where it is copied to.
    copied = _plan(tmp_path, root, str(data_set), copy="true")
    assert not copied.data[0].in_place and copied.args[1] == str(root / "temp" / "datasets")
    # An archive among the inputs is extracted as usual; a folder elsewhere is copied.
    archive = root / "input" / "packed" / "a.tar"
    archive.parent.mkdir()
    archive.write_bytes(b"")
    assert not _plan(tmp_path, root, str(archive)).data[0].in_place
    (tmp_path / "local").mkdir()
    assert not _plan(tmp_path, root, str(tmp_path / "local")).data[0].in_place
    # copy: false reads any folder where it is; a URL cannot be.
    assert _plan(tmp_path, root, str(tmp_path / "local"), copy="false").data[0].in_place
    with pytest.raises(RecipeError) as caught:
        _plan(tmp_path, root, "https://example.com/a.zip", copy="false")
    assert "data[0].copy: copy: false reads a folder where it is, but the source is a URL" in str(
        caught.value
    )


def test_data_placeholders_are_checked(tmp_path: Path) -> None:
    text = RECIPE.replace("DATA", "a.tar").replace("COPY\n", "")
    bad = text.replace('"{data0}"', '"{data1}"').replace(
        '"{scratch}/datasets"', '"{scratch}/{data0}"'
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(write_recipe(tmp_path / "r.yaml", bad), environ={})
    message = str(caught.value)
    assert "r.yaml:5: data[0].to: {data0} cannot be used in data" in message
    assert (
        "r.yaml:8: run.args[1]: {data1} names data[1], but the recipe has only data[0]" in message
    )
    wrong = RECIPE.replace("DATA", "a.tar").replace("COPY", '    copy: "yes"')
    with pytest.raises(
        RecipeError, match=r"data\[0\]\.copy: expected auto, true or false, got 'yes'"
    ):
        load_recipe(write_recipe(tmp_path / "c.yaml", wrong), environ={})


def test_in_place_refuses_a_file_a_sha256_and_says_how_to_attach_a_missing_input(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.tar").write_bytes(b"")
    with pytest.raises(DataError) as caught:
        use_in_place(tmp_path / "a.tar", label="data[2]")
    assert "data[2].copy is false, which reads a folder where it is, but" in caught.value.message
    assert "remove data[2].copy" in str(caught.value.hint)
    with pytest.raises(DataError, match="data\\[0\\].sha256 is given"):
        use_in_place(tmp_path, sha256="0" * 64, label="data[0]")
    with pytest.raises(DataError) as caught:
        use_in_place("/kaggle/input/not-attached", label="data[0]")
    assert "Add Input" in str(caught.value.hint)
    assert use_in_place(tmp_path).dest == tmp_path


# ---------------------------------------------------------------- resuming from an earlier output


def _earlier_output(folder: Path, layout: str, name: str = "exp-1") -> Path:
    """An earlier run's persist as it shows under /kaggle/input: ``layout`` is where its run
    folder lies inside ``folder``."""
    run = folder / layout.format(name=name)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "e1.pt").write_bytes(b"1")
    return run


@pytest.mark.parametrize(
    "layout", ["runs/{name}", "colab-bootstrap/runs/{name}", "."], ids=["persist", "output", "run"]
)
def test_restore_source_finds_the_earlier_run_in_each_layout(tmp_path: Path, layout: str) -> None:
    root = _kaggle_root(tmp_path)
    earlier = root / "input" / "my-notebook"
    run = _earlier_output(earlier, layout)
    plan = _plan(tmp_path, root, "a.tar", extra="  match: '*.pt'\n")
    plan = dataclasses.replace(plan, resume_from=earlier, resume_from_origin="--resume-from")
    assert restore_source(plan) == run  # for ".": the folder itself, the run folder
    assert restore_source(plan, fresh=True) == plan.run_dir  # --fresh never resumes
    # Persist (or scratch) holding a checkpoint of its own wins: the earlier output is older.
    (plan.mirror_dir).mkdir(parents=True)
    (plan.mirror_dir / "e2.pt").write_bytes(b"2")
    assert restore_source(plan) == plan.run_dir


def test_restore_source_says_what_is_wrong_with_resume_from(tmp_path: Path) -> None:
    root = _kaggle_root(tmp_path)
    plan = _plan(tmp_path, root, "a.tar")
    gone = dataclasses.replace(
        plan, resume_from=root / "input" / "gone", resume_from_origin="BOOTSTRAP_RESUME_FROM"
    )
    with pytest.raises(StepError) as caught:
        restore_source(gone)
    assert caught.value.message == (
        f"storage.resume_from is {root / 'input/gone'} (BOOTSTRAP_RESUME_FROM), which is not a "
        "folder (it does not exist)"
    )
    assert "Add Input > Your Work" in str(caught.value.hint)
    earlier = root / "input" / "my-notebook"
    _earlier_output(earlier, "colab-bootstrap/runs/{name}", name="exp-0")
    other = dataclasses.replace(plan, resume_from=earlier, resume_from_origin="--resume-from")
    with pytest.raises(StepError) as caught:
        restore_source(other)
    assert "which holds no run named exp-1: looked for" in caught.value.message
    assert caught.value.message.endswith("; the runs there are named exp-0")


# ---------------------------------------------------------------- through the CLI


def _kaggle_cli(
    sandbox: Sandbox, root: Path, *args: str | Path, timeout: float = 180, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``python -m bootstrap ARGS`` in a fake Kaggle session at ``root``, with Kaggle's own
    defaults for the storage roots (the sandbox's are left out) and a session started now."""
    env = {k: v for k, v in sandbox.env.items() if k not in _SANDBOX_ROOTS}
    env.update(_kaggle_env(root, **{"BOOTSTRAP_BOOT_TIME": str(time.time()), **extra}))
    return subprocess.run(
        [sys.executable, "-m", "bootstrap", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=sandbox.root,
    )


_SANDBOX_ROOTS = ("BOOTSTRAP_PERSIST", "BOOTSTRAP_SCRATCH", "BOOTSTRAP_KAGGLE")

DEMO = """\
name: demo
repo: {{url: "{repo}"}}
install: {{requirements: []}}
data:
  - source: "{source}"
run:
  script: train.py
  args: ["--data_root", "{{data0}}/toy", "--logdir", "{{ckpt}}", "--epochs", "2",
         "--epoch_seconds", "0"]
  checkpoints: "{{ckpt}}"
  match: "*.pt"
  resume: ["--resume", "{{checkpoint}}"]
  restarts: 0
"""


def _demo(tmp_path: Path, root: Path) -> Path:
    """The demo's repo, and its data set attached to the Kaggle session as a folder (read only,
    as Kaggle mounts it)."""
    repo = tmp_path / "demo-repo"
    if not repo.exists():
        shutil.copytree(RECIPES / "demo" / "repo", repo)
    data_set = root / "input" / "toy-data"
    with tarfile.open(RECIPES / "demo" / "data.tar.gz") as archive:
        archive.extractall(data_set, filter="data")
    _read_only(data_set)
    return write_recipe(tmp_path / "demo.yaml", DEMO.format(repo=repo, source=data_set))


@pytest.mark.slow
def test_a_run_reads_an_input_folder_in_place_and_keeps_its_state_in_working(
    sandbox: Sandbox, tmp_path: Path, writable_again: None
) -> None:
    root = _kaggle_root(tmp_path)
    recipe = _demo(tmp_path, root)
    before = _snapshot(root / "input")
    shown = _kaggle_cli(sandbox, root, recipe, "--dry-run")
    assert shown.returncode == 0, shown.stderr
    data_line = f"{root / 'input/toy-data'} (a folder used in place, not copied: {{data0}})"
    assert data_line in shown.stdout
    assert f"--data_root {root / 'input/toy-data'}/toy" in shown.stdout
    assert "time_limit 11h30m00s (Kaggle's default)" in shown.stdout
    result = _kaggle_cli(sandbox, root, recipe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epoch 1: loss" in result.stdout
    assert f"used in place: {root / 'input/toy-data'} (not copied; {{data0}})" in result.stderr
    assert "persist " + str(root / "working/colab-bootstrap") in result.stderr
    assert "Kaggle (Batch)" in result.stderr
    assert _snapshot(root / "input") == before  # nothing written there
    assert not (root / "temp" / "data").exists()  # data[0].to: not written
    mirror = root / "working" / "colab-bootstrap" / "runs" / "demo" / "checkpoints"
    assert sorted(p.name for p in mirror.glob("*.pt")) == ["epoch-000.pt", "epoch-001.pt"]
    assert (root / "temp" / "repos" / "demo" / "train.py").is_file()  # the clone: not output


@pytest.mark.slow
def test_a_new_session_resumes_from_the_earlier_versions_output_read_only(
    sandbox: Sandbox, tmp_path: Path, writable_again: None
) -> None:
    first = _kaggle_root(tmp_path, "kaggle-1")
    done = _kaggle_cli(sandbox, first, _demo(tmp_path, first))
    assert done.returncode == 0, done.stdout + done.stderr

    # The next version: a new machine, the first one's output attached as an input.
    second = _kaggle_root(tmp_path, "kaggle-2")
    recipe = _demo(tmp_path, second)
    attached = second / "input" / "my-notebook"
    shutil.copytree(first / "working", attached)
    _read_only(attached)
    before = _snapshot(second / "input")
    result = _kaggle_cli(
        sandbox, second, recipe, "--set", "run.args[5]=4", BOOTSTRAP_RESUME_FROM=str(attached)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from epoch-001.pt: starting at epoch 2" in result.stdout
    assert "epoch 3: loss" in result.stdout
    earlier = attached / "colab-bootstrap" / "runs" / "demo"
    assert f"from {earlier} (BOOTSTRAP_RESUME_FROM)" in result.stderr
    assert _snapshot(second / "input") == before  # read, never written
    # This version's output holds the whole run again: what came back, and what it added.
    mirror = second / "working" / "colab-bootstrap" / "runs" / "demo" / "checkpoints"
    assert {"epoch-001.pt", "epoch-002.pt", "epoch-003.pt"} <= {p.name for p in mirror.glob("*")}
    assert (second / "temp" / "checkpoints" / "demo" / "epoch-000.pt").is_file()  # older: later

    # Run again in the same session: persist has checkpoints now, and the input is not read.
    again = _kaggle_cli(sandbox, second, recipe, "--set", "run.args[5]=4", "--dry-run",
                        "--resume-from", str(attached / "nowhere"))  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(unused: this run has checkpoints)" in again.stdout


# ---------------------------------------------------------------- two GPUs, torchrun


def test_torchrun_auto_starts_one_rank_per_gpu_of_a_two_gpu_kaggle_machine(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    root = _kaggle_root(tmp_path)
    recipe = write_recipe(
        tmp_path / "ddp.yaml",
        "name: ddp\nrepo: {url: ./repo}\nrun: {script: ddp.py, launcher: torchrun}\n",
    )
    host = detect_host(_kaggle_env(root, BOOTSTRAP_GPU="2"))
    assert host.on_kaggle and len(host.gpu_names) == 2
    plan = resolve_plan(load_recipe(recipe, environ={}), host, environ={})
    assert process_count(plan) == 2
    assert "--nproc-per-node 2" in " ".join(build_command(plan, []))
    # --smoke hides the GPUs from the training: one rank.
    smoke = resolve_plan(load_recipe(recipe, environ={}, smoke=True), host, environ={}, smoke=True)
    assert process_count(smoke) == 1

    (tmp_path / "repo").mkdir()
    shown = _kaggle_cli(sandbox, root, recipe, "--dry-run", BOOTSTRAP_GPU="2")
    assert shown.returncode == 0, shown.stderr
    assert "--nproc-per-node 2" in shown.stdout and "GPU 1 (forced by" in shown.stdout


RANKS = """\
import torch.distributed as dist

dist.init_process_group("gloo")
print(f"rank {dist.get_rank()} of {dist.get_world_size()}", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_auto_trains_on_both_gpus_through_the_cli(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The same, run for real: two ranks on CPU with gloo (the host's two GPUs faked)."""
    root = _kaggle_root(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "ranks.py").write_text(RANKS)
    recipe = write_recipe(
        tmp_path / "ranks.yaml",
        f"name: ranks\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {script: ranks.py, launcher: torchrun, restarts: 0}\n",
    )
    result = _kaggle_cli(sandbox, root, recipe, BOOTSTRAP_GPU="2")
    assert result.returncode == 0, result.stdout + result.stderr
    # The console shows rank 0 (the others repeat it); the attempt's log keeps every rank.
    assert "rank 0 of 2" in result.stdout
    (log,) = (root / "working/colab-bootstrap/runs/ranks/logs").glob("attempt-*.log")
    assert "rank 1 of 2" in log.read_text()


def test_resume_from_comes_from_the_command_line_then_the_environment_then_the_recipe(
    tmp_path: Path,
) -> None:
    root = _kaggle_root(tmp_path)
    text = RECIPE.replace("DATA", "a.tar").replace("COPY\n", "")
    text = text.replace("name: exp-1\n", "name: exp-1\nstorage: {resume_from: earlier}\n")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", text), environ={})
    host = _kaggle_host(root)
    plan = resolve_plan(recipe, host, environ={})
    assert (plan.resume_from, plan.resume_from_origin) == (
        tmp_path / "earlier",  # relative to the recipe's folder, as every path
        "storage.resume_from",
    )
    env = {"BOOTSTRAP_RESUME_FROM": "/kaggle/input/v1"}
    plan = resolve_plan(recipe, host, environ=env)
    assert (plan.resume_from, plan.resume_from_origin) == (
        Path("/kaggle/input/v1"),
        "BOOTSTRAP_RESUME_FROM",
    )
    plan = resolve_plan(recipe, host, environ=env, resume_from="/kaggle/input/v2")
    assert (plan.resume_from, plan.resume_from_origin) == (
        Path("/kaggle/input/v2"),
        "--resume-from",
    )


def test_kaggle_hints_for_a_missing_gpu_and_a_session_past_its_time(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    root = _kaggle_root(tmp_path)
    (tmp_path / "repo").mkdir()
    recipe = write_recipe(
        tmp_path / "r.yaml", "name: r\nrepo: {url: ./repo}\ngpu: required\nrun: {script: t.py}\n"
    )
    no_gpu = _kaggle_cli(sandbox, root, recipe)
    assert no_gpu.returncode == 3
    assert "fix: on Kaggle: in the notebook's side panel, Settings > Accelerator > GPU T4 x2" in (
        no_gpu.stderr
    )
    late = _kaggle_cli(
        sandbox, root, recipe, BOOTSTRAP_GPU="1", BOOTSTRAP_BOOT_TIME=str(time.time() - 12 * 3600)
    )
    assert late.returncode == 5, late.stdout + late.stderr
    assert "this Kaggle session started 12h00m" in late.stderr
    assert "past run.time_limit, Kaggle's default (11h30m00s), so nothing was run" in late.stderr
    assert "continue in a new session" in late.stderr
