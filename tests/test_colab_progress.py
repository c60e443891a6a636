"""Progress in a Colab cell: the real CLI on a pty with a 0x0 window, as a `!` cell runs it.

Colab gives every `!` command one pseudo-terminal as stdin, stdout and stderr, with ONLCR and
ECHOCTL off and the window size left at 0x0 (the same setup as shared/tools/colab_cell.py). The
cell's output area honours carriage returns, so a redrawn bar works there; what must not happen
is a long step that shows nothing until its closing line.
"""

from __future__ import annotations

import http.server
import io
import os
import re
import select
import signal
import subprocess
import sys
import tarfile
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Sandbox, write_recipe

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")

PIECE = 256 * 1024
BEFORE_PAUSE = 3 * 1024 * 1024  # three of the stager's 1 MiB reads, so three chances to draw
ARCHIVE_SIZE = 6 * 1024 * 1024
PAUSE_LIMIT = 15.0  # the longest the server holds the rest back, waiting for the test
# A progress update past the start: tqdm's "16%|" or the plain line's "(16%)".
PROGRESS = re.compile(rb"(?<![\d.])[1-9]\d?%")


@dataclass
class SlowArchive:
    """What the server sends, and the two moments it shares with the test."""

    body: bytes
    paused: threading.Event = field(default_factory=threading.Event)
    seen_progress: threading.Event = field(default_factory=threading.Event)


def _handler(archive: SlowArchive) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        """Sends the archive in small pieces, then holds the rest back until the test has seen
        a progress update on the cell (or until PAUSE_LIMIT): the step is certainly still under
        way while the test looks, however fast or slow the machine is."""

        def do_GET(self) -> None:
            body = archive.body
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), PIECE):
                if start == BEFORE_PAUSE:
                    archive.paused.set()
                    archive.seen_progress.wait(PAUSE_LIMIT)
                self.wfile.write(body[start : start + PIECE])
                self.wfile.flush()
                time.sleep(0.15)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _archive() -> bytes:
    """A plain tar of incompressible bytes, so its size on the wire is its size."""
    buffer = io.BytesIO()
    data = os.urandom(ARCHIVE_SIZE - 64 * 1024)
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("toy/blob.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def slow_server() -> Iterator[tuple[str, SlowArchive]]:
    archive = SlowArchive(_archive())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(archive))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", archive
    finally:
        archive.seen_progress.set()
        server.shutdown()
        server.server_close()


def colab_cell(
    argv: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` the way Colab starts a `!` command; return it and the pty's reading end."""
    leader, follower = os.openpty()
    attrs = termios.tcgetattr(follower)
    attrs[1] &= ~termios.ONLCR
    attrs[3] &= ~termios.ECHOCTL
    termios.tcsetattr(follower, termios.TCSANOW, attrs)
    assert os.get_terminal_size(follower) == (0, 0)  # a new pty's window size, as in Colab
    proc = subprocess.Popen(
        argv,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=cwd,
        close_fds=True,
        start_new_session=True,
    )
    os.close(follower)
    return proc, leader


def _read(leader: int, timeout: float) -> bytes | None:
    """What the cell received within ``timeout`` seconds: b"" for nothing yet, None at the end."""
    ready, _, _ = select.select([leader], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(leader, 65536) or None
    except OSError:  # EIO: every holder of the pty has closed it
        return None


def test_a_download_shows_progress_in_a_colab_cell_while_it_runs(
    sandbox: Sandbox, tmp_path: Path, slow_server: tuple[str, SlowArchive]
) -> None:
    url, archive = slow_server
    repo = tmp_path / "recipes" / "repo"
    repo.mkdir(parents=True)
    (repo / "train.py").write_text("print('trained')\n")
    recipe = write_recipe(
        tmp_path / "recipes" / "slow.yaml",
        "name: slow\nrepo: {url: repo}\ninstall: {requirements: []}\n"
        f"data:\n  - source: {url}/data.tar\n    to: '{{scratch}}/datasets/slow'\n"
        "run: {script: train.py}\n",
    )
    # Colab sets neither; either would hide a 0x0 window from code that reads them.
    env = {k: v for k, v in sandbox.env.items() if k not in ("COLUMNS", "LINES")}
    proc, leader = colab_cell([sys.executable, "-m", "bootstrap", str(recipe)], env, sandbox.root)
    received = b""
    progress_at: int | None = None  # where in ``received`` the first update arrived
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            data = _read(leader, 0.2)
            if data is None:
                break
            received += data
            if progress_at is None and archive.paused.is_set():
                # The server holds the download at BEFORE_PAUSE: the data step is under way.
                # (Only its own bar counts, not the repo step's before it.)
                bar_at = received.find(b"data.tar")
                match = PROGRESS.search(received, bar_at) if bar_at >= 0 else None
                if match:
                    progress_at = match.start()
                    archive.seen_progress.set()
        code = proc.wait(timeout=60)
    finally:
        archive.seen_progress.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(leader)
    text = received.decode(errors="replace")
    assert progress_at is not None, (
        f"no progress within {PAUSE_LIMIT:.0f} s while the download was under way:\n{text!r}"
    )
    closing = re.search(rb"\xe2\x9c\x93(?:\x1b\[0m)? data\[0\] ", received)  # "✓", maybe styled
    assert closing is not None and code == 0, text
    assert progress_at < closing.start()  # the update came before the step's closing line
    # Redrawn in place with carriage returns, each drawing short enough for an output area.
    drawings = [d for line in text.split("\n") for d in line.split("\r") if "%" in d]
    assert drawings and all(len(d) <= 100 for d in drawings), drawings
    assert "trained" in text
