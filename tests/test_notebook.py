"""The notebook API in this process: prepare() then import the repo's code; run()."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import bootstrap
from bootstrap.report import SilentReporter, Step
from tests.conftest import Sandbox


@pytest.fixture
def kernel(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """This process as a notebook kernel would be: the sandbox's environment, clean sys.path."""
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield sandbox
    sys.modules.pop("train", None)


def test_prepare_sets_up_and_puts_the_repo_on_sys_path(kernel: Sandbox, demo: Path) -> None:
    env = bootstrap.prepare(demo)
    try:
        assert env.repo == kernel.scratch / "repos" / "demo"
        assert sys.path[0] == str(env.repo)
        assert (env.data[0] / "toy" / "train.csv").is_file()
        import train  # the repo's own module, found through sys.path

        assert Path(train.__file__).parent == env.repo
        model = train.nn.Linear(4, 1)
        env.checkpointer().save(0, model=model)
    finally:
        env.sync()  # the background mirror's last pass
    assert (env.run_dir / "checkpoints" / "step-000000000.pt").is_file()
    assert env.commit
    # what a notebook shows for `env`: the paths, not the whole resolved recipe
    assert f"repo={env.repo!r}" in repr(env) and "plan=" not in repr(env)
    assert len(repr(env)) < 1000


class Recorder(SilentReporter):
    """What each step reported: title -> ("skip" or "note", its text)."""

    def __init__(self) -> None:
        self.steps: dict[str, tuple[str, str]] = {}

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        yield RecordedStep(self.steps, title)


class RecordedStep:
    def __init__(self, steps: dict[str, tuple[str, str]], title: str) -> None:
        self.steps, self.title = steps, title

    def skip(self, reason: str) -> None:
        self.steps[self.title] = ("skip", reason)

    def note(self, detail: str) -> None:
        self.steps[self.title] = ("note", detail)

    def failed(self, detail: str) -> None:
        self.steps[self.title] = ("failed", detail)

    def stopped(self, detail: str) -> None:
        self.steps[self.title] = ("stopped", detail)


def test_prepare_twice_skips_what_is_done(kernel: Sandbox, demo: Path) -> None:
    first = Recorder()
    bootstrap.prepare(demo, mirror=False, reporter=first)
    assert first.steps["repo"][0] == first.steps["data[0]"][0] == "note", first.steps
    # Staged files keep the archive's mtimes: a second staging would show only as new inodes.
    staged = kernel.scratch / "datasets" / "demo" / "toy"
    inodes = {p.name: p.stat().st_ino for p in staged.iterdir()}
    again = Recorder()
    bootstrap.prepare(demo, mirror=False, reporter=again)
    assert again.steps["repo"] == ("skip", again.steps["repo"][1])
    assert again.steps["repo"][1].startswith("unchanged ")
    assert again.steps["data[0]"] == ("skip", f"already staged in {staged.parent}")
    assert {p.name: p.stat().st_ino for p in staged.iterdir()} == inodes


def mirror_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "checkpoint-mirror" and t.is_alive()}


def test_prepare_again_stops_the_earlier_mirror_of_the_same_run(
    kernel: Sandbox, demo: Path
) -> None:
    already = mirror_threads()  # a hung mirror another test left behind is not ours
    first = bootstrap.prepare(demo)
    first_thread = mirror_threads() - already
    other = bootstrap.prepare(demo, overrides={"name": "other"})  # another run: its own mirror
    try:
        other_thread = mirror_threads() - already - first_thread
        assert len(first_thread) == len(other_thread) == 1
        second = bootstrap.prepare(demo)  # the re-run cell
        try:
            assert first.mirror is None  # stopped, after its last pass, as sync() does
            assert not any(t.is_alive() for t in first_thread)
            now = mirror_threads() - already
            assert len(now) == 2 and other_thread < now and other.mirror is not None
            import train

            second.checkpointer().save(0, model=train.nn.Linear(4, 1))
        finally:
            second.sync()
    finally:
        first.sync()
        other.sync()
    assert (second.run_dir / "checkpoints" / "step-000000000.pt").is_file()
    assert mirror_threads() - already == set()


def test_run_trains_in_a_supervised_child(kernel: Sandbox, demo: Path) -> None:
    outcome = bootstrap.run(demo, overrides={"run.args[5]": "2"})
    assert outcome.exit_code == 0, outcome.message
    assert outcome.last_checkpoint is not None
    assert outcome.last_checkpoint.name == "epoch-001.pt"


def test_public_names_are_not_shadowed_by_submodules() -> None:
    # Importing a submodule sets an attribute of the package: a module named like a public
    # function (bootstrap/prepare.py once did) silently replaces bootstrap.prepare.
    import importlib
    import pkgutil

    import bootstrap

    for info in pkgutil.walk_packages(bootstrap.__path__, "bootstrap."):
        # not the training side (it imports torch) nor __main__ (it runs on import)
        if not info.name.startswith(("bootstrap.training.", "bootstrap.__main__")):
            importlib.import_module(info.name)
    for name in ("prepare", "run"):
        assert callable(getattr(bootstrap, name)), name


def test_only_an_unmounted_drive_makes_the_kernel_mount_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Every HostError once led to drive.mount(), "gpu: required" on a CPU runtime included.
    from bootstrap import notebook
    from bootstrap.errors import DriveNotMounted, HostError

    mounts: list[str] = []
    monkeypatch.setattr(notebook, "_mount_drive_in_kernel", lambda: mounts.append("m") or True)
    errors = [HostError("gpu: required, but this runtime has no GPU")]

    def make_plan(options: object) -> None:
        raise errors[0]

    monkeypatch.setattr(notebook, "make_plan", make_plan)
    with pytest.raises(HostError, match="no GPU"):
        notebook.prepare(tmp_path / "r.yaml")
    assert mounts == []
    errors[0] = DriveNotMounted("the recipe is on Google Drive, which is not mounted")
    with pytest.raises(DriveNotMounted):  # mounted, tried again, and (here) still failing
        notebook.prepare(tmp_path / "r.yaml")
    assert mounts == ["m"]
