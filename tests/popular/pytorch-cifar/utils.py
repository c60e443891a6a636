"""Stand-in written for these tests that mimics kuangliu/pytorch-cifar's utils.py where main.py
and recipes/pytorch-cifar.yaml meet it (no code of that repo): a one-line progress bar sized to
the terminal, whose width it asks `stty size` for when it is imported. As with the real module,
that import fails ("ValueError: not enough values to unpack") unless stdin is a terminal (the
repo's issues #44, #117, #157); the recipe relies on the tool running training on a
pseudo-terminal."""

import subprocess
import sys
import time

# `stty size` prints "rows columns"; off a terminal it prints nothing (and an error to stderr)
_rows, _columns = subprocess.run(["stty", "size"], stdout=subprocess.PIPE, text=True).stdout.split()
TERMINAL_COLUMNS = int(_columns)
BAR_CELLS = 40

_started = time.time()


def _seconds(span):
    return f"{span:.1f}s" if span >= 1 else f"{span * 1000:.0f}ms"


def progress_bar(current, total, msg=None):
    """Redraw the bar for batch ``current`` (from 0) of ``total``; a newline after the last."""
    global _started
    if current == 0:
        _started = time.time()
    done = (current + 1) * BAR_CELLS // total
    line = f"[{'#' * done}{'-' * (BAR_CELLS - done)}] {current + 1}/{total}"
    line += f" {_seconds(time.time() - _started)}"
    if msg:
        line += f" | {msg}"
    # pad to the width so that a shorter redraw leaves nothing of the longer one behind
    line = line.ljust(TERMINAL_COLUMNS - 1)
    sys.stdout.write(line + ("\n" if current + 1 >= total else "\r"))
    sys.stdout.flush()
