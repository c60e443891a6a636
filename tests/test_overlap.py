"""Setup steps side by side, through the real CLI: the clone and a download overlap, a failing
step stops the others, and Ctrl-C during setup stops every step with nothing half-done.

The repo is served over plain HTTP by a local server (git's dumb protocol: a bare repo after
``git update-server-info``), and so is the data archive, and the server holds either back until
the test, or the other request, lets it go. So each test knows which step is under way when it
looks, on a machine of any speed: nothing here is a timed race.
"""

from __future__ import annotations

import http.server
import io
import os
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Sandbox, git, group, write_recipe

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes in /proc")

GATE_LIMIT = 60.0  # the longest the server holds a request: a failing test ends, never hangs


@dataclass
class Server:
    url: str
    bare: Path
    archive: bytes
    repo_open: threading.Event = field(default_factory=threading.Event)
    data_open: threading.Event = field(default_factory=threading.Event)
    repo_asked: threading.Event = field(default_factory=threading.Event)
    data_asked: threading.Event = field(default_factory=threading.Event)
    data_after_repo: bool = False  # the archive is sent only once the clone has asked


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(server.bare.parent), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            if self.path.startswith("/data.tar.gz"):
                server.data_asked.set()
                if server.data_after_repo:
                    server.repo_asked.wait(GATE_LIMIT)
                half = len(server.archive) // 2
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.archive)))
                self.end_headers()
                self.wfile.write(server.archive[:half])
                self.wfile.flush()
                if server.data_open.wait(GATE_LIMIT):
                    self.wfile.write(server.archive[half:])
                return
            server.repo_asked.set()
            if not server.repo_open.wait(GATE_LIMIT):
                self.send_error(503, "held too long")
                return
            super().do_GET()  # a file of the bare repo; git's ?service= query is ignored

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client stopped mid-response: what these tests do on purpose


def _archive() -> bytes:
    """A tar.gz of one incompressible 4 MB file, so half of it is a real part of the stage."""
    buffer = io.BytesIO()
    data = os.urandom(4_000_000)
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("toy/blob.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    work = tmp_path / "origin"
    work.mkdir()
    (work / "train.py").write_text(
        "import pathlib, sys\n"
        "print('blob bytes:', pathlib.Path(sys.argv[1]).stat().st_size, flush=True)\n"
    )
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-qm", "train", cwd=work)
    served = tmp_path / "served"
    served.mkdir()
    bare = served / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    git("update-server-info", cwd=bare)
    state = Server("", bare, _archive())
    httpd = _QuietServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.repo_open.set()
        state.data_open.set()
        httpd.shutdown()
        httpd.server_close()


def _recipe(tmp_path: Path, server: Server, source: str | None = None, sha256: str = "") -> Path:
    data = source or f"{server.url}/data.tar.gz"
    return write_recipe(
        tmp_path / "overlap.yaml",
        f"name: overlap\nrepo: {{url: '{server.url}/repo.git'}}\ninstall: {{requirements: []}}\n"
        f"data:\n  - {{source: '{data}', to: '{{scratch}}/datasets/d'"
        + (f", sha256: '{sha256}'" if sha256 else "")
        + "}\n"
        "run: {script: train.py, args: ['{scratch}/datasets/d/toy/blob.bin']}\n",
    )


def _group(pgid: int) -> list[str]:
    """The commands of the live processes in process group ``pgid``."""
    return [b" ".join(argv).decode(errors="replace") for _, argv in group(pgid)]


def _wait(event: threading.Event, proc: subprocess.Popen[str], what: str) -> None:
    end = time.monotonic() + GATE_LIMIT
    while not event.wait(0.05):
        if proc.poll() is not None or time.monotonic() > end:
            out = proc.stdout.read() if proc.stdout and proc.poll() is not None else ""
            raise AssertionError(f"{what} never happened (exit {proc.poll()}):\n{out}")


def _left_behind(sandbox: Sandbox, work_folders: bool = True) -> list[str]:
    """Data markers, and what is in the data's parent folder: the data, or the staging's work
    folder (a dot-folder beside it)."""
    markers = sorted(p.name for p in sandbox.scratch.glob(".bootstrap/*/data/*.json"))
    datasets = sandbox.scratch / "datasets"
    found = sorted(p.name for p in datasets.iterdir()) if datasets.is_dir() else []
    return markers + [name for name in found if work_folders or not name.startswith(".")]


def test_the_clone_waits_on_a_download_that_only_runs_beside_it(
    sandbox: Sandbox, tmp_path: Path, server: Server
) -> None:
    """The server holds the clone until the archive's download has begun: one after the other,
    the clone would wait for GATE_LIMIT and fail."""
    opener = threading.Thread(
        target=lambda: server.data_asked.wait(GATE_LIMIT) and server.repo_open.set(), daemon=True
    )
    opener.start()
    server.data_open.set()
    result = sandbox.cli(_recipe(tmp_path, server), timeout=GATE_LIMIT * 2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "blob bytes: 4000000" in result.stdout
    for step in ("repo", "install", "data[0]", "checkpoints", "train"):
        assert f" {step} " in result.stderr, result.stderr


def test_a_failing_step_stops_the_others_and_names_itself(
    sandbox: Sandbox, tmp_path: Path, server: Server
) -> None:
    """data[0] fails its sha256 check while the clone is held mid-way by the server (the archive
    is sent only once the clone has asked): the clone is stopped, its git processes with it, the
    error and the exit code are the data step's, and the run after it does everything."""
    server.data_after_repo = True
    server.data_open.set()
    proc = sandbox.popen(_recipe(tmp_path, server, sha256="0" * 64))
    try:
        out, _ = proc.communicate(timeout=GATE_LIMIT / 2)  # far less than the server's hold
    finally:
        if proc.poll() is None:
            proc.kill()
    assert server.repo_asked.is_set()
    assert proc.returncode == 3, out
    assert f"error: sha256 of {server.url}/data.tar.gz does not match" in out, out
    assert "✗ data[0]" in out and "■ repo" in out, out
    assert _group(proc.pid) == []  # git and its helpers were stopped, not left running
    assert not (sandbox.scratch / "repos" / "overlap" / "train.py").exists()
    assert _left_behind(sandbox) == []

    server.repo_open.set()
    again = sandbox.cli(_recipe(tmp_path, server), timeout=GATE_LIMIT * 2)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "blob bytes: 4000000" in again.stdout


@pytest.mark.parametrize("who", ["the tool", "its process group"])
def test_ctrl_c_during_setup_stops_every_step_and_exits_130(
    sandbox: Sandbox, tmp_path: Path, server: Server, who: str
) -> None:
    """Colab's Stop interrupts the tool; Ctrl-C in a terminal interrupts its whole group. Both
    with the clone held by the server and the download half done."""
    recipe = _recipe(tmp_path, server)
    proc = sandbox.popen(recipe)
    try:
        _wait(server.repo_asked, proc, "the clone's first request")
        _wait(server.data_asked, proc, "the download")
        if who == "the tool":
            os.kill(proc.pid, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=GATE_LIMIT / 2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    assert _group(proc.pid) == []
    # The download, stalled by the server, cannot be woken: its work folder may stay, as after
    # a hard kill, with no marker and nothing in the data's place; the next run removes it.
    assert _left_behind(sandbox, work_folders=False) == []
    assert not (sandbox.scratch / "repos" / "overlap" / "train.py").exists()

    server.repo_open.set()
    server.data_open.set()
    again = sandbox.cli(recipe, timeout=GATE_LIMIT * 2)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "blob bytes: 4000000" in again.stdout
    markers = [m.name for m in sandbox.scratch.glob(".bootstrap/*/data/*.json")]
    assert len(markers) == 1 and _left_behind(sandbox) == [*markers, "d"]  # no work folder


LATER_TRAIN = """\
import os, pathlib, sys, time
ckpt = pathlib.Path(sys.argv[1])
ckpt.mkdir(parents=True, exist_ok=True)
print("at start:", sorted(p.name for p in ckpt.glob("*.pt")), flush=True)
if "--resume" not in sys.argv:
    for step in range(4):
        (ckpt / f"step-{step}.pt").write_bytes(os.urandom(200_000))
        time.sleep(0.05)  # distinct mtimes: step-3 is the newest
print("trained", flush=True)
"""


def test_a_new_vm_starts_training_once_the_resume_checkpoint_is_back(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Persist read at 100 KB/s: each 200 KB checkpoint takes 2 s to restore. The training
    starts after the newest is back, sees only that one, and the three older ones come back
    beside it before the run ends."""
    repo = tmp_path / "later-repo"
    repo.mkdir()
    (repo / "train.py").write_text(LATER_TRAIN)
    recipe = write_recipe(
        tmp_path / "later.yaml",
        f"name: later\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {script: train.py, args: ['{ckpt}'], checkpoints: '{ckpt}', match: '*.pt',"
        " resume: ['--resume', '{checkpoint}']}\n",
    )
    first = sandbox.cli(recipe)
    assert first.returncode == 0, first.stdout + first.stderr
    mirrored = sandbox.persist / "runs" / "later" / "checkpoints"
    assert sorted(p.name for p in mirrored.glob("*.pt")) == [f"step-{i}.pt" for i in range(4)]

    sandbox.wipe_scratch()  # a new VM
    again = sandbox.cli(recipe, "--extend", env={"BOOTSTRAP_PERSIST_READ_MBPS": "0.1"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "at start: ['step-3.pt']" in again.stdout, again.stdout
    assert "restored 1 file from" in again.stderr and "3 older checkpoints after the start" in (
        again.stderr
    ), again.stderr
    local = sandbox.scratch / "checkpoints" / "later"
    for path in mirrored.glob("*.pt"):  # all back, whole, with the mirror's times
        copy = local / path.name
        assert copy.read_bytes() == path.read_bytes()
        assert copy.stat().st_mtime_ns == path.stat().st_mtime_ns
    assert not [p.name for p in local.iterdir() if not p.name.endswith(".pt")]  # no temp files


def test_prepare_in_a_notebook_overlaps_the_steps_too(
    sandbox: Sandbox, tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bootstrap.prepare() in this process, as in a notebook kernel: the same held clone as
    above is let go only once the download has begun."""
    import sys

    import bootstrap

    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "path", list(sys.path))
    opener = threading.Thread(
        target=lambda: server.data_asked.wait(GATE_LIMIT) and server.repo_open.set(), daemon=True
    )
    opener.start()
    server.data_open.set()
    env = bootstrap.prepare(_recipe(tmp_path, server), mirror=False)
    assert (env.repo / "train.py").is_file()
    assert (env.data[0] / "toy" / "blob.bin").stat().st_size == 4_000_000
