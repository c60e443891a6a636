"""Kill the whole tool (SIGKILL to its process group) inside a step, then run again: the run must
continue, never trusting what the killed step left half-done.

Each kill waits for a real sign that the step is under way: a ``git clone`` or ``git checkout``
process in the tool's group and the clone folder filling up, a ``tar -x`` in the group and the
staging work folder filling up, the staged files leaving the work folder for ``dest``, the tool
holding a file on persist open for writing. The group is then frozen with SIGSTOP, the test
checks that the step was still in progress (its process alive, its work folder there and not
finished, its result and its done-marker absent), and only then sends SIGKILL; so a kill that
came too late (or too early) fails the test instead of passing it for the wrong reason. How far
into the step the kill lands is random; a failure names its seed, and KILL_ANYWHERE_SEED replays
the same choices (not the same timing). The install step has its own test (test_kill_install).

What survives the kill:

- a new VM: scratch is wiped (on Colab everything on local disk is lost), persist is kept;
- the same VM: only the process died (Colab's Stop pressed twice ends in SIGKILL; a crashed
  kernel), so the half-done clone, work folder or half-merged ``dest`` is still on scratch. The
  re-run must find it and do the step again: the test checks it was there before the re-run,
  that the re-run says it cloned or staged (not that it skipped), and that the result is whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RECIPES, Sandbox, git, group, processes, write_recipe

pytestmark = pytest.mark.slow
SMALL_FILES = 6000  # in the data archive: extracting them takes about a second
PAD_FILES = 4000  # in the repo: checking them out takes about a second
NEW_VM, SAME_VM = "new VM", "same VM"


# -- the recipe: the demo training, its repo in git, its data padded ------------------------


def _demo_as_git_repo(tmp_path: Path, extra_files: int, last_too: bool = False) -> Path:
    """The demo training repo as a real git repo, padded so that a clone takes a moment.
    ``last_too``: the training also saves each epoch's state over ``last.pt``, in place."""
    repo = tmp_path / "origin"
    shutil.copytree(RECIPES / "demo" / "repo", repo)
    if last_too:
        train = repo / "train.py"
        save = 'torch.save(state, args.logdir / f"epoch-{epoch:03d}.pt")'
        text = train.read_text(encoding="utf-8")
        assert save in text, "the demo's train.py changed: update this test"
        also = f'{save}\n        torch.save(state, args.logdir / "last.pt")'
        train.write_text(text.replace(save, also), encoding="utf-8")
    if extra_files:
        pad = repo / "assets"
        pad.mkdir()
        for i in range(extra_files):
            (pad / f"f{i:05d}.txt").write_bytes(os.urandom(512))
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "demo", cwd=repo)
    return repo


def _data_archive(tmp_path: Path, small_files: int = SMALL_FILES) -> Path:
    """The demo's data plus many small files, so that staging takes a moment. Called again, it
    writes a new version of the same files (new bytes) over the archive."""
    source = tmp_path / "data-src" / "toy"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    with tarfile.open(RECIPES / "demo" / "data.tar.gz") as tar:
        tar.extractall(tmp_path / "data-src", filter="data")
    for i in range(small_files):
        (source / f"pad{i:05d}.bin").write_bytes(os.urandom(256))
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="toy")
    return archive


def _recipe(
    tmp_path: Path,
    *,
    epochs: int,
    epoch_seconds: float = 0.3,
    pad_files: int = 0,
    small_files: int = SMALL_FILES,
    big_state: int = 0,
    match: str = "*.pt",
) -> Path:
    repo = _demo_as_git_repo(tmp_path, pad_files, last_too=match == "last.pt")
    archive = _data_archive(tmp_path, small_files)
    env = f"\n  env: {{DEMO_PAD_BYTES: '{big_state}'}}" if big_state else ""
    # Only last.pt is a checkpoint then: the epoch files are left on scratch.
    exclude = "\n  exclude: ['epoch-*.pt']" if match == "last.pt" else ""
    # A file:// URL: git transfers a pack (a local path would only hardlink the objects).
    return write_recipe(
        tmp_path / "kill.yaml",
        f"name: demo\nrepo: {{url: '{repo.as_uri()}'}}\ninstall: {{requirements: []}}\n"
        f"data: [{{source: '{archive}', to: '{{scratch}}/datasets/demo'}}]\n"
        "run:\n  script: train.py\n"
        "  args: ['--data_root', '{scratch}/datasets/demo/toy', '--logdir', '{ckpt}',"
        f" '--epochs', '{epochs}', '--epoch_seconds', '{epoch_seconds}']\n"
        f"  match: '{match}'\n  resume: ['--resume', '{{checkpoint}}']{env}{exclude}\n",
    )


# -- the tool's process group, seen from /proc ---------------------------------------------


def _git(sub: bytes) -> Callable[[list[bytes]], bool]:
    return lambda argv: os.path.basename(argv[0]) == b"git" and sub in argv


def _count(folder: Path) -> int | None:
    """How many entries ``folder`` has; None when it is not there (yet, or any more)."""
    try:
        return len(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _sizes(folder: Path, pattern: str) -> list[int]:
    """The sizes of the files in ``folder`` that match ``pattern``."""
    found = []
    for path in folder.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            found.append(path.stat().st_size)
    return found


def _tar(argv: list[bytes]) -> bool:
    return os.path.basename(argv[0]) == b"tar" and b"-x" in argv


def _writing(pid: int, wanted: Callable[[Path], bool]) -> list[tuple[Path, int]]:
    """The files ``pid`` holds open for writing that ``wanted`` accepts, with their sizes."""
    found: list[tuple[Path, int]] = []
    try:
        fds = list(os.scandir(f"/proc/{pid}/fd"))
    except OSError:  # the process is gone
        return found
    for fd in fds:
        try:
            target = Path(os.readlink(fd.path))
            flags = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().split("flags:")[1]
            size = os.stat(fd.path).st_size  # of the open file, even if renamed since
        except (OSError, IndexError):
            continue
        if int(flags.split()[0], 8) & os.O_ACCMODE != os.O_RDONLY and wanted(target):
            found.append((target, size))
    return found


class Tool:
    """``python -m bootstrap`` in its own process group, its output read by a thread."""

    def __init__(self, sandbox: Sandbox, recipe: Path, env: dict[str, str] | None = None):
        self.proc = sandbox.popen(recipe, env=env)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, found: Callable[[], object], what: str, timeout: float = 120) -> None:
        """Poll ``found`` until it is true; fail if the tool ends or time runs out first."""
        end = time.monotonic() + timeout
        while not found():
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(
                    f"the tool ended (exit {self.proc.returncode}) before {what}:\n{self.output}"
                )
            if time.monotonic() > end:
                raise AssertionError(f"{what} never happened:\n{self.output}")
            time.sleep(0.002)

    def processes(self, which: Callable[[list[bytes]], bool]) -> list[int]:
        return [pid for pid, argv in group(self.pid) if which(argv)]

    def kill(self, check: Callable[[], str | None], *groups: int) -> None:
        """Freeze the tool's group (and ``groups``), run ``check``, then SIGKILL them all.
        ``check`` says what was wrong at that moment, or None; it is reported after the kill."""
        frozen = [self.pid, *groups]
        try:
            for group in frozen:
                os.killpg(group, signal.SIGSTOP)
            wrong = check()
        finally:
            for group in frozen:
                with contextlib.suppress(ProcessLookupError):  # a group that ended meanwhile
                    os.killpg(group, signal.SIGKILL)
            self.proc.wait()
            self._reader.join(5)
        assert wrong is None, f"at the kill: {wrong}\n{self.output}"

    def end(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def start(sandbox: Sandbox) -> Iterator[Callable[..., Tool]]:
    """Start the tool; whatever a test leaves running (a failed wait) is killed at its end."""
    started: list[Tool] = []

    def run(recipe: Path, env: dict[str, str] | None = None) -> Tool:
        started.append(Tool(sandbox, recipe, env))
        return started[-1]

    yield run
    for tool in started:
        tool.end()


@pytest.fixture
def rng() -> tuple[int, random.Random]:
    seed = int(os.environ.get("KILL_ANYWHERE_SEED") or random.randrange(2**32))
    return seed, random.Random(seed)


# -- after the kill -------------------------------------------------------------------------


def _head(repo: Path) -> str:
    return git("rev-parse", "HEAD", cwd=repo).strip()


def _same_tree(staged: Path, source: Path) -> str | None:
    """What differs between two folders of plain files (names and bytes), or None."""
    names = {p.name for p in staged.iterdir()} if staged.is_dir() else set()
    want = {p.name for p in source.iterdir()}
    if names != want:
        return f"{len(want - names)} files missing, {len(names - want)} extra in {staged}"
    wrong = [n for n in sorted(want) if (staged / n).read_bytes() != (source / n).read_bytes()]
    return f"{len(wrong)} files with other bytes, e.g. {wrong[0]}" if wrong else None


def _markers(sandbox: Sandbox) -> list[Path]:
    return sorted((sandbox.scratch / ".bootstrap" / "demo" / "data").glob("*.json"))


def _rerun_and_check(
    sandbox: Sandbox, recipe: Path, tmp_path: Path, epochs: int, survives: str = NEW_VM
) -> subprocess.CompletedProcess[str]:
    """Run again (on a new VM: with scratch wiped first) and check the run is whole."""
    if survives == NEW_VM:
        sandbox.wipe_scratch()
    result = sandbox.cli(recipe, timeout=240)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert f"epoch {epochs - 1}: loss" in result.stdout, said
    assert "training finished" in result.stdout, said
    # The repo: whole, at the commit asked for, and nothing of an earlier clone left beside it.
    clone = sandbox.scratch / "repos" / "demo"
    assert _head(clone) == _head(tmp_path / "origin"), said
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=clone)
    assert not dirty, f"the clone is not the commit's tree:\n{dirty[:2000]}"
    left = sorted(p.name for p in clone.parent.iterdir() if p.name != "demo")
    assert not left, f"left beside the clone: {left}\n{said}"
    # The data: every file, with the archive's bytes, marked staged, no work folder left.
    datasets = sandbox.scratch / "datasets"
    differs = _same_tree(datasets / "demo" / "toy", tmp_path / "data-src" / "toy")
    assert differs is None, f"{differs}\n{said}"
    left = sorted(p.name for p in datasets.iterdir() if p.name != "demo")
    assert not left, f"left beside the data: {left}\n{said}"
    assert len(_markers(sandbox)) == 1, f"not marked staged\n{said}"
    # The checkpoints on persist: every one whole; no temp file of a killed copy left there.
    import torch

    mirror = sandbox.persist / "runs/demo/checkpoints"
    for path in mirror.glob("*.pt"):
        torch.load(path, weights_only=True)
    temps = list(mirror.glob(".mirror-*"))
    assert not temps, f"temp files left on persist: {temps}"
    return result


def _started_epoch(output: str) -> int:
    found = re.search(r"starting at epoch (\d+)", output)
    return int(found.group(1)) if found else 0


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "survives"),
    [("transfer", SAME_VM), ("checkout", SAME_VM), ("checkout", NEW_VM)],
)
def test_kill_during_clone(
    sandbox: Sandbox,
    tmp_path: Path,
    start: Callable[..., Tool],
    rng: tuple[int, random.Random],
    moment: str,
    survives: str,
) -> None:
    seed, choose = rng
    recipe = _recipe(tmp_path, epochs=1, epoch_seconds=0, pad_files=PAD_FILES, small_files=100)
    repos = sandbox.scratch / "repos"
    partial, clone = repos / ".demo.cloning", repos / "demo"
    # The signs look at both folders: a clone written in place must be caught at the kill.
    tool = start(recipe)
    if moment == "transfer":  # git clone --no-checkout: the pack coming in
        step = _git(b"clone")
        target = choose.randrange(1, 1 << 20)  # of about 2.2 MB

        def received() -> int:
            packs = [folder / ".git" / "objects" / "pack" for folder in (partial, clone)]
            return max(size for pack in packs for size in [0, *_sizes(pack, "tmp_pack_*")])

        tool.wait_for(
            lambda: tool.processes(step) and received() >= target, f"{target} bytes received"
        )
        when = f"once git clone had received {target} bytes of the pack"
    else:  # git checkout in the clone folder, a random number of files written
        step = _git(b"checkout")
        target = choose.randrange(1, PAD_FILES // 2)

        def written() -> int:
            return max(_count(partial / "assets") or 0, _count(clone / "assets") or 0)

        tool.wait_for(
            lambda: tool.processes(step) and written() >= target, f"{target} files checked out"
        )
        when = f"once git checkout had written {target} files"

    def in_progress() -> str | None:
        if not tool.processes(step):
            return f"git {moment} had already ended"
        if not partial.is_dir() or clone.exists():
            return f"{clone} is there before the clone was done"
        if moment == "checkout" and written() >= PAD_FILES:
            return "every file was already checked out"
        if moment == "transfer" and not received():
            return "the pack was already received whole"
        return None

    tool.kill(in_progress)
    context = f"killed {when}, then {survives} (seed {seed})"
    assert partial.is_dir() and not clone.exists(), context
    result = _rerun_and_check(sandbox, recipe, tmp_path, epochs=1, survives=survives)
    # Cloned anew: the half clone was not taken for a clone, nor moved into place.
    assert re.search(r"✓ repo\s+cloned ", result.stderr), f"{context}\n{result.stderr}"


@pytest.mark.parametrize("survives", [SAME_VM, NEW_VM])
def test_kill_during_extraction(
    sandbox: Sandbox,
    tmp_path: Path,
    start: Callable[..., Tool],
    rng: tuple[int, random.Random],
    survives: str,
) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed: staging would not run it")
    seed, choose = rng
    recipe = _recipe(tmp_path, epochs=1, epoch_seconds=0)
    datasets = sandbox.scratch / "datasets"
    dest = datasets / "demo"

    def work_folders() -> list[Path]:
        return list(datasets.glob(".demo.staging-*")) if datasets.is_dir() else []

    def extracted() -> int:  # in dest too: a stage written in place must be caught at the kill
        found = [_count(work / "tree" / "toy") or 0 for work in work_folders()]
        return max([*found, _count(dest / "toy") or 0])

    tool = start(recipe)
    target = choose.randrange(1, SMALL_FILES // 2)
    tool.wait_for(
        lambda: tool.processes(_tar) and extracted() >= target, f"{target} files extracted"
    )
    when = f"once tar had extracted {target} of {SMALL_FILES} files"

    def in_progress() -> str | None:
        if not tool.processes(_tar):
            return "tar had already ended"
        if extracted() >= SMALL_FILES:
            return "every file was already extracted"
        if dest.exists():
            return f"{dest} is there before its files were all extracted"
        if _markers(sandbox):
            return f"a staging marker is there: {_markers(sandbox)}"
        return None

    tool.kill(in_progress)
    context = f"killed {when}, then {survives} (seed {seed})"
    assert work_folders() and not dest.exists() and not _markers(sandbox), context
    result = _rerun_and_check(sandbox, recipe, tmp_path, epochs=1, survives=survives)
    assert re.search(rf"✓ data\[0\]\s+{SMALL_FILES + 1} files into ", result.stderr), (
        f"{context}\n{result.stderr}"
    )


def test_kill_while_a_new_version_of_the_data_is_merged_in(
    sandbox: Sandbox, tmp_path: Path, start: Callable[..., Tool], rng: tuple[int, random.Random]
) -> None:
    """Same VM: the data changed since it was staged; the new files are moved into ``dest`` one
    by one over the old ones when the kill comes. ``dest`` then holds a mix of both versions, and
    must not be taken for staged."""
    seed, choose = rng
    recipe = _recipe(tmp_path, epochs=1, epoch_seconds=0)
    dest = sandbox.scratch / "datasets" / "demo" / "toy"
    first = start(recipe)  # the first version, staged and marked; killed when it is
    first.wait_for(lambda: _markers(sandbox), "the first version was staged")
    first.kill(lambda: None)
    assert _same_tree(dest, tmp_path / "data-src" / "toy") is None
    old = {p.name: p.read_bytes() for p in dest.iterdir()}

    _data_archive(tmp_path)  # a new version of every file
    datasets = dest.parent.parent

    def left_to_move() -> int | None:
        """Files of the new version still in the work folder; None before tar made it."""
        for work in datasets.glob(".demo.staging-*"):
            left = _count(work / "tree" / "toy")
            if left is not None:
                return left
        return None

    def extracted() -> bool:
        if tool.processes(_tar):  # first: once tar is gone, the count is the merge's
            return False
        return left_to_move() is not None

    tool = start(recipe)
    # The merge takes a few tenths of a second: poll nothing but the work folder meanwhile.
    tool.wait_for(extracted, "the new version extracted")
    target = choose.randrange(SMALL_FILES * 3 // 5, SMALL_FILES * 19 // 20)
    tool.wait_for(
        lambda: (left_to_move() or 0) <= target, f"the merge down to {target} files to move"
    )
    when = f"with at most {target} of {SMALL_FILES + 1} new files left to move into {dest}"

    def in_progress() -> str | None:
        left = left_to_move()
        if not left:
            return "the merge had already ended"
        if _markers(sandbox):
            return f"a staging marker is there: {_markers(sandbox)}"
        return None

    tool.kill(in_progress)
    context = f"killed {when} (seed {seed})"
    source = tmp_path / "data-src" / "toy"
    now = {p.name: p.read_bytes() for p in dest.iterdir()}
    moved = sum(now[n] == (source / n).read_bytes() != old[n] for n in old)
    kept = sum(now[n] == old[n] != (source / n).read_bytes() for n in old)
    assert moved and kept, f"{dest} is not half merged ({moved} new, {kept} old): {context}"
    assert not _markers(sandbox), context
    result = _rerun_and_check(sandbox, recipe, tmp_path, epochs=1, survives=SAME_VM)
    assert re.search(rf"✓ data\[0\]\s+{SMALL_FILES + 1} files into ", result.stderr), (
        f"{context}\n{result.stderr}"
    )


def test_kill_during_training_resumes_from_persist(
    sandbox: Sandbox, tmp_path: Path, start: Callable[..., Tool]
) -> None:
    recipe = _recipe(tmp_path, epochs=12)
    tool = start(recipe)
    mirror = sandbox.persist / "runs/demo/checkpoints"
    tool.wait_for(lambda: "epoch 3: loss" in tool.output, "epoch 3")
    tool.wait_for(lambda: (mirror / "epoch-002.pt").exists(), "epoch 2 mirrored")
    training = [
        pid
        for pid, ppid, _, argv in processes()
        if ppid == tool.pid and b"train.py" in b" ".join(argv)
    ]
    assert len(training) == 1, tool.output

    def in_progress() -> str | None:  # the training is frozen too: it has its own group
        if not group(training[0]):
            return "the training had already ended"
        if "training finished" in tool.output:
            return "the training had finished"
        return None

    tool.kill(in_progress, training[0])
    result = _rerun_and_check(sandbox, recipe, tmp_path, epochs=12)
    # work lost: at most what was not yet mirrored (a checkpoint interval and the mirror's lag)
    assert _started_epoch(result.stdout) >= 3, result.stdout


def test_kill_during_mirroring_never_publishes_a_torn_file(
    sandbox: Sandbox, tmp_path: Path, start: Callable[..., Tool], rng: tuple[int, random.Random]
) -> None:
    """The training saves its state over last.pt every epoch; the mirror replaces persist's copy
    each time. A kill in the middle of a copy must leave persist's previous copy as it was."""
    import torch  # before the kill: the check while the tool is frozen stays short

    seed, choose = rng
    chunk = 4 << 20  # the mirror's copy chunk (bootstrap.mirror.files.CHUNK_SIZE)
    recipe = _recipe(tmp_path, epochs=10, big_state=3 * chunk, small_files=100, match="last.pt")
    mirror = sandbox.persist / "runs/demo/checkpoints"
    last = mirror / "last.pt"
    # Every write of the mirror to persist (each 4 MiB chunk) takes 0.25 s longer: a slow Drive,
    # played by the tool's own fault hook. A copy takes a second: the kill can land inside it.
    tool = start(recipe, env={"BOOTSTRAP_FAULT_PERSIST": "SLOW:0.25"})

    def copying() -> list[tuple[Path, int]]:  # a copy of last.pt under way, wherever it goes
        return _writing(tool.pid, lambda p: p.parent == mirror and "last.pt" in p.name)

    def whole(path: Path) -> bool:
        try:
            torch.load(path, weights_only=True)
        except Exception:
            return False
        return True

    # Cheap to poll: the tool's copy puts last.pt in place whole (a torn one is caught below).
    tool.wait_for(last.exists, "a first copy of last.pt on persist", timeout=180)
    written = choose.randrange(2) * chunk  # then at least one more slow write to come
    tool.wait_for(
        lambda: any(size >= written for _, size in copying()),
        f"a new copy of last.pt, {written} bytes written",
        timeout=180,
    )
    when = f"once {written} bytes of a new copy of last.pt were written to persist"
    seen: dict[str, Any] = {}

    def in_progress() -> str | None:
        open_now = copying()
        if not open_now:
            return "the copy had already ended"
        seen["copy"] = open_now[0][0]
        if not last.is_file():
            return "persist's previous copy of last.pt is gone"
        torn = [p.name for p in mirror.glob("*.pt") if not whole(p)]
        if torn:
            return f"torn files on persist: {torn}"
        seen["good"] = hashlib.sha256(last.read_bytes()).hexdigest()
        return None

    tool.kill(in_progress)
    context = f"killed {when} (seed {seed})"
    # Right after the kill: the previous copy as it was, nothing torn under a checkpoint's name,
    # the mirror's manifest readable.
    assert [p.name for p in mirror.glob("*.pt")] == ["last.pt"], context
    assert whole(last), context
    assert hashlib.sha256(last.read_bytes()).hexdigest() == seen["good"], context
    manifest = mirror / ".bootstrap-mirror.json"
    if manifest.exists():
        json.loads(manifest.read_text())
    # The interrupted copy: a hidden temp file, left by the kill; a re-run removes it (below).
    assert seen["copy"].name.startswith(".mirror-last.pt.") and seen["copy"].exists(), context
    result = _rerun_and_check(sandbox, recipe, tmp_path, epochs=10)
    assert _started_epoch(result.stdout) >= 1, f"{context}\n{result.stdout}"
