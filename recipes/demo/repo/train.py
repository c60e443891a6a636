"""A tiny real training script, the way many research repos write one.

It fits a small MLP to a CSV data set, saves a checkpoint every epoch into --logdir and, given
--resume PATH, continues from that checkpoint. It knows nothing about colab-bootstrap.
"""

import argparse
import csv
import os
import time
from pathlib import Path

import torch
from torch import nn


def load_data(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    rows = []
    for path in sorted(root.glob("*.csv")):
        with open(path, newline="") as handle:
            rows += [[float(v) for v in row] for row in csv.reader(handle)]
    if not rows:
        raise SystemExit(f"no .csv files in {root}")
    table = torch.tensor(rows)
    return table[:, :-1], table[:, -1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_root", type=Path, required=True)
    parser.add_argument("--logdir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--epoch_seconds", type=float, default=0.3,
                        help="extra time per epoch, so the demo can be interrupted")
    parser.add_argument("--resume", type=Path, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    x, y = load_data(args.data_root)
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    start = 0
    if args.resume:
        state = torch.load(args.resume, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
        print(f"resumed from {args.resume.name}: starting at epoch {start}", flush=True)

    args.logdir.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, args.epochs):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        time.sleep(args.epoch_seconds)
        # Test hook: crash once at this epoch, as a flaky training would.
        crash_at = os.environ.get("DEMO_CRASH_AT_EPOCH")
        flag = args.logdir / "crashed-once"
        if crash_at and int(crash_at) == epoch and not flag.exists():
            flag.write_text("1")
            raise RuntimeError(f"simulated crash at epoch {epoch}")
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        # Test hook: pad checkpoints to a given size, as a real model's would be.
        pad = int(os.environ.get("DEMO_PAD_BYTES", "0"))
        if pad:
            state["pad"] = torch.zeros(pad // 4)
        torch.save(state, args.logdir / f"epoch-{epoch:03d}.pt")
        print(f"epoch {epoch}: loss {loss.item():.4f}", flush=True)
    print("training finished", flush=True)


if __name__ == "__main__":
    main()
