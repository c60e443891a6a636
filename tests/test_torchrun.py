"""run.launcher: torchrun, on this CPU machine: two ranks of a tiny DDP model on gloo, through
the real CLI, started by torch.distributed.run as the tool builds its command line."""

from __future__ import annotations

import os
import signal
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
    for rank in (0, 1):
        assert f"rank {rank} of 2" in result.stdout
        assert f"rank {rank} ended after step 2, asked to stop 0 time(s) by torchrun" in (
            result.stdout
        )
    saved = torch.load(sandbox.persist / "runs/ddp/checkpoints/final.pt", weights_only=True)
    assert set(saved) == {"weight", "bias"}


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
        seen = read_until(proc, "rank 1 of 2", timeout=120)
        if "rank 0 of 2" not in seen:
            seen += read_until(proc, "rank 0 of 2", timeout=60)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = seen + rest
    assert proc.returncode == 130, out
    ended = [line for line in out.splitlines() if " ended after step " in line]
    assert len(ended) == 2, out
    assert all(line.endswith("asked to stop 1 time(s) by torchrun") for line in ended), ended
    assert len({line.split(",")[0].split(" step ")[1] for line in ended}) == 1, ended
    assert (sandbox.persist / "runs/ddp/checkpoints/final.pt").is_file()


def _ranks_running(script: Path) -> list[int]:
    return [pid for pid, _, _, argv in processes() if str(script).encode() in argv]


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
        read_until(proc, "rank 1 of 2", timeout=120)
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
