"""The console's view of a torchrun group's marked output (bootstrap.runner.ranks)."""

from __future__ import annotations

import random

from bootstrap.runner.ranks import RankZeroConsole

MARKED = (
    b"torchrun's banner\n"
    b"[rank 0] epoch 1\n[rank 1] epoch 1\n"
    b"[rank 0]  10%\r[rank 1]  10%\r[rank 0]  20%\r[rank 10] [rank 0] is not a mark here\n"
    b"[rank 0] [rank 1] is text here\n[rank 0] a prompt: "
)
RANK_0 = b"torchrun's banner\nepoch 1\n 10%\r 20%\r[rank 1] is text here\na prompt: "


def test_rank_0_shows_unmarked_with_the_launchers_lines_however_the_output_is_cut() -> None:
    chances = random.Random(7)
    for _ in range(500):
        shown: list[bytes] = []
        console = RankZeroConsole(shown.append)
        position = 0
        while position < len(MARKED):
            size = chances.randint(1, 14)
            console(MARKED[position : position + size])
            position += size
        assert b"".join(shown) == RANK_0


def test_after_a_stop_the_launchers_own_lines_are_hidden() -> None:
    shown: list[bytes] = []
    console = RankZeroConsole(shown.append)
    console(b"banner\n")
    console.hide_launcher()
    console(b"Traceback (most recent call last):\n[rank 0] saved\n")
    assert b"".join(shown) == b"banner\nsaved\n"
