"""The console's styling: ANSI codes on a terminal only, and never where NO_COLOR is set; progress
bars on every terminal, a Colab cell's 0x0 one included."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import select
import struct
import termios
from collections.abc import Iterator

import pytest

from bootstrap.ui import Console, ConsoleLogHandler, ConsoleReporter, window_size


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, io.TextIOWrapper]]:
    """Both ends of a real pseudo-terminal, so isatty() and the window size are the kernel's
    answers. A new pty's window is 0x0, as on a Colab `!` cell."""
    leader, follower = os.openpty()
    stream = io.TextIOWrapper(io.FileIO(follower, "w"), encoding="utf-8")
    yield leader, stream
    stream.close()
    os.close(leader)


@pytest.fixture
def terminal(pty_pair: tuple[int, io.TextIOWrapper]) -> io.TextIOWrapper:
    """The writing end of a real pseudo-terminal."""
    return pty_pair[1]


def drain(leader: int) -> str:
    chunks = []
    while select.select([leader], [], [], 0.2)[0]:
        chunks.append(os.read(leader, 65536))
    return b"".join(chunks).decode()


def draw_a_bar(stream: io.TextIOWrapper) -> None:
    bar = ConsoleReporter(stream=stream).progress("reading data.tar", total=4_000_000)
    bar.advance(1_000_000)
    bar.set_total(4_000_000)  # redraws at once, whatever the time since the last drawing
    bar.close()


def test_a_pipe_or_file_gets_plain_lines() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(stream=out)
    with reporter.step("data[0]") as step:
        step.skip("already staged [in /tmp]")  # brackets are text, not markup
    reporter.message("error: bad", style="bold red")
    text = out.getvalue()
    assert "\x1b" not in text
    assert "skipped: already staged [in /tmp]" in text
    assert text.endswith("error: bad\n")


def test_a_terminal_gets_styles(
    terminal: io.TextIOWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    console = Console(terminal)
    assert console.is_terminal and console.color
    assert console.style("fix: x", "yellow") == "\x1b[33mfix: x\x1b[0m"
    assert console.style("plain", "") == "plain"


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"NO_COLOR": "0"}, {"TERM": "dumb"}])
def test_no_color_and_dumb_terminals_get_plain_text(
    terminal: io.TextIOWrapper, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    console = Console(terminal)
    assert console.is_terminal and not console.color
    assert console.style("error", "bold red") == "error"


def test_an_empty_no_color_is_not_set(
    terminal: io.TextIOWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """no-color.org: NO_COLOR counts only when it is present and not an empty string."""
    monkeypatch.setenv("NO_COLOR", "")
    monkeypatch.setenv("TERM", "xterm")
    assert Console(terminal).color


def test_log_records_are_one_line_each_with_warnings_marked() -> None:
    out = io.StringIO()
    handler = ConsoleLogHandler(Console(out))
    logger = logging.getLogger("test_ui.records")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.warning("persist is not writable: %s", "[Errno 5]")
        logger.info("mirrored %d files", 3)
    finally:
        logger.removeHandler(handler)
    assert out.getvalue() == "! persist is not writable: [Errno 5]\n  mirrored 3 files\n"


def draw_two_steps(stream: io.TextIOWrapper) -> None:
    """Two setup steps under way at once, and a third one's closing line printed meanwhile."""
    reporter = ConsoleReporter(stream=stream)
    data = reporter.progress("data[0] reading data.tar", total=4_000_000)
    install = reporter.progress("install", None, "pkg")
    data.advance(1_000_000)
    install.advance(3)
    data.set_total(4_000_000)  # redraws at once, whatever the time since the last drawing
    with reporter.step("repo") as step:
        step.note("cloned")
    install.close()
    data.close()


def test_a_colab_cells_0x0_terminal_shows_every_open_bar_on_one_line(
    pty_pair: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Colab cell honours carriage returns but not cursor movements: the steps under way share
    one line, redrawn with \\r at a width that suits a notebook's output area (tqdm left to
    follow a 0x0 window drew nothing at all), and a finished step's line is printed above it."""
    leader, stream = pty_pair
    monkeypatch.delenv("COLUMNS", raising=False)
    assert window_size(stream) is None
    draw_two_steps(stream)
    out = drain(leader)
    assert "\x1b[A" not in out and "\x1b[1A" not in out  # no cursor movement
    lines = out.split("\n")
    assert len(lines) == 2 and "✓" in lines[0] and "repo" in lines[0] and "cloned" in lines[0]
    drawings = [d.rstrip() for line in lines for d in line.split("\r") if "✓" not in d]
    assert "  data[0] reading data.tar 25% (1.0 MB) · install 3 pkg" in drawings, drawings
    assert all(len(d) <= 99 for d in drawings), drawings
    assert out.endswith("\r") and not out.rsplit("\r", 2)[1].strip()  # blanked at the end


def test_columns_sets_the_width_a_0x0_terminal_does_not_report(
    pty_pair: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader, stream = pty_pair
    monkeypatch.setenv("COLUMNS", "40")
    draw_two_steps(stream)
    drawings = [d.rstrip() for d in drain(leader).split("\r") if d.strip() and "✓" not in d]
    assert drawings and all(len(d) <= 39 for d in drawings), drawings
    assert "  data[0] reading data.tar 25% (1.0 MB…" in drawings, drawings


def test_a_sized_terminal_gets_bars_that_fit_its_window(
    pty_pair: tuple[int, io.TextIOWrapper],
) -> None:
    leader, stream = pty_pair
    fcntl.ioctl(stream.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 20, 60, 0, 0))
    assert window_size(stream) == (60, 20)
    draw_a_bar(stream)
    drawings = [d for d in drain(leader).split("\r") if d.strip()]
    # one column short of the window, as tqdm leaves it, so the line never wraps
    assert any("25%|" in d for d in drawings) and {len(d) for d in drawings} == {59}, drawings


def test_a_pipe_gets_progress_as_occasional_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("bootstrap.ui._MIN_LINE_INTERVAL", 0.0)  # a line at every update
    bar = ConsoleReporter(stream=out).progress("reading data.tar", total=4_000_000)
    bar.advance(1_000_000)
    bar.advance(1_000_000)
    bar.close()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert out.getvalue().splitlines() == [
        "  reading data.tar: 1.0 MB of 4.0 MB (25%)",
        "  reading data.tar: 2.0 MB of 4.0 MB (50%)",
        "  reading data.tar: 2.0 MB of 4.0 MB (50%)",
    ]
