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


CRASHED = (
    b"[rank 1] step 1\n[rank 0] step 1\n"
    b'[rank 1] Traceback (most recent call last):\n[rank 1]   File "t.py", line 1\n'
    b"[rank 1] ValueError: an early one, handled\n[rank 1] step 2\n"
    b"[rank 1] [rank1]: Traceback (most recent call last):\n"
    b'[rank 0] [rank0]: Traceback (most recent call last):\n[rank 1] [rank1]:   File "t.py"'
    b", line 9\n[rank 0] [rank0]: RuntimeError: Connection closed by peer\n"
    b"[rank 1] [rank1]: RuntimeError: the real error\n[rank 2] step 2\n"
    b"torchrun: ChildFailedError\n"
)


def test_each_other_ranks_last_traceback_is_kept_however_the_output_is_cut() -> None:
    chances = random.Random(11)
    for _ in range(300):
        console = RankZeroConsole(lambda data: None)
        position = 0
        while position < len(CRASHED):
            size = chances.randint(1, 20)
            console(CRASHED[position : position + size])
            position += size
        assert console.crashes() == [
            (
                1,
                b"[rank1]: Traceback (most recent call last):\n"
                b'[rank1]:   File "t.py", line 9\n'
                b"[rank1]: RuntimeError: the real error\n",
            )
        ]  # rank 0's is on the console already; rank 2 printed none


def test_a_long_traceback_keeps_its_first_line_and_its_end() -> None:
    console = RankZeroConsole(lambda data: None)
    frames = b"".join(b'[rank 3]   File "f.py", line %d\n' % i for i in range(100))
    console(b"[rank 3] Traceback (most recent call last):\n" + frames + b"[rank 3] KeyError: 'x'\n")
    ((rank, shown),) = console.crashes()
    lines = shown.splitlines()
    assert rank == 3 and len(lines) == 40
    assert lines[:2] == [b"Traceback (most recent call last):", b"  ..."]
    assert lines[-2:] == [b'  File "f.py", line 99', b"KeyError: 'x'"]
