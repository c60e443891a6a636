"""The bad-input matrix: every case through the real CLI, one table.

Each case must give its documented exit code and exactly one `error:` message that names the
problem and the place (the recipe file, line and key; the URL or ref; the archive and member),
then a `fix:` line saying what to do; no traceback on the console; and leave no step marker,
no half-staged data and nothing where an archive member that climbs out of the folder it is
unpacked in would land.

In a recipe and in the expected texts, ``{tmp}`` stands for the test's folder (where the
recipe, its repo and its archives are); an expected text that ends with a newline must end its
line.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bootstrap.cli import RECIPE_FIX
from tests.conftest import Sandbox, git, write_recipe

BASE = "name: bad\nrepo: {url: repo}\ninstall: {requirements: []}\nrun: {script: train.py}\n"
R = "{tmp}/bad.yaml"  # the recipe, as its problems name it
PWNED = "{tmp}/pwned"  # what a command smuggled into git would create
URL_FIX = "use an https://, ssh://, git@host:path or file:// URL, or a local folder"
UNSAFE = (
    "the archive is broken or malicious; nothing from it was placed in the destination. "
    "Rebuild it with relative paths and links that stay inside it"
)
CORRUPT_FIX = "download or copy the archive again; give data[].sha256 to catch this early"


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
    """A case whose data[0].source is an archive made by ``builder`` in the test's folder,
    staged into {scratch}/ds: unpacked in a work folder made in {scratch}, beside ds."""

    def make(tmp: Path) -> str:
        path = builder(tmp)
        return BASE + f"data: [{{source: {path.name}, to: '{{scratch}}/ds'}}]\n"

    return make


def _zip_slip(tmp: Path) -> Path:
    path = tmp / "slip.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.txt", "fine")
        archive.writestr("../../../evil.txt", "owned")  # two levels above the work folder
    return path


def _bad_crc(tmp: Path) -> Path:
    """A whole tar.gz whose gzip checksum is wrong: every byte is there, but not as written."""
    path = _tar(tmp / "c.tar.gz", _member("a.txt"), data=b"hello")
    raw = bytearray(path.read_bytes())
    raw[-8:-4] = bytes(b ^ 0xFF for b in raw[-8:-4])  # the CRC-32 in the gzip trailer
    path.write_bytes(raw)
    return path


def _truncated(tmp: Path) -> Path:
    noise = random.Random(0).randbytes(200_000)  # does not compress: the cut lands in it
    whole = _tar(tmp / "whole.tar.gz", _member("a.bin"), data=noise)
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
    says: str | tuple[str, ...]  # in the error message (its line and the lines under it)
    fix: str  # in the `fix:` line
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # -- recipes ------------------------------------------------------------------------------
    Case(
        "restarts-not-int",
        BASE.replace("train.py}", "train.py, restarts: three}"),
        2,
        f"{R}:4: run.restarts: expected an integer, got 'three'",
        RECIPE_FIX,
    ),
    Case(
        "unknown-key",
        BASE + "gpuu: required\n",
        2,
        f"{R}:5: gpuu: unknown key 'gpuu'; did you mean 'gpu'?",
        RECIPE_FIX,
    ),
    Case(
        "missing-name",
        BASE.replace("name: bad\n", ""),
        2,
        f"{R}: name: missing required key; add e.g. `name: my-run`",
        RECIPE_FIX,
    ),
    Case(
        "two-entries",
        BASE.replace("train.py}", "train.py, module: m}"),
        2,
        f"{R}:4: run: give exactly one of run.script, run.module, run.callable "
        "(got script, module)",
        RECIPE_FIX,
    ),
    Case(
        "no-entry",
        BASE.replace("{script: train.py}", "{args: []}"),
        2,
        f"{R}:4: run: give exactly one of run.script, run.module, run.callable\n",
        RECIPE_FIX,
    ),
    Case(
        "unknown-placeholder",
        BASE.replace("train.py}", "train.py, args: ['{nope}']}"),
        2,
        R + ":4: run.args[0]: unknown placeholder {nope}; known: {persist}, {scratch}",
        RECIPE_FIX,
    ),
    Case(
        "checkpoint-outside-resume",
        BASE.replace("train.py}", "train.py, args: ['{checkpoint}']}"),
        2,
        R + ":4: run.args[0]: {checkpoint} is only valid in run.resume",
        RECIPE_FIX,
    ),
    Case(
        "bad-duration",
        BASE.replace("train.py}", "train.py, time_limit: soon}"),
        2,
        f"{R}:4: run.time_limit: bad duration 'soon': use seconds",
        RECIPE_FIX,
    ),
    Case(
        "missing-profile",
        BASE,
        2,
        f"error: no profile 'nope' in {R}",
        "this recipe defines no profiles",
        args=("--profile", "nope"),
    ),
    Case(
        "yaml-syntax",
        BASE.replace("{url: repo}", "{url: repo}}"),
        2,
        f"{R}:2: invalid YAML: expected <block end>, but found '}}' "
        "(while parsing a block mapping)",
        RECIPE_FIX,
    ),
    Case(
        "yaml-python-tag",
        BASE + "x: !!python/object/apply:os.system ['true']\n",
        2,
        f"{R}:5: YAML tag !!python/object/apply:os.system is not allowed: recipes are plain YAML",
        RECIPE_FIX,
    ),
    Case(
        "bad-name",
        BASE.replace("name: bad", "name: 'my run/1'"),
        2,
        f"{R}:1: name: 'my run/1' is not a valid name: use letters, digits, '.', '_', '-'",
        RECIPE_FIX,
    ),
    Case(
        "version-2",
        "version: 2\n" + BASE,
        2,
        f"{R}:1: version: unsupported recipe version 2; this colab-bootstrap reads version 1",
        RECIPE_FIX,
    ),
    Case(
        "sha256-not-hex",
        BASE + "data: [{source: a.tar, sha256: xyz}]\n",
        2,
        f"{R}:5: data[0].sha256: expected 64 hexadecimal characters (a SHA-256), got 'xyz'",
        RECIPE_FIX,
    ),
    Case(
        "env-list",
        BASE.replace("train.py}", "train.py, env: {A: [1]}}"),
        2,
        f"{R}:4: run.env.A: expected a string, got a list",
        RECIPE_FIX,
    ),
    Case(
        "callable-no-colon",
        BASE.replace("{script: train.py}", "{callable: train}"),
        2,
        f"{R}:4: run.callable: expected module:function, e.g. train:main, got 'train'",
        RECIPE_FIX,
    ),
    Case(
        "gpu-enum",
        BASE + "gpu: maybe\n",
        2,
        f"{R}:5: gpu: expected 'optional', 'required' or 'none', got 'maybe'",
        RECIPE_FIX,
    ),
    Case(
        "into-enum",
        BASE.replace("{url: repo}", "{url: repo, into: cloud}"),
        2,
        f"{R}:2: repo.into: expected 'scratch' or 'persist', got 'cloud'",
        RECIPE_FIX,
    ),
    Case(
        "requirements-type",
        BASE.replace("{requirements: []}", "{requirements: 5}"),
        2,
        f"{R}:3: install.requirements: expected auto or a list of requirement file names, got 5",
        RECIPE_FIX,
    ),
    Case(
        "data-not-list",
        BASE + "data: {source: a.tar}\n",
        2,
        f"{R}:5: data: expected a list, got a mapping",
        RECIPE_FIX,
    ),
    Case(
        "bad-set",
        BASE,
        2,
        "error: --set 'run.restarts': expected KEY=VALUE",
        "e.g. --set run.restarts=5",
        args=("--set", "run.restarts"),
    ),
    Case(
        "missing-env-var",
        BASE.replace("train.py}", "train.py, args: ['${NOPE_VAR}']}"),
        2,
        f"{R}:4: run.args[0]: environment variable NOPE_VAR is not set; set it, or give a "
        "default: ${NOPE_VAR:-value}",
        RECIPE_FIX,
    ),
    Case("empty-recipe", "", 2, f"{R}: the recipe is empty\n", RECIPE_FIX),
    # -- repos --------------------------------------------------------------------------------
    Case(
        "missing-url",
        BASE.replace("{url: repo}", "{ref: main}"),
        2,
        f"{R}:2: repo.url: missing required key; add e.g. `url: https://github.com/me/project.git`",
        RECIPE_FIX,
    ),
    Case(
        "missing-local-repo",
        BASE.replace("{url: repo}", "{url: nowhere}"),
        3,
        "error: repo.url '{tmp}/nowhere': {tmp}/nowhere does not exist",
        "fix repo.url (a relative path is relative to the recipe's folder)",
    ),
    # A URL must look like one (scheme://... or user@host:path) to reach git's checks: the plan
    # takes anything else for a local folder, relative to the recipe, which git never runs.
    Case(
        "ext-url",
        BASE.replace("{url: repo}", "{url: 'ext::touch@host:repo'}"),
        3,
        "error: repo.url 'ext::touch@host:repo' uses git's transport::address form, "
        "which can run commands",
        URL_FIX,
    ),
    Case(
        "dash-url",
        BASE.replace("{url: repo}", "{url: '--upload-pack=touch@host:repo'}"),
        3,
        "error: repo.url '--upload-pack=touch@host:repo' starts with '-', "
        "which git would read as an option",
        URL_FIX,
    ),
    Case(
        "dash-host",
        BASE.replace("{url: repo}", "{url: 'ssh://-oProxyCommand=touch%20pwned/x'}"),
        3,
        "error: repo.url 'ssh://-oProxyCommand=touch%20pwned/x' names a user or host "
        "starting with '-', which ssh would read as an option",
        URL_FIX,
    ),
    Case(
        "dash-ref",
        lambda t: BASE.replace(
            "{url: repo}", f"{{url: '{_git_repo(t)}', ref: '--upload-pack=touch {PWNED}'}}"
        ),
        3,
        f"error: repo.ref '--upload-pack=touch {PWNED}' is not a valid branch, tag or commit name",
        "give a branch (main), a tag (v1.0) or a commit SHA",
    ),
    Case(
        "unknown-ref",
        lambda t: BASE.replace("{url: repo}", f"{{url: '{_git_repo(t)}', ref: nope}}"),
        3,
        "error: ref 'nope' not found in {tmp}/gitrepo; branches: main; tags: (none)",
        "set repo.ref to one of these, to a commit SHA, or remove it for the default branch",
    ),
    Case(
        "token-env-empty",
        BASE.replace(
            "{url: repo}", "{url: 'https://github.com/me/private.git', token_env: MY_TOKEN}"
        ),
        3,
        "error: repo.token_env names MY_TOKEN, but that environment variable is empty",
        "set MY_TOKEN before running",
        env={"MY_TOKEN": ""},
    ),
    # -- archives: staged into {scratch}/ds, unpacked in a work folder beside it, in scratch ----
    Case(
        "missing-data",
        BASE + "data: [{source: nowhere.tar.gz}]\n",
        3,
        "error: data source {tmp}/nowhere.tar.gz does not exist",
        "check data[].source in the recipe",
    ),
    Case(
        "corrupt-archive",
        _archive(_bad_crc),
        3,
        "error: {tmp}/c.tar.gz is corrupt or truncated: ",
        CORRUPT_FIX,
    ),
    Case(
        "not-an-archive",
        _archive(lambda t: (t / "t.tar").write_text("hello\n") and t / "t.tar"),
        3,
        "error: data source {tmp}/t.tar is not a supported archive (its name says tar): "
        "it starts with b'hello\\n'",
        "use a .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz or .zip archive, a folder, or an http",
    ),
    Case(
        "truncated-archive",
        _archive(_truncated),
        3,
        "error: {tmp}/cut.tar.gz is corrupt or truncated: unexpected end of data",
        CORRUPT_FIX,
    ),
    Case(
        "traversal",
        _archive(lambda t: _tar(t / "tr.tar.gz", _member("../../evil.txt"))),
        3,
        "error: {tmp}/tr.tar.gz: refusing unsafe member '../../evil.txt': its path contains '..'",
        UNSAFE,
    ),
    Case(
        "absolute-path",
        _archive(lambda t: _tar(t / "abs.tar.gz", _member(f"{t}/scratch/evil.txt"))),
        3,
        "error: {tmp}/abs.tar.gz: refusing unsafe member '{tmp}/scratch/evil.txt': "
        "its path is absolute",
        UNSAFE,
    ),
    Case(
        "symlink-escape",
        _archive(lambda t: _tar(t / "sl.tar.gz", _member("link", tarfile.SYMTYPE, "/etc"))),
        3,
        "error: {tmp}/sl.tar.gz: refusing unsafe member 'link': symlink to the absolute path "
        "'/etc'",
        UNSAFE,
    ),
    Case(
        "symlink-then-write-through",
        _archive(
            lambda t: _tar(
                t / "sw.tar.gz", _member("d", tarfile.SYMTYPE, "../.."), _member("d/evil.txt")
            )
        ),
        3,
        "error: {tmp}/sw.tar.gz: refusing unsafe member 'd': symlink to '../..', outside the "
        "archive",
        UNSAFE,
    ),
    Case(
        "hardlink-escape",
        _archive(lambda t: _tar(t / "hl.tar.gz", _member("h", tarfile.LNKTYPE, "/etc/passwd"))),
        3,
        "error: {tmp}/hl.tar.gz: refusing unsafe member 'h': its target '/etc/passwd' is absolute",
        UNSAFE,
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
        "error: {tmp}/chain.tar.gz: refusing unsafe member 'a/l/escape': it goes through the "
        "symlink 'a/l'",
        UNSAFE,
    ),
    Case(
        "device-node",
        _archive(lambda t: _tar(t / "dev.tar.gz", _member("null", tarfile.CHRTYPE))),
        3,
        "error: {tmp}/dev.tar.gz: refusing unsafe member 'null': it is a character device; "
        "only files, folders and links",
        UNSAFE,
    ),
    Case(
        "fifo",
        _archive(lambda t: _tar(t / "fifo.tar.gz", _member("pipe", tarfile.FIFOTYPE))),
        3,
        "error: {tmp}/fifo.tar.gz: refusing unsafe member 'pipe': it is a fifo; "
        "only files, folders and links",
        UNSAFE,
    ),
    Case(
        "zip-slip",
        _archive(_zip_slip),
        3,
        "error: {tmp}/slip.zip: refusing unsafe member '../../../evil.txt': its path contains '..'",
        UNSAFE,
    ),
    Case(
        "sha256-mismatch",
        lambda t: _archive(lambda u: _tar(u / "s.tar.gz", _member("a")))(t).replace(
            "to: '{scratch}/ds'", "to: '{scratch}/ds', sha256: '" + "a" * 64 + "'"
        ),
        3,
        "error: sha256 of {tmp}/s.tar.gz does not match: expected " + "a" * 64 + ", got ",
        "fetch it again, or if the new file is right, put its sha256 in data[].sha256",
    ),
    # -- requirements (the installer's own lines are quoted under the error) ------------------
    Case(
        "package-missing",
        BASE.replace(
            "{requirements: []}",
            "{requirements: [], packages: [no-such-package-xyz], pip_args: ['--no-index']}",
        ),
        3,
        ("install failed (exit 1) for install.packages\n", "no-such-package-xyz"),
        "full log: {tmp}/persist/runs/bad/logs/install.log",
    ),
    Case(
        "conflicting-pins",
        BASE.replace(
            "{requirements: []}",
            "{requirements: [], packages: ['six==1.0', 'six==2.0'], pip_args: ['--no-index']}",
        ),
        3,
        ("install failed (exit 1) for install.packages\n", "six==1.0 and six==2.0"),
        "full log: {tmp}/persist/runs/bad/logs/install.log",
    ),
    # -- host ---------------------------------------------------------------------------------
    Case(
        "gpu-required",
        BASE + "gpu: required\n",
        3,
        "error: gpu: required, but this runtime has no GPU",
        "run it on a machine with an NVIDIA GPU, or set gpu: optional",
    ),
    Case(
        "drive-not-mounted",
        BASE,
        3,
        "error: storage.persist is auto on Colab, but Google Drive is not mounted at "
        "{tmp}/content/drive/MyDrive",
        "run `from google.colab import drive; drive.mount('/content/drive')` in a notebook cell",
        env={"BOOTSTRAP_COLAB": "1", "BOOTSTRAP_PERSIST": ""},
    ),
]


def _listing(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.is_dir() else set()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "train.py").write_text("print('trained')\n")
    text = case.recipe(tmp_path) if callable(case.recipe) else case.recipe
    recipe = write_recipe(tmp_path / "bad.yaml", text.replace("{tmp}", str(tmp_path)))
    env = {"BOOTSTRAP_CONTENT_DIR": str(tmp_path / "content"), **case.env}
    before = _listing(tmp_path)
    result = sandbox.cli(recipe, *case.args, env=env, timeout=120)

    assert result.returncode == case.code, result.stderr
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    fixes = [i for i, line in enumerate(lines) if line.startswith("fix: ")]
    assert len(errors) == 1 and len(fixes) == 1 and errors[0] < fixes[0], result.stderr
    message = "\n".join(lines[errors[0] : fixes[0]]) + "\n"
    for says in (case.says,) if isinstance(case.says, str) else case.says:
        assert says.replace("{tmp}", str(tmp_path)) in message, result.stderr
    assert case.fix.replace("{tmp}", str(tmp_path)) in lines[fixes[0]], result.stderr
    assert "Traceback" not in result.stderr
    assert "trained" not in result.stdout
    assert not list(sandbox.scratch.rglob(".bootstrap/*/data/*.json"))  # no data marker
    assert not (tmp_path / "pwned").exists()
    # An archive is unpacked in a work folder made in scratch, beside ds: a member that climbs
    # out of it lands in scratch (one level up) or in the test's folder (two levels up). Only
    # the run state and the repo may be in scratch: no ds, no work folder left, no escapee.
    assert _listing(sandbox.scratch) <= {".bootstrap", "repos"}, _listing(sandbox.scratch)
    assert _listing(tmp_path) == before
