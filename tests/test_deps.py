"""install_requirements against real throwaway venvs, offline, with wheels written by hand.

The target venv gets a .pth file naming this venv's site-packages: that is how it "sees" torch
and setuptools as preinstalled, like Colab's system packages, while everything the tests install
lands in the target venv only. Wheels are zip files written here (no build tool), served with
--no-index --find-links.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from bootstrap.deps.install import PENDING, InstallResult, install_requirements
from bootstrap.deps.requirements import asks_any_version, canonical_name, logical_lines, name_of
from bootstrap.errors import InstallError

STATUS = (
    "import json, sys\nfrom importlib import metadata\nout = {}\nfor n in sys.argv[1:]:\n"
    "    try:\n        out[n] = metadata.version(n)\n    except metadata.PackageNotFoundError:\n"
    "        out[n] = None\nprint(json.dumps(out))\n"
)


def make_wheel(folder: Path, name: str, version: str, requires: Sequence[str] = ()) -> Path:
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


class Target:
    def __init__(self, root: Path, wheels: Path):
        self.root, self.wheels = root, wheels
        self.python = root / "venv" / "bin" / "python"
        self.state = root / "state"
        self.log = root / "logs" / "install.log"

    def versions(self, *names: str) -> dict[str, str | None]:
        done = subprocess.run(
            [str(self.python), "-c", STATUS, *names], capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout)

    def install(self, repo: Path, **kwargs: object) -> InstallResult:
        kwargs.setdefault("requirements", "auto")
        kwargs.setdefault("installer", "uv")
        args = ["--no-index", "--find-links", str(self.wheels)]
        kwargs["pip_args"] = [*args, *kwargs.get("pip_args", ())]  # type: ignore[misc]
        return install_requirements(
            repo,
            python=self.python,
            state_dir=self.state,
            log_path=self.log,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture(autouse=True)
def _uv_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "uv-cache"))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")


@pytest.fixture
def target(tmp_path: Path) -> Target:
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
    )
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "host.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheels = tmp_path / "wheels"
    for name, version, requires in [
        ("alpha", "1.0", ()),
        ("beta", "1.0", ()),
        ("beta", "2.0", ()),
        ("held_pkg", "1.0", ()),
        ("held_pkg", "2.0", ()),
        ("needsheld", "1.0", ("held-pkg>=1.0",)),
    ]:
        make_wheel(wheels, name, version, requires)
    return Target(tmp_path, wheels)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class Bars:
    def __init__(self) -> None:
        self.descriptions: list[str] = []
        self.closed = 0

    def __call__(self, description: str, total: int | None = None, unit: str = "B") -> Bars:
        return self

    def advance(self, amount: int) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def set_description(self, text: str) -> None:
        self.descriptions.append(text)

    def close(self) -> None:
        self.closed += 1


def test_auto_prefers_requirements_txt_and_reports_progress(target: Target) -> None:
    repo = target.root / "my repo"
    req = write(repo / "requirements.txt", "alpha==1.0  # the only one\n")
    write(repo / "pyproject.toml", '[project]\nname = "notme"\nversion = "1"\n')
    bars = Bars()
    result = target.install(repo, progress=bars)
    assert (result.skipped, result.installer, result.requirement_files) == (False, "uv", [req])
    assert target.versions("alpha", "notme") == {"alpha": "1.0", "notme": None}
    assert any("alpha" in text for text in bars.descriptions) and bars.closed == 1
    assert "alpha" in target.log.read_text()


def test_auto_installs_the_repo_as_an_editable_package(target: Target) -> None:
    repo = target.root / "repo"
    write(
        repo / "pyproject.toml",
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "mypkg"\nversion = "0.3"\ndependencies = ["alpha"]\n',
    )
    write(repo / "mypkg" / "__init__.py", "")
    result = target.install(repo, pip_args=["--no-build-isolation"])
    assert result.requirement_files == [repo / "pyproject.toml"]
    assert target.versions("mypkg", "alpha") == {"mypkg": "0.3", "alpha": "1.0"}


def test_nothing_to_install(target: Target) -> None:
    repo = target.root / "repo"
    write(repo / "pyproject.toml", "[tool.black]\nline-length = 100\n")
    result = target.install(repo)
    assert (result.installer, result.requirement_files, result.held) == ("none", [], [])
    assert not target.log.exists()


def test_explicit_list_with_includes_constraints_options_and_continuations(
    target: Target,
) -> None:
    repo = target.root / "repo"
    write(
        repo / "reqs" / "base.txt",
        f"# base\n--find-links {os.path.relpath(target.wheels, repo / 'reqs')}\n"
        "-r more/common.txt\n-c pins.txt\nbeta \\\n  >=1.0\n",
    )
    write(repo / "reqs" / "more" / "common.txt", "alpha  # from an include\n")
    write(repo / "reqs" / "pins.txt", "beta==1.0\n")
    result = install_requirements(
        repo,
        requirements=["reqs/base.txt"],
        python=target.python,
        state_dir=target.state,
        log_path=target.log,
        pip_args=["--no-index"],
        installer="uv",
    )
    names = [p.relative_to(repo).as_posix() for p in result.requirement_files]
    assert names == ["reqs/base.txt", "reqs/more/common.txt", "reqs/pins.txt"]
    assert target.versions("alpha", "beta") == {"alpha": "1.0", "beta": "1.0"}


def test_a_listed_file_that_is_missing_names_the_recipe_key(target: Target) -> None:
    repo = target.root / "repo"
    write(repo / "requirements.txt", "alpha\n")
    with pytest.raises(InstallError) as caught:
        target.install(repo, requirements=["requirements.txt", "dev.txt"])
    assert "install.requirements" in caught.value.message and "dev.txt" in caught.value.message


def test_a_missing_include_names_the_file_and_line(target: Target) -> None:
    repo = target.root / "repo"
    write(repo / "requirements.txt", "alpha\n\n-r gone.txt\n")
    with pytest.raises(InstallError, match=r"requirements\.txt:3: -r gone\.txt"):
        target.install(repo)


def test_a_kept_package_is_held_for_requests_and_dependencies(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    repo = target.root / "repo"
    repo.mkdir()
    target.install(repo, requirements=[], packages=["held_pkg==1.0"], keep=[])
    write(repo / "requirements.txt", "Held-Pkg[extra]==2.0 ; python_version >= '3'\nneedsheld\n")
    with caplog.at_level(logging.WARNING, logger="bootstrap.deps.install"):
        # --upgrade would take held_pkg to 2.0 through needsheld's dependency, were it not held
        result = target.install(repo, keep=["held.pkg"], pip_args=["--upgrade"])
    asked = "Held-Pkg[extra]==2.0 ; python_version >= '3'"
    assert result.held == [("held.pkg", "1.0", asked)]
    assert f"held held.pkg at 1.0 (requirements.txt asked for {asked})" in caplog.text
    assert target.versions("held_pkg", "needsheld") == {"held_pkg": "1.0", "needsheld": "1.0"}


def test_an_unheld_package_is_upgraded(target: Target) -> None:
    repo = target.root / "repo"
    repo.mkdir()
    target.install(repo, requirements=[], packages=["held_pkg==1.0"], keep=[])
    write(repo / "requirements.txt", "held_pkg==2.0\n")
    assert target.install(repo, keep=["torch"]).held == []
    assert target.versions("held_pkg") == {"held_pkg": "2.0"}


def test_a_kept_package_that_is_not_installed_is_named_before_installing(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    repo = target.root / "repo"
    write(repo / "requirements.txt", "alpha\nheld_pkg>=1.0\n")
    with caplog.at_level(logging.WARNING, logger="bootstrap.deps.install"):
        result = target.install(repo, keep=["held.pkg", "torchaudio"])
    assert result.held == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # one warning, for the kept package the requirements name; none for torchaudio
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("requirements.txt:2 asks for held_pkg>=1.0, which install.keep")
    assert f"not installed in {target.python}" in warnings[0]
    assert target.versions("held_pkg") == {"held_pkg": "2.0"}


def test_preinstalled_torch_is_held(target: Target) -> None:
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torch is not installed in the test venv")
    repo = target.root / "repo"
    write(repo / "requirements.txt", "torch==1.13.1\nalpha\n")
    result = target.install(repo)
    assert result.held == [("torch", torch, "torch==1.13.1")]
    assert target.versions("torch", "alpha") == {"torch": torch, "alpha": "1.0"}


def test_the_running_interpreter_is_queried_in_process(tmp_path: Path) -> None:
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torch is not installed in the test venv")
    repo = tmp_path / "repo"
    write(repo / "requirements.txt", "torch>=99\n")
    # Only held requests: no installer runs, so this venv is not touched.
    result = install_requirements(
        repo, requirements="auto", state_dir=tmp_path / "s", log_path=tmp_path / "l.log"
    )
    assert result.held == [("torch", torch, "torch>=99")] and not (tmp_path / "l.log").exists()


def test_the_in_process_scan_agrees_with_importlib_metadata() -> None:
    """The warm path reads versions from the .dist-info folders itself; it must see what
    importlib.metadata sees, for every package of this venv (the first on sys.path wins)."""
    from bootstrap.deps.install import _versions_here

    expected: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        expected.setdefault(canonical_name(dist.metadata["Name"] or ""), dist.version)
    assert len(expected) > 10
    assert _versions_here(set(expected)) == expected
    assert _versions_here({"no-such-package-here"}) == {}


def test_second_run_skips_and_a_change_runs_again(target: Target) -> None:
    repo = target.root / "repo"
    write(repo / "requirements.txt", "alpha\n")
    assert not target.install(repo).skipped
    stamp = target.log.stat().st_mtime_ns
    again = target.install(repo)
    assert again.skipped and target.log.stat().st_mtime_ns == stamp
    assert not target.install(repo, packages=["beta==1.0"]).skipped
    write(repo / "requirements.txt", "alpha\nbeta==2.0\n")
    assert not target.install(repo).skipped
    assert target.versions("beta") == {"beta": "2.0"}
    assert target.install(repo).skipped


def _site(target: Target) -> Path:
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return target.root / "venv" / "lib" / version / "site-packages"


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_relative_find_links_in_a_requirements_file_is_the_repos_folder(
    target: Target, installer: str
) -> None:
    """The file is filtered into a copy on scratch; its relative paths still mean the repo's."""
    repo = target.root / "repo"
    make_wheel(repo / "vendor", "vendored", "1.0")
    write(repo / "requirements.txt", "--no-index\n--find-links vendor\nvendored\n")
    install_requirements(
        repo,
        requirements="auto",
        installer=installer,  # type: ignore[arg-type]
        python=target.python,
        state_dir=target.state,
        log_path=target.log,
    )
    assert target.versions("vendored") == {"vendored": "1.0"}


def test_a_package_a_killed_install_left_half_written_is_reinstalled(target: Target) -> None:
    """uv links a package's .dist-info before its files and writes INSTALLER last: a
    .dist-info without INSTALLER is a half-written package, whatever its METADATA says."""
    repo = target.root / "repo"
    write(repo / "requirements.txt", "alpha\n")
    target.install(repo)
    site = _site(target)
    (site / "alpha-1.0.dist-info" / "INSTALLER").unlink()
    # The kill came before its files were linked (unlinked, not emptied: uv hardlinks files
    # from its cache, and writing through the link would change the cached wheel's file too).
    (site / "alpha" / "__init__.py").unlink()
    write(repo / "requirements.txt", "alpha\nbeta==1.0\n")
    target.install(repo)
    assert (site / "alpha" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    assert (site / "alpha-1.0.dist-info" / "INSTALLER").exists()


def test_a_package_whose_record_a_kill_cut_short_is_reinstalled(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv writes INSTALLER, then RECORD anew, 8 KiB at a time: killed in between, a package
    looks installed (METADATA, INSTALLER, every file) but its next uninstall reads a short
    RECORD and leaves its .dist-info beside the new version's. Here uv runs whole, then the
    kill cuts beta's RECORD after its first line (a cut at a line end: nothing in the file
    says it is short) before the process dies by SIGKILL, as a killed tool's installer does."""
    from uv import find_uv_bin  # a test dependency: the tool finds it the same way

    real_uv = shutil.which("uv") or find_uv_bin()
    repo = target.root / "repo"
    write(repo / "requirements.txt", "beta==1.0\n")
    target.install(repo)
    site = _site(target)
    record = site / "beta-2.0.dist-info" / "RECORD"
    killed = tmp_path / "killed-uv"
    write(
        killed / "uv",
        f'#!/bin/sh\n{real_uv} "$@" || exit $?\n'
        f"head -n 1 {record} > {tmp_path}/cut && cat {tmp_path}/cut > {record}\n"
        "kill -KILL $$\n",
    ).chmod(0o755)
    monkeypatch.setenv("PATH", f"{killed}{os.pathsep}{os.environ['PATH']}")
    write(repo / "requirements.txt", "beta==2.0\n")
    with pytest.raises(InstallError, match="killed by signal 9"):
        target.install(repo)
    assert len(record.read_text().splitlines()) == 1
    assert (site / PENDING).exists()
    monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])
    target.install(repo)  # beta 2.0 passes for installed; the PENDING file says otherwise
    assert "beta/__init__.py" in record.read_text(), record.read_text()
    assert not (site / PENDING).exists()
    write(repo / "requirements.txt", "beta==1.0\n")
    target.install(repo)
    assert sorted(p.name for p in site.glob("beta-*.dist-info")) == ["beta-1.0.dist-info"]
    assert target.versions("beta") == {"beta": "1.0"}


def test_debris_of_a_killed_uninstall_is_removed_before_installing(target: Target) -> None:
    """pip stashes what it replaces in ~-named folders; uv removes METADATA first. Left by a
    kill, both make a second version visible beside the real one."""
    repo = target.root / "repo"
    write(repo / "requirements.txt", "beta==2.0\n")
    target.install(repo)
    site = _site(target)
    stash = site / "~eta"
    write(stash / "__init__.py", "VERSION = 'old'\n")
    gutted = site / "beta-1.0.dist-info"
    write(gutted / "RECORD", "")
    write(repo / "requirements.txt", "beta==2.0\nalpha\n")
    target.install(repo)
    assert not stash.exists() and not gutted.exists()
    assert target.versions("beta", "alpha") == {"beta": "2.0", "alpha": "1.0"}


def test_a_failed_install_reports_the_tail_and_leaves_no_marker(target: Target) -> None:
    repo = target.root / "repo"
    write(repo / "requirements.txt", "alpha\n")
    target.install(repo)
    write(repo / "requirements.txt", "alpha\nno-such-package==1.0\n")
    with pytest.raises(InstallError) as caught:
        target.install(repo)
    error = caught.value
    assert error.message.startswith("uv pip install failed (exit ")
    assert error.message.endswith("for requirements.txt")
    assert error.details and "no-such-package" in error.details
    assert error.hint and str(target.log) in error.hint
    assert "no-such-package" in target.log.read_text()
    assert not (target.state / "install.json").exists()
    write(repo / "requirements.txt", "alpha\n")
    assert not target.install(repo).skipped  # the failed attempt cleared the old marker


def test_pip_is_used_when_asked(target: Target) -> None:
    repo = target.root / "repo"
    write(repo / "requirements.txt", "alpha==1.0\n")
    result = target.install(repo, installer="pip")
    assert result.installer == "pip"
    assert target.versions("alpha") == {"alpha": "1.0"}
    write(repo / "requirements.txt", "no-such-package\n")
    with pytest.raises(InstallError, match=r"^pip install failed \(exit 1\)"):
        target.install(repo, installer="pip")


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("torch", "torch"),
        ("Torch_Vision>=0.1", "torch-vision"),
        ("torch [cuda] == 1.13.1 ; python_version < '3.12'", "torch"),
        ("torch @ https://example.com/torch-1.0-py3-none-any.whl", "torch"),
        ("https://download.pytorch.org/whl/cu118/torch-2.0.0%2Bcu118-cp310-linux.whl", "torch"),
        ("git+https://github.com/me/x.git@main#egg=Torch", "torch"),
        ("./vendor/pkg", None),
        ("vendor/pkg", None),
        ("pkg-1.0.tar.gz", None),
    ],
)
def test_name_of(spec: str, name: str | None) -> None:
    assert name_of(spec) == name


def test_logical_lines_join_continuations_and_drop_comments() -> None:
    text = "# head\nalpha \\\n  >=1.0  # why\n\nurl#egg=x\n  # indented\nbeta \\\n"
    assert list(logical_lines(text)) == [(2, "alpha   >=1.0"), (5, "url#egg=x"), (7, "beta")]


@pytest.mark.parametrize(
    ("spec", "any_version"),
    [
        ("torch", True),
        ("Torch[cuda]", True),
        ("torch ; sys_platform == 'linux'", True),  # a marker limits where, not which version
        ("torch==2.1", False),
        ("torch>=2,<3", False),
        ("torch @ https://example.com/torch-2.1-cp311-none-any.whl", False),
        ("./vendored/torch", False),
    ],
)
def test_asks_any_version(spec: str, any_version: bool) -> None:
    # Decides between "kept torch (asks for any version)" and "held torch at ... (asked for ...)".
    assert asks_any_version(spec) is any_version
