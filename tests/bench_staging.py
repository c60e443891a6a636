"""Benchmark stage_data against the manual way (cp the archive to local disk, then tar -xf).

The manual tar takes the tool's ownership options (-p --no-same-owner): as root, a plain
``tar -xf`` would also chown every file, work the tool does not do.

Run: python tests/bench_staging.py [--quick] [--runs 4] [--dir /some/disk] [--writers N]
                                   [--url-mbps 100]
Prints one row per case: the median of the runs of each way, their ratio and the goal. The
source folder stands in for Drive. "cold" rows first drop the archive from the page cache, as
on a new Colab VM, where the archive on Drive has never been read; "warm" rows read it from
memory, which leaves the manual way's cp almost free. With ``--url-mbps N`` the archive is also
served over HTTP at N MB/s by a local server in another process, and the manual way is then
``curl -o`` and ``tar -xf``: a source whose reading takes time, as a download (or Drive) does.
Everything lives in a temporary folder that is removed at the end. The two ways take turns
going first, each after a sync, so that disk noise hits both alike. Not collected by pytest
(the name does not start with test_).

The small-file trees are removed only at the end: on ext4 without a journal (this machine's
disk), creating files right after deleting a few hundred thousand is several times slower for
minutes, which would blur the cases that follow.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bootstrap.data.gnutar import extract as gnutar  # noqa: E402
from bootstrap.data.gnutar.processes import OWNERSHIP  # noqa: E402
from bootstrap.data.stage import stage_data  # noqa: E402


def _small_tree(root: Path) -> None:
    rng = __import__("random").Random(1)
    for i in range(20_000):
        folder = root / "ds" / str(i // 200)
        folder.mkdir(parents=True, exist_ok=True)
        half = os.urandom(rng.randint(512, 2048))
        (folder / f"{i}.bin").write_bytes(half + half)  # 1-4 KB, gzip halves it


def _big_tree(root: Path) -> None:
    (root / "big").mkdir(parents=True)
    for i in range(4):
        with open(root / "big" / f"part{i}.bin", "wb") as out:
            for _ in range(100):
                out.write(os.urandom(512 * 1024) + bytes(512 * 1024))  # 1 MiB, half compressible


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _settle() -> None:
    subprocess.run(["sync"], check=False)
    time.sleep(0.5)


def _manual(fetch: list[str], copy: Path, out: Path) -> None:
    subprocess.run([*fetch, str(copy)], check=True)
    # The tool's ownership options: as root, a plain tar -xf chowns every file too.
    subprocess.run(["tar", "-xf", str(copy), "-C", str(out), *OWNERSHIP], check=True)


# A file server in a process of its own (so that it takes no GIL from the tool it feeds),
# sending each file at a steady rate: argv[2] MB/s, or the rate of the first "suffix=MB/s" of
# argv[3:] the path ends with. It prints its port, then serves until killed. A directory's
# listing is what uv reads as a --find-links page (bench_setup.py).
_PACED_SERVER = r"""
import functools, http.server, sys, time
folder, default = sys.argv[1], float(sys.argv[2]) * 1e6
rates = [(s, float(r) * 1e6) for s, r in (a.split("=") for a in sys.argv[3:])]

class Paced(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def copyfile(self, source, outputfile):
        path = self.path.split("?")[0]
        rate = next((r for s, r in rates if path.endswith(s)), default)
        start, sent = time.perf_counter(), 0
        while chunk := source.read(256 * 1024):
            outputfile.write(chunk)
            sent += len(chunk)
            ahead = sent / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # uv opens 20 connections at once: 5 would drop some SYNs (1 s)

server = Server(("127.0.0.1", 0), functools.partial(Paced, directory=folder))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def paced_server(
    folder: Path, mbps: float, **by_suffix: float
) -> tuple[subprocess.Popen[str], str]:
    """Serve ``folder`` at ``mbps`` MB/s (``by_suffix``: other rates for paths ending so);
    return the server process and its URL."""
    rates = [f"{suffix}={rate}" for suffix, rate in by_suffix.items()]
    server = subprocess.Popen(
        [sys.executable, "-c", _PACED_SERVER, str(folder), str(mbps), *rates],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, f"http://127.0.0.1:{server.stdout.readline().strip()}"


def _drop_from_cache(path: Path) -> None:
    """Evict a (synced, so clean) file's pages: the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _case(
    base: Path,
    label: str,
    archive: Path,
    goal: float,
    runs: int,
    *,
    cold: bool,
    keep: bool,
    url: str | None = None,
) -> list[str]:
    manual: list[float] = []
    ours: list[float] = []
    work = base / f"work-{label.replace(' ', '-')}"
    local = work / "local"
    local.mkdir(parents=True)
    for run in range(runs):
        copy, out = local / f"{run}-{archive.name}", work / f"manual-{run}"
        out.mkdir()
        dest, state = work / f"ours-{run}", work / f"state-{run}"
        fetch = ["curl", "-sSf", url, "-o"] if url else ["cp", str(archive)]
        ways: list[tuple[list[float], Callable[[], object]]] = [
            (manual, functools.partial(_manual, fetch, copy, out)),
            (ours, functools.partial(stage_data, url or archive, dest, state_dir=state)),
        ]
        # Each way goes first in every other run, and starts after a sync, so neither pays for
        # the other's dirty pages being written back.
        for times, action in ways if run % 2 == 0 else reversed(ways):
            _settle()
            if cold:
                _drop_from_cache(archive)
            times.append(_timed(action))
    again = _timed(lambda: stage_data(url or archive, work / "ours-0", state_dir=work / "state-0"))
    shutil.rmtree(local)  # the manual way's copies: big, and few files
    if not keep:
        shutil.rmtree(work)
    subprocess.run(["sync"], check=False)
    m, o = statistics.median(manual), statistics.median(ours)
    return [
        f"{label:<33} {m:>9.3f} {o:>9.3f} {o / m:>6.2f} {'<= ' + str(goal):>7}",
        f"{label + ' (2nd stage)':<33} {'':>9} {again:>9.3f} {'':>6} {'< 0.1 s':>7}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 4 x 100 MB cases")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--dir", default=None, help="where to make the temporary folder")
    writers = f"GNU tar processes (default here: {gnutar.writer_count()})"
    parser.add_argument("--writers", type=int, default=None, help=writers)
    paced = "also stage from a local HTTP server sending at this rate"
    parser.add_argument("--url-mbps", type=float, default=None, help=paced)
    args = parser.parse_args()
    if args.writers:
        gnutar.writer_count = lambda: args.writers
    base = Path(tempfile.mkdtemp(prefix="bench-staging-", dir=args.dir))
    rows = [f"{'case':<33} {'manual s':>9} {'ours s':>9} {'ratio':>6} {'goal':>7}"]
    try:
        sets = [("20k small files", _small_tree, 0.8, True)]
        if not args.quick:
            sets.append(("4 x 100 MB", _big_tree, 1.0, False))
        for label, build, goal, keep in sets:
            tree = base / f"tree-{goal}"
            build(tree)
            drive = base / f"drive-{goal}"
            drive.mkdir()
            for suffix, flag in ((".tar", "-cf"), (".tar.gz", "-czf")):
                archive = drive / f"data{suffix}"
                subprocess.run(["tar", flag, str(archive), "-C", str(tree), "."], check=True)
                for cold in (True, False):
                    name = f"{label} {suffix} {'cold' if cold else 'warm'}"
                    rows += _case(base, name, archive, goal, args.runs, cold=cold, keep=keep)
                    print(rows[-2], rows[-1], sep="\n", file=sys.stderr, flush=True)
                if args.url_mbps:
                    server, address = paced_server(drive, args.url_mbps)
                    try:
                        name = f"{label} {suffix} {args.url_mbps:g} MB/s"
                        rows += _case(base, name, archive, goal, args.runs, cold=False, keep=keep,
                                      url=f"{address}/{archive.name}")  # fmt: skip
                    finally:
                        server.kill()
                        server.wait()
                    print(rows[-2], rows[-1], sep="\n", file=sys.stderr, flush=True)
            if not keep:
                shutil.rmtree(tree)
                shutil.rmtree(drive)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
