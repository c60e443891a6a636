"""Benchmark of the checkpoint mirror's lag: how soon a checkpoint reaches persist (issue 13).

Run from the repository root::

    python tests/bench_mirror_lag.py            # 1 and 200 MB, saves every 0.3, 1, 10 s: ~3 min
    python tests/bench_mirror_lag.py --quick    # the same cases, fewer saves: under a minute
    python tests/bench_mirror_lag.py --sizes 50 --intervals 0.5 2 --persist-mbps 60

Not a test: pytest does not collect it, and nothing here asserts on time. It prints a markdown
table (for the README) of figures measured in the same run, and ratios to the goals.

Each case is a training that rewrites one checkpoint in place at a fixed rhythm while a
``CheckpointMirror`` (public API only, its defaults) copies it from scratch to persist:

- The writer does what ``torch.save(obj, path)`` does: opens the same path with "wb"
  (truncating it) and writes a zip archive (stored) whose central directory comes last; a small
  member holds the version number, a second one pads the file to its size. Closing the file
  commits version k; its commit time is taken then.
- Persist is a local folder made as slow as Google Drive by the mirror's ``fault_hook``: the
  hook sleeps before each chunk of ``CHUNK_SIZE`` bytes so that each copy is written at
  ``--persist-mbps`` (100 MB/s by default). Other persist operations are not delayed.
- A watcher polls the file on persist every 15 ms, reads only its version member, and records
  when each version first appears. A poll that finds a file that does not open as a whole zip
  counts as a torn read (there must be none).

The window of a case runs from the first save to one save interval after the last one (when
the next would have come) or the goal's bound after it, whichever is later, plus 0.5 s: a
mirror meeting its goal has time to deliver the last version. It ends early once the last
version is on persist. Then ``stop(final=True, timeout=...)`` runs, as when the training exits.
A case saves for about 20 s (``--quick``: 2 s), at least 4 times (``--quick``: once).

Per case:

- copy alone: one paced copy of that file to persist (read in chunks, written through the same
  pacing, fsynced, renamed into place), measured in the same run: the baseline. The mirror's
  own single copy (``stop(final=True)`` of a mirror that was never started) is printed below
  the table for reference.
- lag median / max: commit to first appearance on persist, over the versions that arrived
  during the window; reached: how many of the versions saved did.
- stale max: the worst staleness of persist over the window, max over time of (now - commit
  time of the first version newer than the one persist holds): how long persist was out of
  date. It equals the worst lag over *all* versions when a version that persist skipped (a newer
  one arrived first) counts until that newer one arrived, and a missing one until the end.
- written: bytes the mirror wrote to persist during the window, in files' worth (copies that
  were thrown away count too).
- goal: a save interval at least as long as one copy should give lag <= copy + 1 s; faster saves
  should leave persist never older than two copies (stale <= 2 x copy). Both are judged on
  stale max (so a skipped or missing version counts), as ratio = stale max / bound, goal <= 1.
- after stop: the version persist holds once ``stop`` returned, checked whole (the zip opens,
  every member's CRC matches), and how long ``stop`` took.

Everything is written under one fresh folder in the system temp dir (or ``--dir``), removed at
the end; a case's files are removed as soon as it is done.
"""

from __future__ import annotations

import argparse
import inspect
import io
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bootstrap.mirror.files import CHUNK_SIZE  # noqa: E402
from bootstrap.mirror.thread import CheckpointMirror  # noqa: E402

NAME = "last.pt"
VERSION_MEMBER = "bench/version"
DATA_MEMBER = "bench/data/0"
POLL_S = 0.015
LAG_SLACK_S = 1.0  # the goal for slow saves: lag <= copy + this
TAIL_MARGIN_S = 0.5  # the window waits this long past the goal's bound for the last version


@dataclass
class Setup:
    duration_s: float  # of the saves of a case, roughly: fewer saves for slower rhythms
    min_saves: int


FULL = Setup(duration_s=20.0, min_saves=4)
QUICK = Setup(duration_s=2.0, min_saves=1)


class Pacer:
    """A ``fault_hook`` that writes to persist at ``mbps`` MB/s, as Drive does.

    A copy starts at its first "write"; before each chunk the hook sleeps until the chunks
    before it would have been written at that rate, and before the "replace" that ends the copy
    until the last chunk would have been. Files are ``size`` bytes, so that the last chunk's
    length is known (the hook is told neither sizes nor offsets).
    """

    def __init__(self, mbps: float, size: int):
        self.rate = mbps * 1e6
        self.size = size
        self.written = 0  # bytes the mirror wrote to persist, thrown-away copies included
        self._copies: dict[str, list[float]] = {}  # path -> [start, bytes scheduled]
        self._lock = threading.Lock()

    def __call__(self, op: str, path: Path) -> None:
        key = str(path)
        with self._lock:
            copy = self._copies.get(key)
            if op == "open":
                self._copies.pop(key, None)
                return
            if op == "write":
                if copy is None or copy[1] >= self.size:
                    copy = self._copies[key] = [time.monotonic(), 0]
                wake = copy[0] + copy[1] / self.rate
                chunk = min(CHUNK_SIZE, max(self.size - int(copy[1]), 0))
                copy[1] += chunk
                self.written += chunk
            elif copy is not None:
                wake = copy[0] + copy[1] / self.rate
                del self._copies[key]
            else:
                return
        delay = wake - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class Writer:
    """Saves version k of a checkpoint of exactly ``size`` bytes the way ``torch.save`` does."""

    def __init__(self, path: Path, size: int):
        self.path = path
        probe = io.BytesIO()
        self._write(probe, 0, b"")
        self.padding = bytes(max(size - probe.tell(), 0))
        self.size = probe.tell() + len(self.padding)

    @staticmethod
    def _write(handle: BinaryIO, version: int, padding: bytes) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(VERSION_MEMBER, f"{version:012d}")  # fixed width: a fixed size
            archive.writestr(DATA_MEMBER, padding)

    def save(self, version: int) -> float:
        """Write ``version`` in place; returns its commit time (the file closed)."""
        with open(self.path, "wb") as handle:
            self._write(handle, version, self.padding)
        return time.monotonic()


def read_version(path: Path) -> int | None:
    """The version held at ``path``; None when there is no file. Raises zipfile.BadZipFile,
    KeyError or ValueError when the file is not a whole archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            return int(archive.read(VERSION_MEMBER))
    except FileNotFoundError:
        return None


class Watcher(threading.Thread):
    """Polls the checkpoint on persist every ``POLL_S`` and logs (time, version held)."""

    def __init__(self, path: Path):
        super().__init__(name="bench-watcher", daemon=True)
        self.path = path
        self.polls: list[tuple[float, int | None]] = []
        self.torn = 0
        self.latest = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.poll()
            self._done.wait(POLL_S)

    def poll(self) -> None:
        now = time.monotonic()
        try:
            version = read_version(self.path)
        except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError):
            self.torn += 1
            return
        self.polls.append((now, version))
        self.latest = max(self.latest, version or 0)

    def finish(self) -> None:
        self._done.set()
        self.join()
        self.poll()


def paced_copy(source: Path, target: Path, mbps: float) -> float:
    """One copy at persist's pace, as a mirror has to make it at least; returns seconds."""
    pacer = Pacer(mbps, source.stat().st_size)
    started = time.monotonic()
    pacer("open", target)
    temp = target.with_name(f".copy-{target.name}.tmp")
    with open(source, "rb") as reader, open(temp, "wb") as writer:
        while chunk := reader.read(CHUNK_SIZE):
            pacer("write", target)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    pacer("replace", target)
    os.replace(temp, target)
    return time.monotonic() - started


def mirror_kwargs(interval: float | None) -> dict[str, Any]:
    if interval is None:
        return {}
    if "interval" not in inspect.signature(CheckpointMirror).parameters:
        print("note: CheckpointMirror takes no interval any more; --mirror-interval ignored")
        return {}
    return {"interval": interval}


def mirror_defaults() -> str:
    """The constructor's timing defaults, for the header (whichever of them exist)."""
    params = inspect.signature(CheckpointMirror).parameters
    known = ("interval", "stable_for", "max_wait")
    shown = [f"{n}={params[n].default}" for n in known if n in params]
    return ", ".join(shown) or "no timing parameters"


def mirror_copy(source: Path, persist: Path, mbps: float, size: int) -> float:
    """The mirror's own single copy: ``stop(final=True)`` of a mirror never started."""
    mirror = CheckpointMirror(source.parent, persist, "*.pt", fault_hook=Pacer(mbps, size))
    started = time.monotonic()
    mirror.stop(final=True, timeout=3 * size / (mbps * 1e6) + 10)
    return time.monotonic() - started


@dataclass
class Case:
    size: int
    interval: float
    copy_s: float
    commits: list[float] = field(default_factory=list)
    polls: list[tuple[float, int | None]] = field(default_factory=list)
    end: float = 0.0  # when the window closed and stop was called
    torn: int = 0
    written: int = 0
    stop_s: float = 0.0
    after_stop: str = ""

    @property
    def fast(self) -> bool:
        return self.interval < self.copy_s

    @property
    def bound(self) -> float:
        return 2 * self.copy_s if self.fast else self.copy_s + LAG_SLACK_S

    def arrivals(self) -> dict[int, float]:
        first: dict[int, float] = {}
        for t, version in self.polls:
            if t <= self.end and version and version not in first:
                first[version] = t
        return first

    def lags(self) -> list[float]:
        return [t - self.commits[v - 1] for v, t in sorted(self.arrivals().items())]

    def staleness(self) -> float:
        worst = 0.0
        for t, version in self.polls:
            if t > self.end:
                break
            newer = (version or 0) + 1
            if newer <= len(self.commits) and self.commits[newer - 1] <= t:
                worst = max(worst, t - self.commits[newer - 1])
        return worst

    def went_back(self) -> int:
        held = [v or 0 for t, v in self.polls if t <= self.end]
        return sum(1 for a, b in zip(held, held[1:], strict=False) if b < a)


def run_case(
    root: Path,
    size: int,
    interval: float,
    copy_s: float,
    setup: Setup,
    mbps: float,
    mirror_interval: float | None,
    persist: Path,
) -> Case:
    case = Case(size=size, interval=interval, copy_s=copy_s)
    scratch = root / "scratch"
    scratch.mkdir(parents=True)
    writer = Writer(scratch / NAME, size)
    pacer = Pacer(mbps, writer.size)
    mirror = CheckpointMirror(
        scratch, persist, "*.pt", fault_hook=pacer, **mirror_kwargs(mirror_interval)
    )
    watcher = Watcher(persist / NAME)
    saves = max(setup.min_saves, math.floor(setup.duration_s / interval) + 1)
    watcher.start()
    mirror.start()
    try:
        started = time.monotonic()
        for k in range(1, saves + 1):
            delay = started + (k - 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            case.commits.append(writer.save(k))
        close_at = case.commits[-1] + max(interval, case.bound) + TAIL_MARGIN_S
        while time.monotonic() < close_at and watcher.latest < saves:
            time.sleep(POLL_S)
        case.end = time.monotonic()
        case.written = pacer.written
        # Bounded, so that the script ends even if the mirror never copies or hangs.
        mirror.stop(final=True, timeout=3 * copy_s + 10)
        case.stop_s = time.monotonic() - case.end
    finally:
        mirror.stop(final=False, timeout=1.0)  # no-op after the stop above; else an interrupt
        watcher.finish()
    case.polls, case.torn = watcher.polls, watcher.torn
    case.after_stop = check_whole(persist / NAME, saves)
    return case


def check_whole(path: Path, saves: int) -> str:
    """Whether the persisted file is whole (every CRC matches) and which version it holds."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            version = int(archive.read(VERSION_MEMBER))
    except FileNotFoundError:
        return "no file"
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as error:
        return f"TORN ({type(error).__name__})"
    if bad is not None:
        return f"TORN (bad CRC in {bad})"
    return f"v{version} of {saves}, whole"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def megabytes(size: int) -> str:
    return f"{size / 1e6:g} MB"


def row(case: Case) -> str:
    lags = case.lags()
    stale = case.staleness()
    ratio = stale / case.bound
    if case.fast:
        goal = f"stale <= 2 x copy = {seconds(case.bound)}"
    else:
        goal = f"lag <= copy + 1 s = {seconds(case.bound)}"
    verdict = "met" if ratio <= 1 else "NOT met"
    period = (case.commits[-1] - case.commits[0]) / max(len(case.commits) - 1, 1)
    every = f"{case.interval:g} s"
    if len(case.commits) > 1 and period > 1.1 * case.interval:
        every += f" (took {period:.2f} s)"
    problems = []
    if case.torn:
        problems.append(f"{case.torn} TORN reads")
    if case.went_back():
        problems.append(f"went back {case.went_back()} times")
    after = f"{case.after_stop} ({seconds(case.stop_s)})"
    if problems:
        after += "; " + ", ".join(problems)
    cells = [
        megabytes(case.size),
        every,
        seconds(case.copy_s),
        seconds(statistics.median(lags) if lags else None),
        seconds(max(lags) if lags else None),
        f"{len(lags)} of {len(case.commits)}",
        seconds(stale),
        f"{case.written / case.size:.1f}",
        goal,
        f"{ratio:.2f} {verdict}",
        after,
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| file | saves every | copy alone | lag median | lag max | reached persist | stale max "
    "| written (files) | goal | ratio | after stop |"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer saves: under a minute")
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 200], help="file sizes, MB")
    parser.add_argument(
        "--intervals", type=float, nargs="+", default=[0.3, 1, 10], help="seconds between saves"
    )
    parser.add_argument("--persist-mbps", type=float, default=100.0, help="persist's write speed")
    parser.add_argument(
        "--mirror-interval",
        type=float,
        help="pass this scan interval to CheckpointMirror (default: its own default)",
    )
    parser.add_argument("--dir", type=Path, help="folder to write in (default: system temp dir)")
    parser.add_argument(
        "--persist-dir",
        type=Path,
        help="folder for persist, e.g. on another device (default: beside scratch, in --dir)",
    )
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else FULL
    mbps = args.persist_mbps

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bench-mirror-lag-", dir=args.dir))
    persist_root = Path(tempfile.mkdtemp(prefix="bench-mirror-lag-persist-", dir=args.persist_dir))
    rows, references = [], []
    try:
        for number, size_mb in enumerate(args.sizes):
            size = round(size_mb * 1e6)
            base = root / f"baseline-{number}"
            source = base / "scratch" / NAME
            source.parent.mkdir(parents=True)
            Writer(source, size).save(0)
            with open(source, "rb+") as handle:  # its writeback must not slow the copy
                os.fsync(handle.fileno())
            copy_s = paced_copy(source, persist_root / NAME, mbps)
            own_s = mirror_copy(source, persist_root / "mirror", mbps, source.stat().st_size)
            references.append(f"{megabytes(size)}: {seconds(own_s)}")
            shutil.rmtree(base)
            empty(persist_root)
            for interval in args.intervals:
                folder = root / f"case-{number}-{interval:g}"
                case = run_case(
                    folder, size, interval, copy_s, setup, mbps, args.mirror_interval, persist_root
                )
                shutil.rmtree(folder, ignore_errors=True)
                empty(persist_root)
                rows.append(row(case))
                print(f"done: {megabytes(size)}, saves every {interval:g} s", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(persist_root, ignore_errors=True)

    print(
        f"\ncheckpoint mirror lag: persist paced at {mbps:g} MB/s in {CHUNK_SIZE >> 20} MiB "
        f"chunks, watched every {POLL_S * 1000:.0f} ms; CheckpointMirror defaults: "
        f"{mirror_defaults()}; scratch in {root.parent}, persist in {persist_root.parent}; "
        f"{os.cpu_count()} CPUs\n"
    )
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    print("\n".join(rows))
    print(
        "\nratio = stale max / the goal's bound (goal <= 1). The mirror's own single copy "
        f"(stop(final=True) of an idle mirror): {', '.join(references)}."
    )
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


def empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


if __name__ == "__main__":
    sys.exit(main())
