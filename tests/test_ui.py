"""The console's styling: ANSI codes on a terminal only, and never where NO_COLOR is set."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest

from bootstrap.ui import Console, ConsoleLogHandler, ConsoleReporter


@pytest.fixture
def terminal() -> Iterator[io.TextIOWrapper]:
    """The writing end of a real pseudo-terminal, so isatty() is the kernel's answer."""
    leader, follower = os.openpty()
    stream = io.TextIOWrapper(io.FileIO(follower, "w"), encoding="utf-8")
    yield stream
    stream.close()
    os.close(leader)


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
