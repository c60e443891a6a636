"""The CUDA side of Checkpointer, checked on a real GPU (issue 3): one short script.

    python tests/gpu_check.py                 # on a machine with CUDA: about a minute
    python tests/gpu_check.py --device cpu    # the same round trips on CPU (the logic only)

Checks, each printed as PASS or FAIL with what differed:
  1. CUDA RNG state: draws after a restore repeat the draws after the save, bit for bit, on
     every device (sync and async saves);
  2. map_location: a checkpoint of a model and Adam on the GPU restores onto the GPU (parameters
     and optimizer moments on the model's device) and onto a CPU-only model;
  3. GradScaler: an AMP training with a GradScaler, checkpointed and resumed in a fresh model,
     ends bit-identical to the uninterrupted one, scale and growth tracker included;
  4. async saves of GPU tensors: the file holds the values at the save, not later ones.
Exit code 0: all passed; 1: a check failed; 3: no CUDA device (nothing was checked).
Not collected by pytest (the name does not start with test_).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before torch

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bootstrap.training.checkpoint import Checkpointer  # noqa: E402

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}{'' if ok else f': {detail}'}", flush=True)
    if not ok:
        FAILED.append(name)


def rng_round_trip(folder: Path, device: str, blocking: bool) -> None:
    ckpt = Checkpointer(folder / f"rng-{blocking}", async_save=not blocking)
    torch.manual_seed(1)
    torch.rand(3, device=device)
    model = nn.Linear(2, 2).to(device)
    ckpt.save(0, model=model)
    ckpt.wait()
    after_save = [torch.rand(5, device=f"cuda:{i}") for i in range(torch.cuda.device_count())]
    after_save.append(torch.rand(5, device=device))
    torch.rand(100, device=device)  # move every generator on
    ckpt.restore(model=model)
    again = [torch.rand(5, device=f"cuda:{i}") for i in range(torch.cuda.device_count())]
    again.append(torch.rand(5, device=device))
    same = all(torch.equal(a, b) for a, b in zip(after_save, again, strict=True))
    check(f"RNG round trip ({'sync' if blocking else 'async'} save)", same, "draws differ")


def map_location(folder: Path, device: str) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(4, 8, device=device)).sum().backward()
    optimizer.step()
    ckpt = Checkpointer(folder / "map")
    ckpt.save(0, model=model, optimizer=optimizer)
    for target in dict.fromkeys([device, "cpu"]):
        fresh = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)).to(target)
        fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-2)
        ckpt.restore(model=fresh, optimizer=fresh_opt)
        where = {p.device.type for p in fresh.parameters()}
        moments = {t.device.type for s in fresh_opt.state.values() for t in s.values() if t.dim()}
        pairs = zip(model.parameters(), fresh.parameters(), strict=True)
        equal = all(torch.equal(a.cpu(), b.cpu()) for a, b in pairs)
        want = torch.device(target).type
        check(
            f"map_location onto {target}",
            where == {want} and moments == {want} and equal,
            f"params on {where}, Adam moments on {moments}, values equal: {equal}",
        )


def train(device: str, steps: range, folder: Path | None, resume: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**16, growth_interval=2)
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    ckpt = Checkpointer(folder, async_save=True) if folder else None
    if ckpt and resume:
        ckpt.restore(model=model, optimizer=optimizer, scaler=scaler)
    data = torch.Generator(device="cpu").manual_seed(5)
    batches = [torch.randn(16, 32, generator=data) for _ in range(steps.stop)]
    for step in steps:
        with torch.autocast(device_type=device, dtype=dtype):
            loss = model(batches[step].to(device)).float().pow(2).mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if ckpt:
            ckpt.save(step, model=model, optimizer=optimizer, scaler=scaler)
    if ckpt:
        ckpt.close()
    model.scaler_state = scaler.state_dict()  # type: ignore[assignment]
    return model


def grad_scaler(folder: Path, device: str) -> None:
    whole = train(device, range(12), None, resume=False)
    train(device, range(6), folder / "amp", resume=False)  # "killed" after step 5
    resumed = train(device, range(6, 12), folder / "amp", resume=True)
    pairs = zip(whole.parameters(), resumed.parameters(), strict=True)
    same = all(torch.equal(a, b) for a, b in pairs)
    scale = whole.scaler_state == resumed.scaler_state
    check("GradScaler resume is bit-identical", same and scale, f"weights {same}, scaler {scale}")


def async_snapshot(folder: Path, device: str) -> None:
    model = nn.Linear(1024, 1024).to(device)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ckpt = Checkpointer(folder / "snap", async_save=True)
    ckpt.save(0, model=model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the training goes on at once, on the same stream
    ckpt.close()
    saved = torch.load(folder / "snap" / "step-000000000.pt", weights_only=True)["objects"]
    same = all(torch.equal(saved["model"][k], v.cpu()) for k, v in before.items())
    check("async save holds the values at the save", same, "later values leaked in")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing checked (use --device cpu for the logic only)")
        return 3
    torch.use_deterministic_algorithms(True)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for blocking in (True, False):
            rng_round_trip(folder, args.device, blocking)
        map_location(folder, args.device)
        grad_scaler(folder, args.device)
        async_snapshot(folder, args.device)
    print("all passed" if not FAILED else f"FAILED: {', '.join(FAILED)}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
