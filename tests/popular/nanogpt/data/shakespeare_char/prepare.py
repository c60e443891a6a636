"""Stand-in written for these tests that mimics karpathy/nanoGPT's
data/shakespeare_char/prepare.py (no code of that repo): it turns input.txt beside it into
character ids and writes train.bin and val.bin (uint16, 90% / 10% of the text) and meta.pkl
(vocab_size and the two character maps) beside it."""

import pickle
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TRAIN_SHARE = 0.9


def main():
    source = HERE / "input.txt"
    if not source.exists():
        # STAND-IN: the real script downloads input.txt when it is missing. These tests run
        # offline; the recipe's commented-out `data:` entry stages it from an archive instead.
        sys.exit(f"stand-in prepare.py: {source} is missing and this stand-in does not download")
    text = source.read_text()
    alphabet = sorted(set(text))
    index_of = {char: number for number, char in enumerate(alphabet)}
    print(f"{len(text):,} characters in {source.name}")
    print(f"vocab size: {len(alphabet):,}")

    ids = np.fromiter((index_of[char] for char in text), dtype=np.uint16, count=len(text))
    cut = int(len(ids) * TRAIN_SHARE)
    for name, part in (("train.bin", ids[:cut]), ("val.bin", ids[cut:])):
        part.tofile(HERE / name)
        print(f"{name}: {len(part):,} ids")

    meta = {
        "vocab_size": len(alphabet),
        "itos": dict(enumerate(alphabet)),
        "stoi": index_of,
    }
    with open(HERE / "meta.pkl", "wb") as handle:
        pickle.dump(meta, handle)


if __name__ == "__main__":
    main()
