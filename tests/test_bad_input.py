"""The bad-input matrix: every case through the real CLI, one table.

Each case must give the documented exit code, a one-line `error:` message that names the
problem and the place (and a `fix:` line where there is one), no traceback on the console, and
leave no step marker or half-staged data behind.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Sandbox, git, write_recipe

BASE = "name: bad\nrepo: {url: repo}\ninstall: {requirements: []}\nrun: {script: train.py}\n"


def _tar(path: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _archive(builder: Callable[[Path], Path]) -> Callable[[Path], str]:
    """A case whose data[0].source is an archive made by ``builder`` in the test's folder."""

    def make(tmp: Path) -> str:
        path = builder(tmp)
        return BASE + f"data: [{{source: {path.name}, to: '{{scratch}}/ds'}}]\n"

    return make


def _zip_slip(tmp: Path) -> Path:
    path = tmp / "slip.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.txt", "fine")
        archive.writestr("../../evil.txt", "owned")
    return path


def _truncated(tmp: Path) -> Path:
    whole = _tar(tmp / "whole.tar.gz", _member("a.bin"), data=os.urandom(200_000))
    cut = tmp / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[:60_000])
    return cut


def _git_repo(tmp: Path) -> str:
    repo = tmp / "gitrepo"
    repo.mkdir()
    (repo / "train.py").write_text("print('hi')\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "one", cwd=repo)
    return str(repo)


@dataclass
class Case:
    id: str
    recipe: Callable[[Path], str] | str
    code: int
    says: str  # a fragment of the one-line error message
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # -- recipes ------------------------------------------------------------------------------
    Case(
        "restarts-not-int",
        BASE.replace("train.py}", "train.py, restarts: three}"),
        2,
        "run.restarts: expected an integer",
    ),
    Case("unknown-key", BASE + "gpuu: required\n", 2, "did you mean 'gpu'"),
    Case("missing-name", BASE.replace("name: bad\n", ""), 2, "name: missing required key"),
    Case(
        "two-entries",
        BASE.replace("train.py}", "train.py, module: m}"),
        2,
        "give exactly one of run.script, run.module, run.callable",
    ),
    Case(
        "no-entry",
        BASE.replace("{script: train.py}", "{args: []}"),
        2,
        "give exactly one of run.script, run.module, run.callable",
    ),
    Case(
        "unknown-placeholder",
        BASE.replace("train.py}", "train.py, args: ['{nope}']}"),
        2,
        "unknown placeholder {nope}",
    ),
    Case(
        "checkpoint-outside-resume",
        BASE.replace("train.py}", "train.py, args: ['{checkpoint}']}"),
        2,
        "{checkpoint}",
    ),
    Case(
        "bad-duration",
        BASE.replace("train.py}", "train.py, time_limit: soon}"),
        2,
        "run.time_limit",
    ),
    Case("missing-profile", BASE, 2, "profile 'nope'", args=("--profile", "nope")),
    Case("yaml-syntax", "name: bad\nrepo: {url: repo\n", 2, "bad.yaml:"),
    Case("yaml-python-tag", BASE + "x: !!python/object/apply:os.system ['true']\n", 2, "tag"),
    Case("bad-name", BASE.replace("name: bad", "name: 'my run/1'"), 2, "name:"),
    Case("version-2", "version: 2\n" + BASE, 2, "version"),
    Case("sha256-not-hex", BASE + "data: [{source: a.tar, sha256: xyz}]\n", 2, "sha256"),
    Case("env-list", BASE.replace("train.py}", "train.py, env: {A: [1]}}"), 2, "run.env.A"),
    Case(
        "callable-no-colon",
        BASE.replace("{script: train.py}", "{callable: train}"),
        2,
        "module:function",
    ),
    Case("gpu-enum", BASE + "gpu: maybe\n", 2, "gpu:"),
    Case("into-enum", BASE.replace("{url: repo}", "{url: repo, into: cloud}"), 2, "repo.into"),
    Case(
        "requirements-type",
        BASE.replace("{requirements: []}", "{requirements: 5}"),
        2,
        "install.requirements",
    ),
    Case("data-not-list", BASE + "data: {source: a.tar}\n", 2, "data"),
    Case("bad-set", BASE, 2, "--set", args=("--set", "run.restarts")),
    Case(
        "missing-env-var",
        BASE.replace("train.py}", "train.py, args: ['${NOPE_VAR}']}"),
        2,
        "NOPE_VAR",
    ),
    Case("empty-recipe", "", 2, "bad.yaml"),
    # -- repos --------------------------------------------------------------------------------
    Case("missing-url", BASE.replace("{url: repo}", "{ref: main}"), 2, "repo.url"),
    Case("missing-local-repo", BASE.replace("{url: repo}", "{url: nowhere}"), 3, "nowhere"),
    Case(
        "ext-url", BASE.replace("{url: repo}", "{url: 'ext::sh -c touch% /tmp/pwned'}"), 3, "ext::"
    ),
    Case(
        "dash-url", BASE.replace("{url: repo}", "{url: '--upload-pack=touch /tmp/pwned'}"), 3, "-"
    ),
    Case(
        "dash-ref",
        lambda t: BASE.replace(
            "{url: repo}", f"{{url: '{_git_repo(t)}', ref: '--upload-pack=touch /tmp/pwned'}}"
        ),
        3,
        "ref",
    ),
    Case(
        "unknown-ref",
        lambda t: BASE.replace("{url: repo}", f"{{url: '{_git_repo(t)}', ref: nope}}"),
        3,
        "nope",
    ),
    Case(
        "token-env-empty",
        BASE.replace(
            "{url: repo}", "{url: 'https://github.com/me/private.git', token_env: MY_TOKEN}"
        ),
        3,
        "MY_TOKEN",
    ),
    # -- archives -----------------------------------------------------------------------------
    Case("missing-data", BASE + "data: [{source: nowhere.tar.gz}]\n", 3, "nowhere.tar.gz"),
    Case(
        "corrupt-archive",
        _archive(lambda t: (t / "c.tar.gz").write_bytes(os.urandom(4096)) and t / "c.tar.gz"),
        3,
        "c.tar.gz",
    ),
    Case(
        "not-an-archive",
        _archive(lambda t: (t / "t.tar").write_text("hello\n") and t / "t.tar"),
        3,
        "t.tar",
    ),
    Case("truncated-archive", _archive(_truncated), 3, "cut.tar.gz"),
    Case(
        "traversal",
        _archive(lambda t: _tar(t / "tr.tar.gz", _member("../evil.txt"))),
        3,
        "../evil.txt",
    ),
    Case(
        "absolute-path",
        _archive(lambda t: _tar(t / "abs.tar.gz", _member("/tmp/evil.txt"))),
        3,
        "/tmp/evil.txt",
    ),
    Case(
        "symlink-escape",
        _archive(lambda t: _tar(t / "sl.tar.gz", _member("link", tarfile.SYMTYPE, "/etc"))),
        3,
        "link",
    ),
    Case(
        "symlink-then-write-through",
        _archive(
            lambda t: _tar(
                t / "sw.tar.gz", _member("d", tarfile.SYMTYPE, "../.."), _member("d/evil.txt")
            )
        ),
        3,
        "d",
    ),
    Case(
        "hardlink-escape",
        _archive(lambda t: _tar(t / "hl.tar.gz", _member("h", tarfile.LNKTYPE, "/etc/passwd"))),
        3,
        "h",
    ),
    Case(
        "symlink-chain-bypass",
        _archive(
            lambda t: _tar(
                t / "chain.tar.gz",
                _member("a/b", tarfile.DIRTYPE),
                _member("a/l", tarfile.SYMTYPE, "b/../.."),
                _member("a/l/escape", tarfile.SYMTYPE, "."),
            )
        ),
        3,
        "chain.tar.gz",
    ),
    Case(
        "device-node",
        _archive(lambda t: _tar(t / "dev.tar.gz", _member("null", tarfile.CHRTYPE))),
        3,
        "null",
    ),
    Case(
        "fifo",
        _archive(lambda t: _tar(t / "fifo.tar.gz", _member("pipe", tarfile.FIFOTYPE))),
        3,
        "pipe",
    ),
    Case("zip-slip", _archive(_zip_slip), 3, "evil.txt"),
    Case(
        "sha256-mismatch",
        lambda t: _archive(lambda u: _tar(u / "s.tar.gz", _member("a")))(t).replace(
            "to: '{scratch}/ds'", "to: '{scratch}/ds', sha256: '" + "a" * 64 + "'"
        ),
        3,
        "sha256",
    ),
    # -- requirements -------------------------------------------------------------------------
    Case(
        "package-missing",
        BASE.replace(
            "{requirements: []}",
            "{requirements: [], packages: [no-such-package-xyz], pip_args: ['--no-index']}",
        ),
        3,
        "install failed",
    ),
    Case(
        "conflicting-pins",
        BASE.replace(
            "{requirements: []}",
            "{requirements: [], packages: ['six==1.0', 'six==2.0'], pip_args: ['--no-index']}",
        ),
        3,
        "install failed",
    ),
    # -- host ---------------------------------------------------------------------------------
    Case("gpu-required", BASE + "gpu: required\n", 3, "no GPU"),
    Case(
        "drive-not-mounted",
        BASE,
        3,
        "Google Drive is not mounted",
        env={"BOOTSTRAP_COLAB": "1", "BOOTSTRAP_PERSIST": ""},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "train.py").write_text("print('trained')\n")
    text = case.recipe(tmp_path) if callable(case.recipe) else case.recipe
    recipe = write_recipe(tmp_path / "bad.yaml", text)
    env = {"BOOTSTRAP_CONTENT_DIR": str(tmp_path / "content"), **case.env}
    result = sandbox.cli(recipe, *case.args, env=env, timeout=120)

    assert result.returncode == case.code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert case.says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "trained" not in result.stdout
    assert not list(sandbox.scratch.rglob(".bootstrap/*/data/*.json"))  # no data marker
    assert not (sandbox.scratch / "ds").exists() or not any((sandbox.scratch / "ds").rglob("*"))
    assert not Path("/tmp/pwned").exists()
    assert not (tmp_path.parent / "evil.txt").exists()
