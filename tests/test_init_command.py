"""``python -m bootstrap init URL``: the clone, the written recipe and its checks, the blocking
TODOs, re-running, errors, the Python API, and a real run of what it writes."""

from __future__ import annotations

import re
import shutil
import tarfile
import textwrap
from pathlib import Path

import pytest
import yaml

from bootstrap.errors import RecipeError
from bootstrap.recipe.load import load_recipe
from tests.conftest import RECIPES, Sandbox, git

TRAIN = """\
import argparse, os, torch

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out_dir", default="out")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--resume", default=None, metavar="PATH")
    args = p.parse_args()
    for epoch in range(args.epochs):
        loss.backward()
        torch.save(state, os.path.join(args.out_dir, f"epoch-{epoch}.pt"))

if __name__ == "__main__":
    main()
"""


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "first", cwd=root)
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "src" / "my-net", {"train.py": TRAIN, "requirements.txt": "tqdm\n"})


def init(sandbox: Sandbox, *args: str | Path) -> tuple[int, str, str]:
    done = sandbox.cli("init", *args, "--scratch", sandbox.scratch)
    return done.returncode, done.stdout, done.stderr


def test_init_writes_a_commented_recipe_with_blocking_todos(sandbox: Sandbox, repo: Path) -> None:
    code, out, err = init(sandbox, repo)
    assert code == 0, err
    path = sandbox.root / "my-net.yaml"
    assert out.strip() == str(path)
    text = path.read_text()
    data = yaml.safe_load(text)
    assert data["run"]["script"] == "train.py"
    assert data["run"]["args"] == ["--data_dir", "{scratch}/data", "--out_dir", "{ckpt}"]
    assert data["run"]["resume"] == ["--resume", "{checkpoint}"]
    assert data["run"]["match"] == "epoch-*.pt"
    assert data["data"][0]["source"] == "{persist}/datasets/{TODO}.tar.gz"
    assert data["repo"]["url"] == str(repo)
    # Each inferred value says where it came from and how sure init is.
    assert "# resume: --resume PATH (given the newest checkpoint) (train.py:8) [sure]" in text
    assert "(train.py:12) [sure]" in text
    # The header and the summary name the blocking line, and the loader refuses exactly there.
    line = int(re.search(r"data\[0\]\.source \(line (\d+)", text).group(1))  # type: ignore[union-attr]
    assert text.splitlines()[line - 1].strip().startswith("- source:")
    assert f"line {line}: data[0].source" in err
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, environ={})
    assert [(p.line, p.key) for p in caught.value.problems] == [(line, "data[0].source")]
    assert "{TODO}" in caught.value.problems[0].message
    # --dry-run fails there too, and passes once the TODO is filled.
    done = sandbox.cli(path, "--dry-run")
    assert done.returncode == 2 and "data[0].source" in done.stderr
    archive = shutil.copy(RECIPES / "demo" / "data.tar.gz", sandbox.root / "data.tar.gz")
    path.write_text(text.replace("{persist}/datasets/{TODO}.tar.gz", str(archive)))
    done = sandbox.cli(path, "--dry-run", env={"BOOTSTRAP_GPU": "1"})
    assert done.returncode == 0, done.stderr
    assert "--resume" not in done.stdout  # no checkpoint yet: no resume args


def test_init_twice_then_edited_then_forced(sandbox: Sandbox, repo: Path) -> None:
    out = sandbox.root / "recipes" / "net.yaml"
    assert init(sandbox, repo, "-o", out)[0] == 0
    first = out.read_text()
    code, _, err = init(sandbox, repo, "-o", out)
    assert code == 0 and f"unchanged: {out}" in err
    # A new commit changes what init writes; an unedited recipe is simply replaced.
    (repo / "README.md").write_text("python train.py --data_dir x\n")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "readme", cwd=repo)
    code, _, err = init(sandbox, repo, "-o", out)
    assert code == 0 and f"replaced {out}" in err and out.read_text() != first
    # The user's edit is never lost without --force.
    edited = out.read_text().replace("restarts: 3", "restarts: 5")
    out.write_text(edited)
    code, _, err = init(sandbox, repo, "-o", out)
    assert code == 2
    assert "exists and is not as init wrote it" in err and "--force" in err
    assert out.read_text() == edited
    code, _, err = init(sandbox, repo, "-o", out, "--force")
    assert code == 0 and "restarts: 3" in out.read_text()


def test_shallow_clone_at_a_tag(sandbox: Sandbox, repo: Path) -> None:
    git("tag", "v1", cwd=repo)
    (repo / "later.py").write_text("x = 1\n")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "later", cwd=repo)
    code, _, err = init(sandbox, f"file://{repo}", "--ref", "v1")
    assert code == 0, err
    clone = sandbox.scratch / "init" / "my-net"
    assert git("rev-parse", "--is-shallow-repository", cwd=clone).strip() == "true"
    assert not (clone / "later.py").exists()
    data = yaml.safe_load((sandbox.root / "my-net.yaml").read_text())
    assert data["repo"]["ref"] == "v1" and data["repo"]["url"] == f"file://{repo}"


def test_a_repo_init_cannot_read_well(sandbox: Sandbox, tmp_path: Path) -> None:
    """No entry point, no flags: the recipe still loads once its TODOs are filled."""
    repo = make_repo(tmp_path / "odd", {"net.py": "class Net:\n    pass\n"})
    code, _, err = init(sandbox, repo)
    assert code == 0, err
    text = (sandbox.root / "odd.yaml").read_text()
    assert 'script: "{TODO}"' in text and "run.script (line" in text
    assert "loop mode" in text
    filled = sandbox.root / "filled.yaml"
    filled.write_text(text.replace("{TODO}", "net.py"))
    assert load_recipe(filled, environ={}).run.script == "net.py"


def test_errors_name_the_problem_and_the_fix(sandbox: Sandbox, repo: Path) -> None:
    code, _, err = init(sandbox, repo, "--path", "nope")
    assert code == 3 and "--path 'nope' is not a folder" in err and "fix:" in err
    code, _, err = init(sandbox, sandbox.root / "missing")
    assert code == 3 and "does not exist" in err
    assert not (sandbox.root / "missing.yaml").exists()


def test_python_api(tmp_path: Path, repo: Path) -> None:
    import bootstrap

    result = bootstrap.init_recipe(
        str(repo), output=tmp_path / "r.yaml", scratch=str(tmp_path / "scratch")
    )
    assert result.action == "written" and result.path.read_text() == result.text
    assert [b.key for b in result.blockers] == ["data[0].source"]
    assert result.reading.resume.kind == "path"


@pytest.mark.slow
def test_the_recipe_init_writes_runs_and_resumes(sandbox: Sandbox, tmp_path: Path) -> None:
    """The demo repo (a real training script): init, fill the data line, run it with --smoke,
    then train on from its checkpoint with the resume args init chose."""
    repo = make_repo(
        tmp_path / "demo-net",
        {
            "train.py": (RECIPES / "demo" / "repo" / "train.py").read_text(),
            "README.md": "python train.py --data_root data --logdir out --epochs 3\n",
        },
    )
    assert init(sandbox, repo)[0] == 0
    path = sandbox.root / "demo-net.yaml"
    text = path.read_text()
    data = yaml.safe_load(text)
    assert data["run"]["resume"] == ["--resume", "{checkpoint}"]
    assert data["run"]["match"] == "epoch-*.pt"
    assert data["profiles"]["smoke"]["run"]["args"][-2:] == ["--epochs", "1"]
    # The demo's archive holds a folder, toy/: repack its files flat, as the data line's
    # comment asks for (a top folder would be a second edit, in the args).
    archive = tmp_path / "toy.tar.gz"
    with (
        tarfile.open(RECIPES / "demo" / "data.tar.gz") as src,
        tarfile.open(archive, "w:gz") as out,
    ):
        for member in src.getmembers():
            if member.isfile():
                data = src.extractfile(member)
                member.name = member.name.rsplit("/", 1)[-1]
                out.addfile(member, data)
    # The one edit: the data line.
    path.write_text(text.replace("{persist}/datasets/{TODO}.tar.gz", str(archive)))
    done = sandbox.cli(path, "--smoke", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch 0" in done.stdout
    args = (
        '["--data_root", "{scratch}/data", "--logdir", "{ckpt}", "--epochs", "2", '
        '"--epoch_seconds", "0"]'
    )
    done = sandbox.cli(path, "--smoke", "--extend", "--set", f"run.args={args}", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from epoch-000.pt: starting at epoch 1" in done.stdout


def test_help_mentions_init(sandbox: Sandbox) -> None:
    assert "bootstrap init URL" in sandbox.cli("--help").stdout
    shown = sandbox.cli("init", "--help")
    assert shown.returncode == 0 and "--ref" in shown.stdout and "--force" in shown.stdout


def test_textwrap_is_used() -> None:  # keeps the import honest for readers of TRAIN
    assert textwrap.dedent(TRAIN) == TRAIN


def test_a_recipe_the_loader_refuses_is_never_written(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """init checks what it wrote with the loader: a problem other than a {TODO} is init's own
    bug, reported as such, and no file is left behind."""
    from bootstrap.errors import BootstrapError
    from bootstrap.init import command
    from bootstrap.init.render import Item

    real = command.build_items

    def broken(reading: command.Reading) -> list[Item]:
        items = real(reading)
        run = next(i for i in items if i.key == "run")
        run.value.append(Item("restarts", -1))
        return items

    monkeypatch.setattr(command, "build_items", broken)
    out = tmp_path / "r.yaml"
    with pytest.raises(BootstrapError, match="a bug in init") as caught:
        command.init_recipe(str(repo), output=out, scratch=str(tmp_path / "scratch"))
    assert "run.restarts" in caught.value.message
    assert not out.exists()


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://github.com/karpathy/nanoGPT.git", "nanoGPT"),
        ("git@github.com:me/llama2.c.git", "llama2.c"),
        ("https://host/group/my repo/", "my-repo"),
        ("/tmp/some/folder/", "folder"),
    ],
)
def test_the_recipe_is_named_after_the_repo(url: str, name: str) -> None:
    from bootstrap.init.command import repo_name

    assert repo_name(url) == name


def test_a_token_env_that_is_empty_is_named(sandbox: Sandbox, repo: Path) -> None:
    code, _, err = init(sandbox, repo, "--token-env", "MY_TOKEN_XYZ")
    assert code == 3 and "--token-env names MY_TOKEN_XYZ" in err and "userdata.get" in err
    done = sandbox.cli(
        "init", repo, "--token-env", "MY_TOKEN_XYZ", "--scratch", sandbox.scratch,
        env={"MY_TOKEN_XYZ": "secret-value"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (sandbox.root / "my-net.yaml").read_text()
    assert "token_env: MY_TOKEN_XYZ" in text and "secret-value" not in text


def test_init_clones_into_the_runs_own_scratch_on_kaggle(tmp_path: Path) -> None:
    from bootstrap.init.command import scratch_root

    (tmp_path / "working").mkdir()
    env = {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "BOOTSTRAP_KAGGLE_DIR": str(tmp_path)}
    assert scratch_root(None, env) == tmp_path / "temp"
    assert scratch_root(None, {**env, "BOOTSTRAP_SCRATCH": "/x"}) == Path("/x")
