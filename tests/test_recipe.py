"""Loading, overlaying and validating recipes: every key of RECIPE.md, every message a user sees."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import ExitCode, RecipeError, UsageError
from bootstrap.recipe.fields import Invalid, Issue
from bootstrap.recipe.load import load_recipe, parse_recipe
from bootstrap.recipe.models import RunSpec

# The example of RECIPE.md, verbatim: the public contract must load as written.
RECIPE_MD_EXAMPLE = """\
version: 1                      # optional; 1 if absent
name: synrod-to-rod             # required; [A-Za-z0-9._-]+; names the run folder {run}

storage:                        # optional. The environment (BOOTSTRAP_PERSIST, BOOTSTRAP_SCRATCH) overrides
                                # these, and the command line (--persist, --scratch) overrides both
  persist: auto                 # survives the VM. auto: /content/drive/MyDrive/colab-bootstrap on Colab
                                #   (error with instructions when Drive is not mounted); a local folder elsewhere
  scratch: auto                 # fast, dies with the VM. auto: /content on Colab; a local folder elsewhere

repo:
  url: https://github.com/me/mldl_project.git   # git URL (https, ssh, file) or a local folder
                                # (a git repo is cloned; a plain folder is copied)
  ref: main                     # branch, tag or commit (full or short SHA); default: the remote's HEAD
  path: code                    # subfolder to work in: the training's working directory and the
                                # sys.path entry; default: the repo root. {repo} points here.
  into: scratch                 # scratch (default) | persist: where the clone lives
  token_env: GITHUB_TOKEN       # optional: env var with a token for a private HTTPS repo.
                                # Never printed, never written into .git/config or a log.
  submodules: false

install:                        # optional
  requirements: auto            # auto | [files relative to the repo root] | []
                                # auto: requirements.txt if present, else the repo itself when it is a
                                # Python package (pyproject.toml with [project], or setup.py)
  packages: ["timm==0.9.12"]    # extra requirement specifiers
  keep: [torch, torchvision, torchaudio]   # held at the versions already installed (this is the default
                                # list); a requirement that would change them is overridden, with a warning
  pip_args: []                  # passed through, e.g. ["--extra-index-url", "..."]

data:                           # optional list, staged in order
  - source: "{persist}/zhihu_colab/ROD-synROD.tar"   # archive (.tar .tar.gz .tgz .tar.bz2 .tar.xz .zip),
                                # a folder, or an http(s) URL
    to: "{scratch}/datasets"    # default: {scratch}/data. Archives are extracted into it, merging with
                                # what is there; folders are copied into it.
    sha256: null                # optional integrity check of the source file

gpu: optional                   # optional | required | none. required: stop before any work when the
                                # runtime has no GPU, saying how to switch the Colab runtime type

run:
  script: train_eval.py         # exactly one of script | module | callable
  # module: mypkg.train         #   python -m mypkg.train ARGS
  # callable: train:my_training_method   # module:function, imported from {repo}, called with kwargs
  args: ["--data_root", "{scratch}/datasets/ROD-synROD", "--logdir", "{ckpt}"]   # script/module
  kwargs: {}                    # callable
  env: {}                       # extra environment for the training (values are strings)
  checkpoints: "{ckpt}"         # folder the training writes its checkpoints into (may be inside {repo})
  match: "**/*"                 # glob(s), relative to checkpoints, naming the checkpoint files
  resume: ["--resume"]          # args appended when a checkpoint exists; omit for no resume flag.
                                # "{checkpoint}" inside it is the newest matching file
  restarts: 3                   # relaunches after a crash, each resuming from the newest checkpoint
  time_limit: null              # e.g. "11h30m": stop cleanly this long after the VM booted
  stop_grace: 60s               # after asking the training to stop, how long before it is killed
  # setup: train:build          # loop mode only (see below), with callable and epochs
  # epochs: 40

profiles:                       # optional named overlays, merged over the recipe
  smoke:                        # used by --smoke, together with a CPU-only environment
    run: {args: ["--data_root", "{scratch}/datasets/ROD-synROD", "--epochs", "1"]}
"""  # noqa: E501 (verbatim)

MINIMAL = """\
name: exp
repo:
  url: https://example.com/r.git
run:
  script: train.py
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path, so that messages name the recipe as plain ``r.yaml``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(text: str, name: str = "r.yaml") -> Path:
    path = Path(name)
    path.write_text(text, encoding="utf-8")
    return path


def problems(text: str, **kwargs: Any) -> list[str]:
    kwargs.setdefault("environ", {})
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(text), **kwargs)
    assert caught.value.exit_code == ExitCode.USAGE
    return [str(p) for p in caught.value.problems]


def test_recipe_md_example_loads_with_every_key(here: Path) -> None:
    recipe = load_recipe(write(RECIPE_MD_EXAMPLE), environ={})
    assert (recipe.version, recipe.name, recipe.gpu) == (1, "synrod-to-rod", "optional")
    assert (recipe.storage.persist, recipe.storage.scratch) == ("auto", "auto")
    repo = recipe.repo
    assert repo.url == "https://github.com/me/mldl_project.git"
    assert (repo.ref, repo.path, repo.into) == ("main", "code", "scratch")
    assert (repo.token_env, repo.submodules) == ("GITHUB_TOKEN", False)
    install = recipe.install
    assert install.requirements == "auto"
    assert install.packages == ("timm==0.9.12",)
    assert install.keep == ("torch", "torchvision", "torchaudio")
    assert install.pip_args == ()
    (item,) = recipe.data
    assert (item.source, item.to) == ("{persist}/zhihu_colab/ROD-synROD.tar", "{scratch}/datasets")
    assert item.sha256 is None
    run = recipe.run
    assert (run.entry_kind, run.entry, run.script) == ("script", "train_eval.py", "train_eval.py")
    assert run.module is None and run.entry_callable is None
    assert run.args == ("--data_root", "{scratch}/datasets/ROD-synROD", "--logdir", "{ckpt}")
    assert (run.kwargs, run.env, run.checkpoints) == ({}, {}, "{ckpt}")
    assert (run.match, run.resume, run.restarts) == (("**/*",), ("--resume",), 3)
    assert (run.time_limit, run.stop_grace) == (None, 60.0)
    assert (run.setup, run.epochs, run.loop_mode) == (None, None, False)
    assert list(recipe.profiles) == ["smoke"]
    assert recipe.source_path == here / "r.yaml"
    assert recipe.base_dir == here

    smoke = load_recipe("r.yaml", smoke=True, environ={})
    assert smoke.run.args == ("--data_root", "{scratch}/datasets/ROD-synROD", "--epochs", "1")
    assert smoke.run.resume == ("--resume",)  # deep merge: the rest of run stays


def test_defaults_of_a_minimal_recipe(here: Path) -> None:
    recipe = load_recipe(write(MINIMAL), environ={})
    assert recipe.version == 1 and recipe.gpu == "optional" and recipe.data == ()
    assert recipe.install.requirements == "auto"
    assert recipe.repo.into == "scratch" and recipe.repo.ref is None
    assert recipe.run.match == ("**/*",) and recipe.run.resume is None
    assert (recipe.run.restarts, recipe.run.stop_grace) == (3, 60.0)
    assert recipe.profiles == {}


def test_loop_mode_values_and_conversions(here: Path) -> None:
    text = """\
name: loop.run_1
repo: {url: ./code}
install:                       # only comments: the defaults
data:
  - {source: /d.tar, sha256: "%s"}
run:
  callable: train:epoch
  setup: train.build:make
  epochs: 40
  kwargs: {lr: 0.1, sched: {steps: [1, 2]}, name: null}
  env: {SEED: 1, AMP: true, RATE: 0.5, NAME: x}
  match: ["*.pt", "*.ckpt"]
  args: ["--epochs", 3, 0.5, true]
  time_limit: "11h30m"
  stop_grace: 1.5
""" % ("AB" * 32)
    recipe = load_recipe(write(text), environ={})
    run = recipe.run
    assert (run.entry_kind, run.entry, run.loop_mode) == ("callable", "train:epoch", True)
    assert (run.setup, run.epochs) == ("train.build:make", 40)
    assert run.kwargs == {"lr": 0.1, "sched": {"steps": [1, 2]}, "name": None}
    assert run.env == {"SEED": "1", "AMP": "true", "RATE": "0.5", "NAME": "x"}
    assert run.match == ("*.pt", "*.ckpt")
    assert run.args == ("--epochs", "3", "0.5", "true")
    assert (run.time_limit, run.stop_grace) == (41400.0, 1.5)
    assert recipe.data[0].sha256 == "ab" * 32  # normalised to lower case
    assert recipe.install.keep == ("torch", "torchvision", "torchaudio")


def test_module_entry_and_yaml_anchors_and_merge_keys(here: Path) -> None:
    text = """\
name: exp
repo: {url: u}
run: &run
  module: pkg.train
  restarts: 5
profiles:
  smoke:
    run:
      <<: *run
      restarts: 0
"""
    recipe = load_recipe(write(text), environ={})
    assert (recipe.run.entry_kind, recipe.run.entry, recipe.run.restarts) == (
        "module",
        "pkg.train",
        5,
    )
    assert load_recipe("r.yaml", smoke=True, environ={}).run.restarts == 0  # no false duplicate


BAD = [
    pytest.param(
        MINIMAL.replace("script: train.py", "script: train.py\n  restarts: three"),
        "r.yaml:6: run.restarts: expected an integer, got 'three'",
        id="wrong-type",
    ),
    pytest.param(
        MINIMAL + "  restart: 5\n",
        "r.yaml:6: run.restart: unknown key 'restart'; did you mean 'restarts'?",
        id="unknown-key-close",
    ),
    pytest.param(
        MINIMAL + "storage: {bucket: x}\n",
        "r.yaml:6: storage.bucket: unknown key 'bucket'; valid keys: persist, scratch, resume_from",
        id="unknown-key-far",
    ),
    pytest.param(
        MINIMAL + "restarts: 5\n",
        "r.yaml:6: restarts: unknown key 'restarts'; did you mean 'run.restarts'?",
        id="key-one-level-too-high",
    ),
    pytest.param(
        MINIMAL + "  entry_callable: a:b\n",
        "r.yaml:6: run.entry_callable: unknown key 'entry_callable'; did you mean 'callable'?",
        id="python-name-is-not-a-key",
    ),
    pytest.param(
        MINIMAL.replace("name: exp\n", ""),
        "r.yaml: name: missing required key; add e.g. `name: my-run`",
        id="missing-name",
    ),
    pytest.param(
        MINIMAL.replace("  url: https://example.com/r.git", "  ref: main"),
        "r.yaml:2: repo.url: missing required key; add e.g. "
        "`url: https://github.com/me/project.git`",
        id="missing-repo-url",
    ),
    pytest.param(
        MINIMAL + "  module: pkg.train\n",
        "r.yaml:4: run: give exactly one of run.script, run.module, run.callable "
        "(got script, module)",
        id="two-entry-kinds",
    ),
    pytest.param(
        MINIMAL.replace("script: train.py", "args: []"),
        "r.yaml:4: run: give exactly one of run.script, run.module, run.callable",
        id="no-entry-kind",
    ),
    pytest.param(
        MINIMAL + '  args: ["{foo}"]\n',
        "r.yaml:6: run.args[0]: unknown placeholder {foo}; known: {persist}, {scratch}, {run}, "
        "{repo}, {ckpt}, {name}, {data0} {data1} ... (each data item's folder) "
        "({checkpoint} in run.resume only)",
        id="unknown-placeholder",
    ),
    pytest.param(
        MINIMAL + '  checkpoints: "{scrach}/c"\n',
        "r.yaml:6: run.checkpoints: unknown placeholder {scrach}; did you mean {scratch}?",
        id="placeholder-typo",
    ),
    pytest.param(
        MINIMAL + "  env:\n    CKPT: '{checkpoint}'\n",
        "r.yaml:7: run.env.CKPT: {checkpoint} is only valid in run.resume",
        id="checkpoint-outside-resume",
    ),
    pytest.param(
        MINIMAL + "  args: ['{']\n",
        "r.yaml:6: run.args[0]: stray '{' in '{': placeholders look like {name}; "
        "write {{ for a literal brace",
        id="stray-brace",
    ),
    pytest.param(
        MINIMAL + "  kwargs: {root: '${DATA_ROOT}/x'}\n",
        "r.yaml:6: run.kwargs.root: environment variable DATA_ROOT is not set; set it, "
        "or give a default: ${DATA_ROOT:-value}",
        id="unset-env-var",
    ),
    pytest.param(
        MINIMAL + "storage: {persist: '{scratch}/p'}\n",
        "r.yaml:6: storage.persist: {scratch} cannot be used in storage: "
        "placeholders are built from it",
        id="placeholder-in-storage",
    ),
    pytest.param(
        MINIMAL.replace("r.git", "r.git\n  path: '{repo}/src'"),
        "r.yaml:4: repo.path: {repo} cannot be used in repo: "
        "it is built from repo.url and repo.path",
        id="repo-in-repo",
    ),
    pytest.param(
        MINIMAL + "  time_limit: soon\n",
        "r.yaml:6: run.time_limit: bad duration 'soon': use seconds (90 or 1.5), units d h m s "
        "(11h30m, 90s, 2d) or HH:MM:SS (11:30:00)",
        id="bad-duration",
    ),
    pytest.param(
        MINIMAL + "  time_limit: 0\n",
        "r.yaml:6: run.time_limit: must be more than 0, got 0",
        id="zero-time-limit",
    ),
    pytest.param(
        MINIMAL + "data:\n  - source: a.tar\n    sha256: abc123\n",
        "r.yaml:8: data[0].sha256: expected 64 hexadecimal characters (a SHA-256), got 'abc123'",
        id="bad-sha256",
    ),
    pytest.param(
        MINIMAL + "data:\n  - to: x\n",
        'r.yaml:7: data[0].source: missing required key; add e.g. `source: "{persist}/data.tar"`',
        id="data-without-source",
    ),
    pytest.param(
        "version: 2\nname: x y\nfuture_key: 1\n",
        "r.yaml:1: version: unsupported recipe version 2; this colab-bootstrap reads version 1 "
        "(upgrade colab-bootstrap, or write version: 1)",
        id="version-2-alone",
    ),
    pytest.param(
        MINIMAL + "gpu: always\n",
        "r.yaml:6: gpu: expected 'optional', 'required' or 'none', got 'always'",
        id="gpu-literal",
    ),
    pytest.param(
        MINIMAL.replace("name: exp", "name: my run"),
        "r.yaml:1: name: 'my run' is not a valid name: use letters, digits, '.', '_', '-'",
        id="bad-name",
    ),
    pytest.param(
        MINIMAL.replace("r.git", "r.git\n  ref: 1234567"),
        "r.yaml:4: repo.ref: expected a string, got 1234567; quote it",
        id="numeric-ref",
    ),
    pytest.param(
        MINIMAL.replace("r.git", "r.git\n  token_env: my-token"),
        "r.yaml:4: repo.token_env: 'my-token' is not an environment variable name",
        id="bad-token-env",
    ),
    pytest.param(
        MINIMAL.replace("script: train.py", "callable: train.main"),
        "r.yaml:5: run.callable: expected module:function, e.g. train:main, got 'train.main'",
        id="callable-without-colon",
    ),
    pytest.param(
        MINIMAL.replace("script: train.py", "callable: t:f\n  setup: t:build"),
        "r.yaml:6: run.setup: loop mode needs run.setup and run.epochs together; add run.epochs",
        id="setup-without-epochs",
    ),
    pytest.param(
        MINIMAL + "  epochs: 3\n  setup: t:build\n",
        "r.yaml:7: run.setup: loop mode (run.setup, run.epochs) needs run.callable",
        id="loop-mode-with-script",
    ),
    pytest.param(
        MINIMAL + "  restarts: -1\n",
        "r.yaml:6: run.restarts: must be at least 0, got -1",
        id="negative-restarts",
    ),
    pytest.param(
        MINIMAL + "  args: --epochs 3\n",
        "r.yaml:6: run.args: expected a list, got '--epochs 3'",
        id="args-as-string",
    ),
    pytest.param(
        MINIMAL + "  env: {LIST: [1]}\n",
        "r.yaml:6: run.env.LIST: expected a string, got a list",
        id="env-list-value",
    ),
    pytest.param(
        MINIMAL + "  kwargs: {day: 2024-01-01}\n",
        "r.yaml:6: run.kwargs: day is a date (2024-01-01); kwargs hold strings, numbers, "
        "true/false, null, lists and mappings (quote it to make it a string)",
        id="kwargs-date",
    ),
    pytest.param(
        MINIMAL + "install: {requirements: requirements.txt}\n",
        "r.yaml:6: install.requirements: expected auto or a list of requirement file names, "
        "got 'requirements.txt'",
        id="requirements-string",
    ),
    pytest.param(
        MINIMAL + "  match: []\n",
        'r.yaml:6: run.match: give at least one glob, e.g. match: "**/*.pt"',
        id="empty-match",
    ),
    pytest.param(
        MINIMAL + "  prepare: [{script: prep.py, module: data.prep}]\n",
        "r.yaml:6: run.prepare[0]: give exactly one of script or module (got script, module)",
        id="prepare-two-commands",
    ),
    pytest.param(
        MINIMAL + "  prepare: [{args: [x]}]\n",
        "r.yaml:6: run.prepare[0]: give exactly one of script or module, e.g. script: prepare.py",
        id="prepare-no-command",
    ),
    pytest.param(
        MINIMAL + "  prepare: [{script: p.py, creates: []}]\n",
        'r.yaml:6: run.prepare[0].creates: give at least one glob, e.g. creates: "data/train.bin"',
        id="prepare-empty-creates",
    ),
    pytest.param(
        MINIMAL + "  stop_after: soon\n",
        "r.yaml:6: run.stop_after: bad duration 'soon': use seconds (90 or 1.5), units d h m s "
        "(11h30m, 90s, 2d) or HH:MM:SS (11:30:00)",
        id="stop-after-not-a-duration",
    ),
    pytest.param(
        MINIMAL + "run: {script: other.py}\n",
        "r.yaml:6: run: duplicate key; first given at line 4",
        id="duplicate-key",
    ),
    pytest.param(
        MINIMAL + "profiles:\n  smoke:\n    run: {restarts: many}\n",
        "r.yaml:8: profiles.smoke.run.restarts: expected an integer, got 'many'",
        id="bad-value-in-a-profile",
    ),
    pytest.param(
        MINIMAL + "profiles:\n  big:\n    run: {module: pkg.train}\n",
        "r.yaml:4: run: give exactly one of run.script, run.module, run.callable "
        "(got script, module) (with profile 'big')",
        id="profile-that-breaks-a-rule",
    ),
    pytest.param(
        MINIMAL + "profiles:\n  big:\n    profiles: {}\n",
        "r.yaml:8: profiles.big.profiles: profiles cannot nest",
        id="nested-profiles",
    ),
    pytest.param(
        MINIMAL + "  stop_grace: [1]\n",
        "r.yaml:6: run.stop_grace: expected a duration, got a list",
        id="duration-list",
    ),
    pytest.param(
        'name: !!python/object/apply:os.system ["echo hi"]\n',
        "r.yaml:1: YAML tag !!python/object/apply:os.system is not allowed: recipes are plain YAML",
        id="python-tag",
    ),
    pytest.param(
        "name: exp\nrepo: [a, b\nrun: x\n",
        "r.yaml:3: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence)",
        id="yaml-syntax",
    ),
    pytest.param(
        "name: a\n---\nname: b\n",
        "r.yaml:2: a recipe is one YAML document; remove the second '---'",
        id="two-documents",
    ),
    pytest.param("# nothing yet\n", "r.yaml: the recipe is empty", id="empty"),
    pytest.param(
        "- name: x\n", "r.yaml: expected a mapping of keys at the top level, got a list", id="list"
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_recipe_gets_one_exact_line(here: Path, text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_all_problems_at_once_sorted_by_line(here: Path) -> None:
    text = "name: exp\nrepo: {url: u, rev: main}\ngpu: yes\nrun:\n  script: t.py\n  restarts: x\n"
    found = problems(text, overrides=["run.epochs=0"])
    assert found == [
        "r.yaml:2: repo.rev: unknown key 'rev'; did you mean 'ref'?",
        "r.yaml:3: gpu: expected 'optional', 'required' or 'none', got true",
        "r.yaml:6: run.restarts: expected an integer, got 'x'",
        "(from --set): run.epochs: must be at least 1, got 0",
        "(from --set): run.epochs: loop mode needs run.setup and run.epochs together; "
        "add run.setup",
        "(from --set): run.epochs: loop mode (run.setup, run.epochs) needs run.callable",
    ]
    with pytest.raises(RecipeError) as caught:
        load_recipe("r.yaml", environ={})
    assert str(caught.value).startswith("recipe has 3 problems:\n  r.yaml:2: repo.rev:")


def test_env_vars_come_from_environ(here: Path) -> None:
    write(MINIMAL + "  args: ['${DATA:-/d}', '${USER_DIR}']\n")
    assert problems(Path("r.yaml").read_text()) == [
        "r.yaml:6: run.args[1]: environment variable USER_DIR is not set; set it, "
        "or give a default: ${USER_DIR:-value}"
    ]
    recipe = load_recipe("r.yaml", environ={"USER_DIR": "/u"})
    assert recipe.run.args == ("${DATA:-/d}", "${USER_DIR}")  # kept raw; the plan expands them


def test_profile_deep_merges_mappings_and_replaces_lists(here: Path) -> None:
    write("""\
name: exp
repo: {url: u}
data: [{source: a.tar}, {source: b.tar}]
run:
  script: t.py
  args: [--a, "1"]
  env: {A: "1", B: "2"}
  restarts: 4
profiles:
  fast:
    data: [{source: c.tar}]
    run: {args: [--fast], env: {B: "3"}}
  smoke:
    run: {restarts: 0, env: {C: "4"}}
""")
    fast = load_recipe("r.yaml", profile="fast", environ={})
    assert [d.source for d in fast.data] == ["c.tar"]
    assert fast.run.args == ("--fast",)
    assert fast.run.env == {"A": "1", "B": "3"}
    assert fast.run.restarts == 4
    both = load_recipe("r.yaml", profile="fast", smoke=True, environ={})  # profile, then smoke
    assert both.run.env == {"A": "1", "B": "3", "C": "4"} and both.run.restarts == 0
    assert both.run.args == ("--fast",)
    assert load_recipe("r.yaml", environ={}).run.env == {"A": "1", "B": "2"}


def test_smoke_without_a_smoke_profile_is_the_recipe(here: Path) -> None:
    write(MINIMAL)
    assert load_recipe("r.yaml", smoke=True, environ={}) == load_recipe("r.yaml", environ={})


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        (
            MINIMAL + "profiles: {smoke: {}, big: {}}\n",
            "did you mean 'big'? profiles in this recipe: smoke, big",
        ),
        (MINIMAL, "this recipe defines no profiles"),
    ],
)
def test_unknown_profile_is_a_usage_error(here: Path, text: str, hint: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_recipe(write(text), profile="bgi", environ={})
    assert caught.value.message == "no profile 'bgi' in r.yaml"
    assert caught.value.hint == hint
    assert caught.value.exit_code == ExitCode.USAGE


def test_set_overrides_with_yaml_values_and_indexes(here: Path) -> None:
    write(
        MINIMAL + "data:\n  - {source: a.tar}\n  - {source: b.tar}\n"
        "profiles:\n  smoke:\n    run: {restarts: 1}\n"
    )
    digest = "0a" * 32
    recipe = load_recipe(
        "r.yaml",
        smoke=True,
        overrides=[
            "run.restarts=5",  # after the profile, so it wins
            'run.args=["--lr", 0.1]',
            f"data[0].sha256={digest}",
            "data.1.to=/elsewhere",
            "run.env.NEW=abc",  # creates the missing mappings
            "run.time_limit=2h",
            "install=",  # null: the defaults
            "name = spaced-key",
        ],
        environ={},
    )
    assert recipe.run.restarts == 5
    assert recipe.run.args == ("--lr", "0.1")
    assert recipe.data[0].sha256 == digest and recipe.data[1].to == "/elsewhere"
    assert recipe.run.env == {"NEW": "abc"}
    assert recipe.run.time_limit == 7200.0
    assert recipe.install.keep == ("torch", "torchvision", "torchaudio")
    assert recipe.name == "spaced-key"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run.restarts", "--set 'run.restarts': expected KEY=VALUE"),
        ("=5", "--set '=5': expected KEY=VALUE"),
        ("run..restarts=5", "--set 'run..restarts=5': 'run..restarts' is not a dotted key"),
        ("data[2].to=x", "--set 'data[2].to=x': data has 1 item(s), so no data[2]"),
        ("data.x=1", "--set 'data.x=1': data is a list; index it, e.g. data[0]"),
        ("name.first=a", "--set 'name.first=a': name is 'exp', not a mapping or list"),
        (
            "run.args=[1",
            "--set 'run.args=[1': the value is not valid YAML "
            "(expected ',' or ']', but got '<stream end>')",
        ),
        (
            "run.args=!!python/name:os.system",
            "--set 'run.args=!!python/name:os.system': the "
            "value is not valid YAML (could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/name:os.system')",
        ),
    ],
)
def test_malformed_set_is_a_usage_error(here: Path, override: str, message: str) -> None:
    write(MINIMAL + "data: [{source: a.tar}]\n")
    with pytest.raises(UsageError) as caught:
        load_recipe("r.yaml", overrides=[override], environ={})
    assert caught.value.message == message


def test_set_values_are_validated_and_reported_as_from_set(here: Path) -> None:
    assert problems(MINIMAL, overrides=["run={scirpt: t.py}"]) == [
        "(from --set): run.scirpt: unknown key 'scirpt'; did you mean 'script'?",
        "(from --set): run: give exactly one of run.script, run.module, run.callable",
    ]


def test_missing_file_is_a_usage_error(here: Path) -> None:
    with pytest.raises(UsageError, match="recipe file not found: nope.yaml"):
        load_recipe("nope.yaml")


MAPPING: dict[str, Any] = {
    "name": "exp",
    "repo": {"url": "u"},
    "run": {"callable": "t:f", "kwargs": {"opt": {"lr": 0.1, "steps": [1, 2]}}},
    "profiles": {"smoke": {"run": {"kwargs": {"opt": {"lr": 1}}}}},
}


def test_parse_recipe_is_pure() -> None:
    mapping = copy.deepcopy(MAPPING)
    recipe = parse_recipe(mapping)
    assert mapping == MAPPING
    assert recipe.run.kwargs == MAPPING["run"]["kwargs"]
    assert recipe.run.kwargs["opt"] is not mapping["run"]["kwargs"]["opt"]  # nothing shared
    assert recipe.source_path is None and recipe.base_dir == Path.cwd()
    bad = {**copy.deepcopy(MAPPING), "run": {"callable": "t:f", "restarts": "x"}}
    snapshot = copy.deepcopy(bad)
    with pytest.raises(RecipeError):
        parse_recipe(bad)
    assert bad == snapshot


def test_parse_recipe_uses_line_of_and_source_path(tmp_path: Path) -> None:
    lines = {("run",): 7, ("run", "restarts"): 9}
    with pytest.raises(RecipeError) as caught:
        parse_recipe(
            {**MAPPING, "run": {"callable": "t:f", "restarts": "x"}},
            source_path=tmp_path / "x.yaml",
            line_of=lines.get,
        )
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'x.yaml'}:9: run.restarts: expected an integer, got 'x'"
    ]
    with pytest.raises(RecipeError, match="recipe: run.args"):
        parse_recipe({**MAPPING, "run": {"callable": "t:f", "args": "x"}})
    recipe = parse_recipe(MAPPING, source_path=tmp_path / "x.yaml")
    assert recipe.base_dir == tmp_path


def test_to_dict_round_trips_with_yaml_names(here: Path) -> None:
    recipe = load_recipe(write(RECIPE_MD_EXAMPLE), environ={})
    data = recipe.to_dict()
    assert data["run"]["script"] == "train_eval.py" and "callable" in data["run"]
    assert "entry_callable" not in data["run"] and "source_path" not in data
    assert parse_recipe(data) == recipe.with_source(None)


def test_models_are_frozen_and_entry_points_named() -> None:
    recipe = parse_recipe(MAPPING)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.name = "other"  # type: ignore[misc]
    run = RunSpec.from_mapping({"module": "pkg.train"})
    assert (run.entry_kind, run.entry) == ("module", "pkg.train")
    with pytest.raises(Invalid) as caught:
        RunSpec.from_mapping({"script": "a.py", "module": "b", "retsarts": 1})
    assert caught.value.issues == [
        Issue(("retsarts",), "unknown"),  # the cross-key rules run once every key is good
    ]
    with pytest.raises(Invalid, match="give exactly one of run.script, run.module"):
        RunSpec.from_mapping({"script": "a.py", "module": "b"})


def test_run_rules_report_every_problem_at_its_own_key() -> None:
    # The model's rule once raised the first problem only, at "run" itself.
    with pytest.raises(Invalid) as caught:
        RunSpec.from_mapping({"script": "a.py", "module": "b", "epochs": 3})
    assert caught.value.issues == [
        Issue((), "invalid", "give exactly one of run.script, run.module, run.callable "
              "(got script, module)"),
        Issue(("epochs",), "invalid",
              "loop mode needs run.setup and run.epochs together; add run.setup"),
        Issue(("epochs",), "invalid", "loop mode (run.setup, run.epochs) needs run.callable"),
    ]  # fmt: skip


def test_prepare_module_is_checked_like_run_module(here: Path) -> None:
    found = problems(MINIMAL + "  prepare: [{module: data/prepare.py}]\n")
    assert found == [
        "r.yaml:6: run.prepare[0].module: expected a dotted module name, e.g. mypkg.train, "
        "got 'data/prepare.py'"
    ]


def test_launcher_and_nproc(here: Path) -> None:
    recipe = load_recipe(write(MINIMAL), environ={})
    assert (recipe.run.launcher, recipe.run.nproc) == ("python", "auto")
    given = MINIMAL + "  launcher: torchrun\n  nproc: 2\n"
    assert load_recipe(write(given), environ={}).run.nproc == 2
    assert problems(MINIMAL + "  launcher: mpirun\n  nproc: 0\n") == [
        "r.yaml:6: run.launcher: expected 'python' or 'torchrun', got 'mpirun'",
        "r.yaml:7: run.nproc: expected auto or an integer of at least 1, got 0",
    ]
