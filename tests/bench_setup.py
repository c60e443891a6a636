"""Benchmark a new VM's setup: each step alone, their sum, and the tool's time to the first step.

Run: python tests/bench_setup.py [--quick] [--runs 3] [--dir /some/disk] [--archive-mbps 100]
                                 [--persist-mbps 100] [--net-mbps 20] [--keep-output]

Builds a new VM's sources that take time, as Colab's do. One local HTTP server, in a process of
its own, sends each file at a steady rate (per request, as each download is on its own):
  - repo.git: a bare git repo (git's dumb HTTP protocol) holding train.py, requirements.txt and
    a few MB of assets, at --net-mbps (GitHub);
  - wheels/: 20 generated pure-Python wheels of ~250 KB each, the package index, read by uv
    through the recipe's ``pip_args: [--no-index, --find-links, URL]``, at --net-mbps (PyPI);
  - data.tar.gz: ~300 MB (incompressible 1 MB files and 2000 small ones), at --archive-mbps.
And a persist folder holding the run's ~200 MB checkpoint as the tool mirrored it there: a first
run of the tool writes it and is stopped with Ctrl-C once it is mirrored. The restore reads it at
--persist-mbps (BOOTSTRAP_PERSIST_READ_MBPS, as slow as Drive).

Each run is a new VM: a fresh scratch, a fresh venv (``venv --without-pip``, with a .pth that
makes the tool and its dependencies importable, as Colab's preinstalled packages are) and uv
cache, a fresh copy of persist. It measures, after a sync, in an order that alternates run by run:
  - the steps alone, each in a subprocess of its own calling the library (sync_repo,
    install_requirements, stage_data, restore_checkpoints) and timed inside around the call, so
    without any interpreter start or import;
  - the tool: ``python -m bootstrap recipe.yaml --persist P --scratch S``, run by the fresh
    venv's interpreter (the CLI has no --python: the tool installs into, and trains with, the
    one that runs it), from its start to the training's first line on stdout ("FIRST STEP").
    That figure also holds what the steps alone leave out: the CLI's own start (imports,
    recipe, host), and the training's launch.
Also the CPU time (user + system) of the steps alone, summed, and of the whole tool run (from
ended child processes: interpreter starts, the tool's threads, git, uv, GNU tar, the training's
short run), to show that running the steps side by side does not cost more CPU on 2 vCPUs.
Prints one row per figure: the median over the runs, the min and max, and the goal. The ratios
are taken run by run (each run's tool time over the same run's steps alone). Each run's figures
go to stderr as it ends; with --keep-output, the tool's step lines too. Venvs, copies and
the first run of the tool are not timed. Everything lives in a temporary folder that is removed
at the end. Not collected by pytest (the name does not start with test_).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootstrap.mirror.faults import READ_ENV  # noqa: E402
from bootstrap.mirror.restore import load_manifest  # noqa: E402
from tests.bench_staging import paced_server  # noqa: E402

NAME = "bench"  # the recipe's name: persist/runs/bench holds the mirror
WHEELS = 20
MARKER = "FIRST STEP"

# One step alone, in a fresh interpreter (the new VM's, which the install targets, as the tool's
# does): argv[1] the step, argv[2] its arguments (JSON). Prints the seconds the call took, imports
# left out.
_STEP = r"""
import json, sys, time
from pathlib import Path
step, a = sys.argv[1], json.loads(sys.argv[2])
if step == "clone":
    from bootstrap.repo.checkout import sync_repo
    call = lambda: sync_repo(a["url"], Path(a["dest"]))
elif step == "install":
    from bootstrap.deps.install import install_requirements
    call = lambda: install_requirements(
        Path(a["repo"]), requirements="auto", pip_args=a["pip_args"], python=Path(a["python"]),
        state_dir=Path(a["state"]), log_path=Path(a["state"]) / "install.log")
elif step == "data":
    from bootstrap.data.stage import stage_data
    call = lambda: stage_data(a["url"], a["dest"], state_dir=a["state"])
else:
    from bootstrap.mirror.faults import read_pacer
    from bootstrap.mirror.restore import restore_checkpoints
    pace = read_pacer({a["env"]: a["mbps"]})
    call = lambda: restore_checkpoints(Path(a["mirror"]), Path(a["dest"]), pace=pace)
started = time.perf_counter()
call()
print(time.perf_counter() - started)
"""

# The training: imports its requirements, says its first step, and with --resume exits there.
# Without (the run that fills persist) it writes the checkpoint, says SAVED and trains on until
# it is stopped.
_TRAIN = f"""\
import importlib, os, sys, time
for i in range({WHEELS}):
    importlib.import_module(f"bench_pkg_{{i:02d}}")
print("{MARKER}", time.time(), flush=True)
if "--resume" in sys.argv:
    sys.exit(0)
folder, size = sys.argv[sys.argv.index("--ckpt") + 1], int(sys.argv[sys.argv.index("--mb") + 1])
os.makedirs(folder, exist_ok=True)
partial = os.path.join(folder, ".ckpt.pt.partial")  # hidden: the mirror leaves it alone
with open(partial, "wb") as out:
    for _ in range(size):
        out.write(os.urandom(1 << 20))
os.replace(partial, os.path.join(folder, "ckpt.pt"))
print("SAVED", flush=True)
while True:
    time.sleep(1)
"""


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _make_repo(src: Path, bare: Path, assets_mb: int) -> None:
    src.mkdir(parents=True)
    (src / "train.py").write_text(_TRAIN)
    pins = "".join(f"bench-pkg-{i:02d}==1.0\n" for i in range(WHEELS))
    (src / "requirements.txt").write_text(pins)
    (src / "assets").mkdir()
    for i in range(assets_mb):
        (src / "assets" / f"{i}.bin").write_bytes(os.urandom(1 << 20))
    _git("init", "-q", "-b", "main", cwd=src)
    _git("add", ".", cwd=src)
    _git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench",
         cwd=src)  # fmt: skip
    _git("clone", "-q", "--bare", str(src), str(bare), cwd=src.parent)
    _git("repack", "-a", "-d", "-q", cwd=bare)
    _git("update-server-info", cwd=bare)  # what git's dumb HTTP protocol reads


def _make_wheel(folder: Path, index: int, size: int) -> None:
    name, version = f"bench_pkg_{index:02d}", "1.0"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{name}/blob.bin": os.urandom(size),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: bench-pkg-{index:02d}\n"
        f"Version: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)


def _make_archive(tree: Path, archive: Path, total_mb: int) -> None:
    rng = random.Random(1)
    small = 0
    for i in range(2000):  # 1-9 KB each, ~10 MB
        folder = tree / "small" / str(i // 200)
        folder.mkdir(parents=True, exist_ok=True)
        data = os.urandom(rng.randint(1024, 9 * 1024))
        (folder / f"{i}.bin").write_bytes(data)
        small += len(data)
    (tree / "big").mkdir()
    for i in range(max(1, total_mb - small // 10**6)):
        (tree / "big" / f"{i}.bin").write_bytes(os.urandom(1 << 20))
    with open(archive, "wb") as out:
        tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(tree), "."], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-1"], stdin=tar.stdout, stdout=out, check=True)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait():
            raise SystemExit("tar failed")
    shutil.rmtree(tree)


def _venv(folder: Path) -> Path:
    """A fresh venv (not timed) whose site-packages sees the tool and its dependencies."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    lines = [str(ROOT), sysconfig.get_path("purelib")]
    (Path(purelib) / "bench-tool.pth").write_text("\n".join(lines) + "\n")
    return python


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "BOOTSTRAP_COLAB": "0", "BOOTSTRAP_GPU": "0", **extra}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # As installed by pip, whose install writes .pyc files (see bench_overhead.py).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _settle() -> None:
    subprocess.run(["sync"], check=False)
    time.sleep(0.5)


def _recipe(path: Path, url: str, ckpt_mb: int) -> None:
    wheels = f"{url}/wheels/"
    path.write_text(
        textwrap.dedent(f"""\
            name: {NAME}
            repo:
              url: {url}/repo.git
            install:
              requirements: auto
              pip_args: ["--no-index", "--find-links", "{wheels}"]
            data:
              - source: {url}/data.tar.gz
                to: "{{scratch}}/datasets/d"
            run:
              script: train.py
              args: ["--ckpt", "{{ckpt}}", "--mb", "{ckpt_mb}"]
              checkpoints: "{{ckpt}}"
              match: "ckpt.pt"
              resume: ["--resume", "{{checkpoint}}"]
              restarts: 0
            """)
    )


class _Tool:
    """``python -m bootstrap`` on a new VM, its stdout read line by line."""

    def __init__(
        self, python: Path, recipe: Path, persist: Path, scratch: Path, env: dict[str, str]
    ):
        scratch.parent.mkdir(parents=True, exist_ok=True)
        self.log = scratch.parent / "tool-stderr.log"
        argv = [str(python), "-m", "bootstrap", str(recipe), "--persist", str(persist),
                "--scratch", str(scratch)]  # fmt: skip
        self.lines: list[str] = []
        self.started = time.perf_counter()
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=recipe.parent, text=True
            )

    def until(self, marker: str) -> float:
        """Seconds from the start to the first stdout line holding ``marker``."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if marker in line:
                return time.perf_counter() - self.started
        self.fail(f"{marker!r} never printed")
        raise AssertionError  # unreachable

    def finish(self, timeout: float = 120) -> int:
        assert self.proc.stdout is not None
        self.lines += self.proc.stdout.readlines()
        return self.proc.wait(timeout=timeout)

    def fail(self, why: str) -> None:
        self.proc.kill()
        self.proc.wait()
        out = "".join(self.lines[-20:]) + self.log.read_text()[-3000:]
        raise SystemExit(f"the tool: {why} (exit {self.proc.returncode})\n{out}")


def _fill_persist(base: Path, python: Path, recipe: Path, ckpt_mb: int) -> Path:
    """Run the tool once on an empty persist, until its checkpoint is mirrored, then Ctrl-C:
    persist as a VM that died mid-training left it. Returns the persist folder."""
    persist, scratch = base / "persist", base / "prime" / "scratch"
    env = _env(UV_CACHE_DIR=str(base / "prime" / "uv-cache"))
    tool = _Tool(python, recipe, persist, scratch, env)
    tool.until("SAVED")
    mirror, deadline = persist / "runs" / NAME / "checkpoints", time.monotonic() + 300
    while load_manifest(mirror).get("ckpt.pt", {}).get("size") != ckpt_mb << 20:
        if time.monotonic() > deadline or tool.proc.poll() is not None:
            tool.fail("the checkpoint was not mirrored")
        time.sleep(0.2)
    tool.proc.send_signal(signal.SIGINT)
    code = tool.finish()
    if code != 130:
        tool.fail(f"Ctrl-C after the mirror ended with exit {code}, not 130")
    shutil.rmtree(base / "prime")
    return persist


def _cpu() -> float:
    """CPU seconds (user + system) of this process's children that have ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _alone(python: Path, step: str, args: dict[str, object], env: dict[str, str]) -> float:
    global _STEPS_CPU
    before = _cpu()
    done = subprocess.run(
        [str(python), "-c", _STEP, step, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
    )
    _STEPS_CPU += _cpu() - before
    if done.returncode:
        raise SystemExit(f"{step} alone failed:\n{done.stdout}{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


_STEPS_CPU = 0.0  # summed by _alone: the CPU the steps alone took, interpreter starts included


def _steps_alone(work: Path, url: str, persist: Path, mbps: str) -> dict[str, float]:
    python = _venv(work / "venv")
    env = _env(UV_CACHE_DIR=str(work / "uv-cache"))
    clone = work / "repo"
    wheels = ["--no-index", "--find-links", f"{url}/wheels/"]
    steps: list[tuple[str, dict[str, object]]] = [
        ("clone", {"url": f"{url}/repo.git", "dest": str(clone)}),
        ("install", {"repo": str(clone), "pip_args": wheels, "python": str(python),
                     "state": str(work / "install-state")}),
        ("data", {"url": f"{url}/data.tar.gz", "dest": str(work / "data"),
                  "state": str(work / "data-state")}),
        ("restore", {"mirror": str(persist / "runs" / NAME / "checkpoints"),
                     "dest": str(work / "ckpt"), "env": READ_ENV, "mbps": mbps}),
    ]  # fmt: skip
    times = {}
    for step, args in steps:
        _settle()
        times[step] = _alone(python, step, args, env)
    return times


def _the_tool(
    work: Path, template: Path, recipe: Path, mbps: str
) -> tuple[float, float, list[str]]:
    """The tool's seconds to the first step, how long after the training printed that line the
    bench read it, and the tool's step lines."""
    python = _venv(work / "venv")
    persist = work / "persist"
    shutil.copytree(template, persist)  # copy2: the mtimes the manifest records stay
    env = _env(UV_CACHE_DIR=str(work / "uv-cache"), **{READ_ENV: mbps})
    _settle()
    before = _cpu()
    tool = _Tool(python, recipe, persist, work / "scratch", env)
    seconds = tool.until(MARKER)
    lag = time.time() - float(tool.lines[-1].split()[-1])
    code = tool.finish()
    if code != 0:
        tool.fail(f"exit {code} after the first step")
    global _TOOL_CPU
    _TOOL_CPU = _cpu() - before
    steps = [line.strip() for line in tool.log.read_text().splitlines() if line.strip()]
    return seconds, lag, steps


_TOOL_CPU = 0.0  # set by _the_tool: the CPU of the whole tool run (its training's too)


def _row(label: str, values: list[float], goal: str = "", digits: int = 2) -> str:
    med, low, high = statistics.median(values), min(values), max(values)
    return f"{label:<30} {med:>8.{digits}f} {low:>8.{digits}f} {high:>8.{digits}f} {goal:>8}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 MB archive, 40 MB checkpoint")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to make the temporary folder")
    parser.add_argument("--archive-mbps", type=float, default=100.0)
    parser.add_argument("--persist-mbps", type=float, default=100.0)
    parser.add_argument("--net-mbps", type=float, default=20.0, help="for the repo and wheels")
    parser.add_argument("--keep-output", action="store_true", help="print the tool's step lines")
    args = parser.parse_args()
    archive_mb, ckpt_mb = (60, 40) if args.quick else (300, 200)
    mbps = f"{args.persist_mbps:g}"
    base = Path(tempfile.mkdtemp(prefix="bench-setup-", dir=args.dir))
    server = None
    try:
        served = base / "served"
        (served / "wheels").mkdir(parents=True)
        _make_repo(base / "src", served / "repo.git", assets_mb=4)
        for i in range(WHEELS):
            _make_wheel(served / "wheels", i, 250 * 1024)
        _make_archive(base / "tree", served / "data.tar.gz", archive_mb)
        server, url = paced_server(served, args.net_mbps, **{".tar.gz": args.archive_mbps})
        recipe = base / "recipe.yaml"
        _recipe(recipe, url, ckpt_mb)
        print(f"filling persist with a {ckpt_mb} MB checkpoint...", file=sys.stderr, flush=True)
        template = _fill_persist(base, _venv(base / "prime" / "venv"), recipe, ckpt_mb)
        figures: dict[str, list[float]] = {}
        for run in range(args.runs):
            work = base / f"run-{run}"
            alone: dict[str, float] = {}
            tool: tuple[float, float, list[str]] = (0.0, 0.0, [])
            first = "alone" if run % 2 == 0 else "tool"
            global _STEPS_CPU
            _STEPS_CPU = 0.0
            for way in ("alone", "tool") if first == "alone" else ("tool", "alone"):
                if way == "alone":
                    alone = _steps_alone(work / "alone", url, template, mbps)
                else:
                    tool = _the_tool(work / "tool", template, recipe, mbps)
            seconds, lag, steps = tool
            total, slowest = sum(alone.values()), max(alone.values())
            run_figures = {
                **alone, "chain": alone["clone"] + alone["install"], "sum": total,
                "slowest": slowest, "tool": seconds, "tool/slowest": seconds / slowest,
                "tool/sum": seconds / total, "cpu alone": _STEPS_CPU, "cpu tool": _TOOL_CPU,
            }  # fmt: skip
            for key, value in run_figures.items():
                figures.setdefault(key, []).append(value)
            shown = " ".join(f"{k} {v:.2f}" for k, v in run_figures.items())
            print(f"run {run} ({first} first): {shown}", file=sys.stderr, flush=True)
            if args.keep_output:
                lines = [*steps, f"(first line read {lag * 1000:.0f} ms after it was printed)"]
                print("  " + "\n  ".join(lines), file=sys.stderr, flush=True)
            _settle()
            shutil.rmtree(work)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(base, ignore_errors=True)
    size = f"{archive_mb} MB archive at {args.archive_mbps:g} MB/s, {ckpt_mb} MB checkpoint at "
    print(f"{size}{mbps} MB/s, repo and wheels at {args.net_mbps:g} MB/s; {args.runs} runs")
    print(f"{'row':<30} {'median':>8} {'min':>8} {'max':>8} {'goal':>8}")
    rows = [
        ("clone alone (s)", "clone", ""),
        ("install alone (s)", "install", ""),
        ("data alone (s)", "data", ""),
        ("restore alone (s)", "restore", ""),
        ("clone + install, chained (s)", "chain", ""),
        ("sequential sum (s)", "sum", ""),
        ("slowest alone (s)", "slowest", ""),
        ("the tool to first step (s)", "tool", ""),
        ("tool / slowest", "tool/slowest", "<= 1.15"),
        ("tool / sum", "tool/sum", "<= 0.6"),
        ("CPU s, the steps alone", "cpu alone", ""),
        ("CPU s, the tool", "cpu tool", ""),
    ]
    for label, key, goal in rows:
        print(_row(label, figures[key], goal, digits=3 if "/" in key else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
