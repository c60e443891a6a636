"""run.launcher: torchrun, on this CPU machine: two ranks of a tiny DDP model on gloo, through
the real CLI, started by torch.distributed.run as the tool builds its command line."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Sandbox, processes, read_until, write_recipe

pytestmark = pytest.mark.slow

DDP = """\
import os, signal, sys, threading, time
from pathlib import Path

import torch
import torch.distributed as dist

# Who sends each SIGINT: blocked in every thread, taken by one that reads the sender's pid.
asked = []
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def wait_for_sigint():
    while True:
        asked.append(signal.sigwaitinfo({signal.SIGINT}).si_pid)


threading.Thread(target=wait_for_sigint, daemon=True).start()
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
sys.stdout.write(f"rank {rank} of {world}\\n")
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
steps = int(sys.argv[2])
for step in range(steps):
    optimizer.zero_grad()
    model(torch.ones(2, 4) * (rank + 1)).pow(2).mean().backward()  # gradients all-reduced
    optimizer.step()
    stop = torch.tensor([float(bool(asked) and sys.argv[4:] != ["deaf"])])
    dist.all_reduce(stop)  # every rank stops at the same step
    if stop.item():
        break
    time.sleep(float(sys.argv[3]))
time.sleep(0.5)  # a second SIGINT, had one been sent, is in by now
by = "torchrun" if set(asked) <= {os.getppid()} else "another process"
how = f"asked to stop {len(asked)} time(s) by {by}"
sys.stdout.write(f"rank {rank} ended after step {step}, {how}\\n")  # one write: a shared tty
if rank == 0:
    torch.save(model.module.state_dict(), Path(sys.argv[1]) / "final.pt")
dist.destroy_process_group()
"""


def _recipe(tmp_path: Path, steps: int, delay: float, extra: str = "", deaf: bool = False) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "ddp.py").write_text(DDP)
    return write_recipe(
        tmp_path / "ddp.yaml",
        f"name: ddp\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        f"run: {{script: ddp.py, launcher: torchrun, nproc: 2, args: ['{{ckpt}}', '{steps}',"
        f" '{delay}'{', deaf' if deaf else ''}], checkpoints: '{{ckpt}}', match: '*.pt',"
        f" restarts: 0{extra}}}\n",
    )


def test_two_ranks_train_and_rank_0_saves(sandbox: Sandbox, tmp_path: Path) -> None:
    import torch

    result = sandbox.cli(_recipe(tmp_path, steps=3, delay=0), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    # The console shows rank 0, unmarked; the attempt log every rank, each line marked.
    assert "\nrank 0 of 2\n" in result.stdout and "rank 1" not in result.stdout
    assert "[rank " not in result.stdout
    (log,) = (sandbox.persist / "runs/ddp/logs").glob("attempt-001-*.log")
    lines = log.read_text().splitlines()
    for rank in (0, 1):
        assert f"[rank {rank}] rank {rank} of 2" in lines
        assert (
            f"[rank {rank}] rank {rank} ended after step 2, asked to stop 0 time(s) by torchrun"
            in lines
        )
    saved = torch.load(sandbox.persist / "runs/ddp/checkpoints/final.pt", weights_only=True)
    assert set(saved) == {"weight", "bias"}


CRASH_ON_RANK_1 = """\
import torch, torch.distributed as dist

dist.init_process_group("gloo")
for step in range(3):
    dist.all_reduce(torch.ones(1))
    if step == 1 and dist.get_rank() == 1:
        raise RuntimeError("rank 1 broke at step 1")
"""


def test_when_rank_1_crashes_the_console_shows_its_traceback(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Rank 0, the rank the console shows, fails only because its peer is gone, and torchrun's
    report names rank 1 without its error: the console then shows rank 1's traceback."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "crash.py").write_text(CRASH_ON_RANK_1)
    recipe = write_recipe(
        tmp_path / "crash.yaml",
        f"name: crash\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {script: crash.py, launcher: torchrun, nproc: 2, restarts: 0}\n",
    )
    result = sandbox.cli(recipe, timeout=180)
    assert result.returncode != 0
    (log,) = (sandbox.persist / "runs/crash/logs").glob("attempt-001-*.log")
    shown = result.stdout.split(f"rank 1's last traceback (every rank's output is in {log}):\n")
    assert len(shown) == 2, result.stdout
    traceback = shown[1].splitlines()
    assert traceback[0].endswith("Traceback (most recent call last):")
    assert f'File "{sandbox.scratch}/repos/crash/crash.py", line 7, in <module>' in traceback[1]
    assert traceback[3].endswith("RuntimeError: rank 1 broke at step 1")
    assert "[rank 1]" not in result.stdout  # the log's marks stay in the log


def test_a_stop_reaches_every_rank_once_and_they_stop_together(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Stop (SIGINT to the tool) once every rank trains: torchrun alone is signalled, and it
    forwards SIGINT to each rank once. The tool signalling each rank as well would reach it
    before torchrun's own, which a rank that counts SIGINTs (as Checkpointer does) takes as a
    second Stop. The ranks agree on the step to stop at, rank 0 saves, the run is resumable."""
    recipe = _recipe(tmp_path, steps=100_000, delay=0.05, extra=", stop_grace: 60s")
    proc = sandbox.popen(recipe)
    try:
        # Rank 0 prints once init_process_group returned: every rank has joined.
        seen = read_until(proc, "rank 0 of 2", timeout=120)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = seen + rest
    assert proc.returncode == 130, out
    # torchrun's shutdown and the traceback of the signal it got are for the log only.
    assert "Traceback" not in out and "shutting down workers" not in out
    (log,) = (sandbox.persist / "runs/ddp/logs").glob("attempt-001-*.log")
    assert "SignalException" in log.read_text()
    ended = [line for line in log.read_text().splitlines() if " ended after step " in line]
    assert len(ended) == 2, out
    assert all(line.endswith("asked to stop 1 time(s) by torchrun") for line in ended), ended
    assert len({line.split(",")[0].split(" step ")[1] for line in ended}) == 1, ended
    assert (sandbox.persist / "runs/ddp/checkpoints/final.pt").is_file()


def test_the_time_limit_asks_every_rank_once_and_ends_the_session_cleanly(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """run.stop_after (the time limit's session form) under torchrun: as a Stop, torchrun
    alone is signalled and forwards it once to each rank; they stop at the same step, rank 0
    saves, the tool exits 0 with nothing on the console that reads like a crash."""
    recipe = _recipe(tmp_path, steps=100_000, delay=0.05, extra=", stop_after: 4s")
    result = sandbox.cli(recipe, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout
    (log,) = (sandbox.persist / "runs/ddp/logs").glob("attempt-001-*.log")
    ended = [line for line in log.read_text().splitlines() if " ended after step " in line]
    assert (
        len(ended) == 2 and len({line.split(",")[0].split(" step ")[1] for line in ended}) == 1
    ), ended
    assert all(line.endswith("asked to stop 1 time(s) by torchrun") for line in ended), ended
    assert (sandbox.persist / "runs/ddp/checkpoints/final.pt").is_file()


RESTARTED = """\
import sys
from pathlib import Path

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
resume = sys.argv[2:]
print(f"rank {rank} started with {resume}", flush=True)
if not resume:
    if rank == 0:
        torch.save({"step": 1}, Path(sys.argv[1]) / "step-1.pt")
    dist.barrier()  # saved before rank 1 breaks
    if rank == 1:
        raise RuntimeError("rank 1 broke after the save")
    dist.barrier()  # rank 0 waits here for its peer, which is gone
dist.destroy_process_group()
"""


def test_a_crashed_group_restarts_whole_with_the_same_checkpoint_on_every_rank(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(RESTARTED)
    recipe = write_recipe(
        tmp_path / "restart.yaml",
        f"name: restart\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {script: train.py, launcher: torchrun, nproc: 2, args: ['{ckpt}'],"
        " checkpoints: '{ckpt}', match: 'step-*.pt', resume: ['--resume', '{checkpoint}'],"
        " restarts: 1}\n",
    )
    result = sandbox.cli(recipe, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    logs = sorted((sandbox.persist / "runs/restart/logs").glob("attempt-*.log"))
    assert len(logs) == 2, result.stdout
    checkpoint = sandbox.scratch / "checkpoints/restart/step-1.pt"
    second = logs[1].read_text()
    for rank in (0, 1):
        assert f"[rank {rank}] rank {rank} started with []" in logs[0].read_text()
        assert f"[rank {rank}] rank {rank} started with ['--resume', '{checkpoint}']" in second


def _ranks_running(script: Path) -> list[int]:
    """The ranks running ``script`` (torchrun's own command line names it too)."""
    return [
        pid
        for pid, _, _, argv in processes()
        if str(script).encode() in argv and b"torch.distributed.run" not in argv
    ]


def test_a_second_stop_ends_every_rank_though_torchrun_starts_them_in_sessions_of_their_own(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Ranks that take no notice of a stop; Stop pressed twice: the tool kills at once, torchrun
    (which would have killed its ranks after its shutdown timeout) with the rest. Each rank is
    in a session of its own, out of reach of a signal to torchrun's group: the tool must find
    them, or they train on without anyone, holding the GPU."""
    recipe = _recipe(tmp_path, steps=100_000, delay=0.05, deaf=True, extra=", stop_grace: 600s")
    script = tmp_path / "scratch" / "repos" / "ddp" / "ddp.py"
    proc = sandbox.popen(recipe)
    try:
        read_until(proc, "rank 0 of 2", timeout=120)
        proc.send_signal(signal.SIGINT)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)  # the second Stop: no more grace
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    end = time.monotonic() + 10
    while _ranks_running(script) and time.monotonic() < end:
        time.sleep(0.1)
    left = _ranks_running(script)
    for pid in left:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"ranks still running after the tool ended: {left}"


# -- the Checkpointer and loop mode under two ranks -----------------------------------------

DDP_LOOP = """\
import os, sys, time

import torch
import torch.distributed as dist


def setup(steps):
    dist.init_process_group("gloo")
    torch.manual_seed(0)  # DDP also broadcasts rank 0's weights
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.05)}


def epoch(epoch, model, optimizer, steps, delay):
    rank = dist.get_rank()
    for step in range(steps):
        # Each rank's data from (epoch, step, rank): the checkpoint holds rank 0's RNG state
        data = torch.Generator().manual_seed(1000 * epoch + 10 * step + rank)
        x = torch.randn(16, 8, generator=data)
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()  # gradients all-reduced over the ranks
        optimizer.step()
        time.sleep(delay)
    print(f"epoch {epoch} trained on rank {rank}", flush=True)


def train(checkpoint, steps, stop_rank_1_at):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    start = checkpoint.restore(model=model, optimizer=optimizer)
    print(f"rank {rank} starts at step {start}", flush=True)
    for step in range(start, steps):
        if rank == 1 and step == stop_rank_1_at:
            os.kill(os.getpid(), 2)  # a stop only rank 1 is told of
            time.sleep(0.2)  # the handler has run by now
        x = torch.ones(4, 8) * (rank + 1)
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
        checkpoint.save(step, model=model, optimizer=optimizer)
        if checkpoint.should_stop:  # every rank must agree, or one waits in backward forever
            print(f"rank {rank} stops after step {step}", flush=True)
            return
        time.sleep(0.02)
    print(f"rank {rank} finished", flush=True)
"""


def _loop_recipe(tmp_path: Path, name: str, epochs: int, delay: float) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "ddp_loop.py").write_text(DDP_LOOP)
    return write_recipe(
        tmp_path / f"{name}.yaml",
        f"name: {name}\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        f"run: {{callable: 'ddp_loop:epoch', setup: 'ddp_loop:setup', epochs: {epochs},"
        f" kwargs: {{steps: 20, delay: {delay}}}, launcher: torchrun, nproc: 2,"
        " checkpoints: '{ckpt}', restarts: 0, stop_grace: 60s}\n",
    )


def _weights(path: Path) -> dict[str, object]:
    import torch

    return torch.load(path, weights_only=True)["objects"]["model"]


def _kill_everything_under(proc: subprocess.Popen[str]) -> None:
    """A lost VM: the tool, torchrun and every rank die at once, none of them told."""
    tree = {proc.pid}
    for _ in range(5):  # ranks are grandchildren, in sessions of their own
        tree |= {pid for pid, ppid, _, _ in processes() if ppid in tree}
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_loop_mode_under_two_ranks_killed_mid_epoch_resumes_to_the_same_weights(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    import torch

    epochs = 5
    baseline = sandbox.cli(_loop_recipe(tmp_path, "whole", epochs, delay=0), timeout=300)
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    whole = sandbox.persist / "runs/whole/checkpoints"
    last = f"step-{epochs - 1:09d}.pt"

    recipe = _loop_recipe(tmp_path, "killed", epochs, delay=0.05)
    killed = sandbox.persist / "runs/killed/checkpoints"
    proc = sandbox.popen(recipe)
    try:
        read_until(proc, "epoch 1 trained on rank 0", timeout=240)
        end = time.monotonic() + 60  # epoch 1's checkpoint on persist, epoch 2 under way
        while not (killed / "step-000000001.pt").exists() and time.monotonic() < end:
            time.sleep(0.05)
        assert (killed / "step-000000001.pt").exists()
        time.sleep(0.3)
        assert not (killed / "step-000000002.pt").exists()  # killed mid-epoch 2
        _kill_everything_under(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    shutil.rmtree(sandbox.scratch)  # a new VM

    resumed = sandbox.cli(recipe, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at epoch 2" in resumed.stdout
    assert "epoch 1 trained" not in resumed.stdout
    # Bit for bit what the uninterrupted two-rank run trained.
    ours, theirs = _weights(killed / last), _weights(whole / last)
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # type: ignore[arg-type]


def test_a_callable_whose_rank_1_alone_is_asked_to_stop_stops_every_rank_at_its_step(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Checkpointer.should_stop agrees across ranks: rank 1 alone gets SIGINT, both ranks
    stop after the same step (without agreement rank 0 trains on and waits in backward for a
    rank that left), and the next run restores that step on both ranks."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "ddp_loop.py").write_text(DDP_LOOP)
    recipe = write_recipe(
        tmp_path / "stop.yaml",
        f"name: stop\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {callable: 'ddp_loop:train', kwargs: {steps: 30, stop_rank_1_at: 6},"
        " launcher: torchrun, nproc: 2, checkpoints: '{ckpt}', restarts: 0}\n",
    )
    first = sandbox.cli(recipe, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    (log,) = (sandbox.persist / "runs/stop/logs").glob("attempt-001-*.log")
    lines = log.read_text().splitlines()
    assert "[rank 0] rank 0 stops after step 6" in lines, lines
    assert "[rank 1] rank 1 stops after step 6" in lines, lines
    second = sandbox.cli(recipe, "--extend", timeout=240)
    assert second.returncode == 0, second.stdout + second.stderr
    (log,) = (sandbox.persist / "runs/stop/logs").glob("attempt-002-*.log")
    lines = log.read_text().splitlines()
    for rank in (0, 1):
        assert f"[rank {rank}] rank {rank} starts at step 7" in lines, lines


def test_ranks_die_with_the_tool_though_torchrun_starts_them_in_sessions_of_their_own(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The tool killed outright (the cell's process killed): torchrun dies with it
    (PR_SET_PDEATHSIG), and so must every rank, or they train on holding the GPU."""
    recipe = _recipe(tmp_path, steps=100_000, delay=0.05, extra=", stop_grace: 600s")
    script = tmp_path / "scratch" / "repos" / "ddp" / "ddp.py"
    proc = sandbox.popen(recipe)
    try:
        read_until(proc, "rank 0 of 2", timeout=120)
        assert len(_ranks_running(script)) == 2
        os.kill(proc.pid, signal.SIGKILL)  # the tool alone
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    end = time.monotonic() + 10
    while _ranks_running(script) and time.monotonic() < end:
        time.sleep(0.1)
    left = _ranks_running(script)
    for pid in left:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"ranks still running after the tool was killed: {left}"
