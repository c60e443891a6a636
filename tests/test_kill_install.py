"""Kill the whole tool (SIGKILL to its process group) while it installs requirements, run again:
the install must be redone, never trusted half-done, and a finished one must not be redone.

The tool runs with the interpreter of a throwaway venv made here, as it runs with Colab's system
Python: it installs into that interpreter. The venv sees the tool and its dependencies through a
.pth file naming this test's site-packages, listed after its own, so what gets installed wins.
The requirements are wheels written by hand and committed to the training repo, found through
``--find-links`` in its requirements.txt with ``--no-index``: nothing is downloaded (UV_OFFLINE
and PIP_NO_INDEX make sure of it). Both installers are tried: uv, the tool's first choice, and
pip, which it falls back to when uv's binary cannot be found.

Each round commits a new version of the wheels, runs the tool and kills it while the installer
is at work: at a random moment after it starts (unpacking, resolving), once a random number of
the old version's files are gone (an upgrade's uninstall cut short), or once a random number of
the new version's files are in site-packages (a half-written package). Upgrades are killed both
ways. The tool's group is frozen with SIGSTOP first, so the test can check that the installer
really was still running when it died. Then what survives the kill:

- a new VM: scratch wiped and the venv made anew. On Colab the installed packages live in the
  system Python, which a new VM loses together with /content (scratch, the installers' caches,
  the install marker).
- the same VM: only the process died (Colab's Stop pressed twice ends in SIGKILL; a crashed
  kernel), so scratch, the marker folder and the half-written site-packages all survive.
- scratch lost, packages kept: not a Colab case (both live on the VM's disk) but a local one,
  with scratch on a tmpfs or in a cleaned /tmp while the interpreter's site-packages stays.

After each kill the rerun must install again (the marker was not trusted), end with every file
of every wheel in place at the new version, one .dist-info each, nothing of an older version
importable, and train with those packages. A last run with nothing changed must skip the
install and leave site-packages untouched.

One known limit: uv removes a package's .dist-info before its files, so when its uninstall of
the old version is cut short, the old files still there are named by no metadata and nothing
can find them to remove: the new version is complete, but a module only the old one had stays.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import site
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, Sandbox, git, group, write_recipe

pytestmark = pytest.mark.slow

PACKAGES = ("kt-alpha", "kt-beta", "kt-gamma", "kt-delta")
MODULES = 1200  # files a wheel: enough that installing them takes uv about a second
Payload = dict[str, bytes]  # path in site-packages -> bytes
TRAIN = """\
\"\"\"A training that needs the packages shipped with its repo (and no torch: it stays fast).\"\"\"
import argparse
from pathlib import Path

import {modules}

parser = argparse.ArgumentParser()
parser.add_argument("--logdir", type=Path, required=True)
parser.add_argument("--resume")
args = parser.parse_args()
print("requirements:", *(m.__version__ for m in ({modules},)), flush=True)
args.logdir.mkdir(parents=True, exist_ok=True)
(args.logdir / "epoch-000.pt").write_bytes(b"weights")
"""


def _module(dist: str) -> str:
    return dist.replace("-", "_")


@dataclass
class Venv:
    python: Path
    site: Path  # where the installer puts packages (purelib)


def _make_venv(path: Path, installer: str) -> Venv:
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    here = [p for p in site.getsitepackages() if os.path.isdir(p)]
    (purelib / "test_host.pth").write_text("\n".join([str(ROOT), *here]) + "\n")
    if installer == "pip":
        # The uv package without its binary, found before the host's: the tool falls back to pip.
        (purelib / "uv").mkdir()
        (purelib / "uv" / "__init__.py").write_text(
            "def find_uv_bin():\n    raise FileNotFoundError('no uv binary')\n"
        )
    return Venv(python, purelib)


def _write_wheel(folder: Path, dist: str, version: str) -> Payload:
    """A real wheel. Its modules sit in a folder named for the major version, so that a file of
    another version left behind, or one missing, shows."""
    mod, major = _module(dist), version.split(".")[0]
    payload: Payload = {
        f"{mod}/__init__.py": f"from . import v{major}\n__version__ = {version!r}\n".encode(),
        f"{mod}/v{major}/__init__.py": f"MODULES = {MODULES}\n".encode(),
    }
    for i in range(MODULES):
        payload[f"{mod}/v{major}/m{i:04d}.py"] = f"PAD = {os.urandom(128).hex()!r}\n".encode()
    info = f"{mod}-{version}.dist-info"
    files = {
        **payload,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(folder / f"{mod}-{version}-py3-none-any.whl", "w") as archive:
        for name, data in files.items():  # .dist-info last, as the wheel spec asks
            archive.writestr(name, data)
    return payload


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _release(repo: Path, version: str) -> dict[str, Payload]:
    """Commit wheels of ``version`` and a requirements.txt that asks for them."""
    wheels = repo / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    payloads = {dist: _write_wheel(wheels, dist, version) for dist in PACKAGES}
    (repo / "requirements.txt").write_text(
        "# torch is held at the installed version; the rest ships with the repo\n"
        "--no-index\n--find-links wheels\ntorch\n"
        + "".join(f"{dist}=={version}\n" for dist in PACKAGES),
        encoding="utf-8",
    )
    modules = ", ".join(map(_module, PACKAGES))
    (repo / "train.py").write_text(TRAIN.format(modules=modules), encoding="utf-8")
    if not (repo / ".git").is_dir():
        git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", ".", cwd=repo)
    git("commit", "-qm", f"requirements {version}", cwd=repo)
    return payloads


# -- the tool's process group, seen from /proc ---------------------------------------------


def _installer(tool: int) -> int | None:
    """The pid of the running ``uv pip install`` or ``pip install`` in the tool's group."""
    for pid, argv in group(tool):
        if b"pip" in argv and b"install" in argv:
            return pid
    return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _wait_for(proc: subprocess.Popen[str], found: Callable[[], object], what: str) -> None:
    end = time.monotonic() + 60
    while not found():
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(
                f"the tool ended (exit {proc.returncode}) before {what}:\n{output}"
            )
        if time.monotonic() > end:
            raise AssertionError(f"{what} never happened")
        time.sleep(0.001)


def _files_of(venv: Venv, major: str) -> int:
    count = 0
    for dist in PACKAGES:
        with contextlib.suppress(FileNotFoundError):
            count += len(os.listdir(venv.site / _module(dist) / f"v{major}"))
    return count


def _kill_during_install(
    proc: subprocess.Popen[str], venv: Venv, major: str, moment: str, rng: random.Random
) -> str:
    """SIGKILL the tool's group at ``moment`` of the install; say when it landed."""
    pid = proc.pid
    _wait_for(proc, lambda: _installer(pid), "the installer started")
    installer = _installer(pid)
    assert installer is not None
    total = len(PACKAGES) * (MODULES + 1)
    if moment == "starting":
        delay = rng.uniform(0, 0.2)
        time.sleep(delay)
        when = f"{delay:.3f} s after the installer started"
    elif moment == "removing":  # the version before, on its way out
        old, target = str(int(major) - 1), rng.randrange(total // 4, total)
        _wait_for(proc, lambda: _files_of(venv, old) <= target, f"v{old} down to {target} files")
        when = f"once v{old} was down to {target} files"
    else:
        target = rng.randrange(1, total * 3 // 4)
        _wait_for(proc, lambda: _files_of(venv, major) >= target, f"{target} files written")
        when = f"once {target} files of v{major} were written"
    os.killpg(pid, signal.SIGSTOP)  # frozen first, so that the check below is not a race
    running = _alive(installer)
    os.killpg(pid, signal.SIGKILL)
    proc.wait()
    assert running, f"the installer had already finished when the kill came ({when})"
    return when


# -- the machine and its runs ---------------------------------------------------------------


@dataclass
class Machine:
    sandbox: Sandbox
    venv: Venv
    venv_dir: Path
    installer: str
    recipe: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [str(self.venv.python), "-m", "bootstrap", str(self.recipe), *args]

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.sandbox.root,
            start_new_session=True,
        )

    def run(self, *args: str) -> str:
        done = subprocess.run(
            self.argv(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=180,
            cwd=self.sandbox.root,
        )
        assert done.returncode == 0, done.stdout
        assert "the training finished" in done.stdout, done.stdout
        return done.stdout

    def new_vm(self) -> None:
        self.sandbox.wipe_scratch()
        self.venv = _make_venv(self.venv_dir, self.installer)

    @property
    def marker(self) -> Path:
        return self.sandbox.scratch / ".bootstrap" / "deps" / "install.json"


@pytest.fixture(params=["uv", "pip"])
def machine(request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path) -> Machine:
    installer: str = request.param
    recipe = write_recipe(
        tmp_path / "deps.yaml",
        f"name: deps\nrepo: {{url: '{tmp_path / 'origin'}'}}\n"
        "run: {script: train.py, args: ['--logdir', '{ckpt}'], match: '*.pt',"
        " resume: ['--resume', '{checkpoint}']}\n",
    )
    env = {
        **sandbox.env,
        "UV_CACHE_DIR": str(sandbox.scratch / "uv-cache"),  # on the VM's disk, like ~/.cache
        "UV_OFFLINE": "1",
        "PIP_NO_INDEX": "1",
        "PIP_NO_CACHE_DIR": "1",
    }
    paths = env.get("PATH", "").split(os.pathsep)
    if installer == "uv":
        uv = shutil.which("uv") or shutil.which("uv", path=os.path.dirname(sys.executable))
        if uv is None:
            pytest.skip("uv is not installed")
        paths.insert(0, os.path.dirname(uv))
    else:
        paths = [p for p in paths if not shutil.which("uv", path=p)]
    env["PATH"] = os.pathsep.join(paths)
    venv_dir = tmp_path / "python"
    venv = _make_venv(venv_dir, installer)
    return Machine(sandbox, venv, venv_dir, installer, recipe, env)


def _assert_installed(
    machine: Machine, payloads: dict[str, Payload], version: str, orphaned: set[str]
) -> None:
    site_dir, major = machine.venv.site, version.split(".")[0]
    for dist, payload in payloads.items():
        mod = _module(dist)
        wrong = [p for p, data in payload.items() if not _same(site_dir / p, data)]
        assert not wrong, f"{dist} {version}: {len(wrong)} files missing or wrong, e.g. {wrong[0]}"
        infos = sorted(p.name for p in site_dir.glob(f"{mod}-*.dist-info"))
        assert infos == [f"{mod}-{version}.dist-info"], infos
        # Subpackages only: files are checked above, and pip's ~ folders cannot be imported.
        left = {p.name for p in (site_dir / mod).iterdir() if p.name.isidentifier()}
        left -= {"__pycache__", f"v{major}"}
        left -= orphaned  # see the known limit above
        assert not left, f"{dist}: files of other versions: {left}"
    check = (
        "import importlib, sys\nfrom importlib import metadata\n"
        "for dist in sys.argv[1:]:\n"
        "    mod = importlib.import_module(dist.replace('-', '_'))\n"
        "    print(dist, metadata.version(dist), mod.__version__)\n"
    )
    shown = subprocess.run(
        [str(machine.venv.python), "-c", check, *payloads],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert shown == [f"{dist} {version} {version}" for dist in payloads]


def _same(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def _files(site_dir: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for mod in map(_module, PACKAGES):
        for path in site_dir.glob(f"{mod}*/**/*"):
            if path.is_file() and "__pycache__" not in path.parts:
                stat = path.stat()
                found[str(path)] = (stat.st_ino, stat.st_mtime_ns)
    return found


def test_kill_during_install_never_trusts_a_half_done_install(
    machine: Machine, tmp_path: Path
) -> None:
    # A failure names its seed; KILL_INSTALL_SEED replays the same choices (not the same timing).
    seed = int(os.environ.get("KILL_INSTALL_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    upgrade = rng.sample(["removing", "writing"], 2)  # both, on the same VM or not
    rounds = [
        ("1.0", rng.choice(["starting", "writing"]), "new VM"),
        ("2.0", upgrade[0], "same VM"),
        ("3.0", upgrade[1], "scratch lost, packages kept"),
    ]
    orphaned: set[str] = set()
    for version, moment, survives in rounds:
        payloads = _release(tmp_path / "origin", version)
        # After the first round: new requirements for a finished run, which trains again.
        proc = machine.popen(*(["--fresh"] if version != "1.0" else []))
        when = _kill_during_install(proc, machine.venv, version[0], moment, rng)
        context = f"{machine.installer}, seed {seed}, {version} killed {when}, then {survives}"
        assert not machine.marker.exists(), f"a half-done install left its marker ({context})"
        if moment == "removing" and machine.installer == "uv":
            orphaned.add(f"v{int(version[0]) - 1}")  # for good: nothing knows these files
        if survives == "new VM":
            machine.new_vm()
        elif survives == "scratch lost, packages kept":
            machine.sandbox.wipe_scratch()
        out = machine.run()
        assert re.search(rf"✓ install\s+with {machine.installer}", out), f"{context}:\n{out}"
        assert f"requirements: {' '.join([version] * len(PACKAGES))}" in out, f"{context}:\n{out}"
        try:
            _assert_installed(machine, payloads, version, orphaned)
        except AssertionError as exc:
            raise AssertionError(f"{exc} ({context})") from None

    # Nothing changed: a finished install is trusted, and site-packages is left alone.
    before = _files(machine.venv.site)
    log = machine.sandbox.persist / "runs" / "deps" / "logs" / "install.log"
    logged = log.stat().st_mtime_ns
    out = machine.run("--fresh")
    assert re.search(r"– install\s+skipped: requirements unchanged", out), out
    assert _files(machine.venv.site) == before
    assert log.stat().st_mtime_ns == logged
    assert f"requirements: {' '.join(['3.0'] * len(PACKAGES))}" in out
