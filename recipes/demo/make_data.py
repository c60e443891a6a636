"""Regenerate data.tar.gz, the demo's small data set (y = sum of x plus noise)."""

import io
import random
import tarfile
from pathlib import Path

rng = random.Random(0)
lines = []
for _ in range(256):
    xs = [rng.uniform(-1, 1) for _ in range(4)]
    lines.append(",".join(f"{v:.5f}" for v in [*xs, sum(xs) + rng.gauss(0, 0.05)]))
payload = ("\n".join(lines) + "\n").encode()
out = Path(__file__).with_name("data.tar.gz")
with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as tar:
    info = tarfile.TarInfo("toy/train.csv")
    info.size, info.mtime, info.mode = len(payload), 1_700_000_000, 0o644
    tar.addfile(info, io.BytesIO(payload))
print(f"wrote {out}")
