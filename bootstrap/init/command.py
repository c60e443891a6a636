"""``init``: from a repo URL to a recipe the user can run at once or edit.

Clone (shallow, into ``{scratch}/init/NAME``, with the run's own clone step), read the clone
without running any of it, write the recipe with a comment on every inferred value, and check
it with the recipe loader: the only problems allowed are the ``{TODO}`` values that block, and
once they are filled the recipe must load, with its smoke profile too, and resolve to a plan.

An existing recipe is replaced only while it is exactly what ``init`` wrote (its last line is a
digest of the lines above); one the user edited needs ``force``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bootstrap.errors import BootstrapError, RecipeError, RepoError, UsageError
from bootstrap.init.checkpoints import choose_folder, find_saves
from bootstrap.init.data import plan_data
from bootstrap.init.draft import TODO, Reading, build_items
from bootstrap.init.entry import config_args, find_entry
from bootstrap.init.flags import CliChoice, read_cli
from bootstrap.init.gpu import plan_gpu
from bootstrap.init.render import Blocker, as_data, comment_lines, render
from bootstrap.init.requirements import plan_install
from bootstrap.init.resume import choose_resume
from bootstrap.init.smoke import plan_smoke
from bootstrap.init.source import PyFile, RepoScan
from bootstrap.progress import ProgressFactory, no_progress

DIGEST_PREFIX = "# init digest: "


@dataclass
class InitResult:
    path: Path  # the recipe file
    text: str
    action: str  # "written", "replaced" (an unedited init recipe), "unchanged"
    clone: Path
    commit: str
    reading: Reading
    blockers: list[Blocker] = field(default_factory=list)
    todos: list[str] = field(default_factory=list)


def repo_name(url: str) -> str:
    """The last part of a URL or path, without ``.git``, as a recipe name."""
    tail = re.split(r"[/:\\]", url.rstrip("/\\"))[-1].removesuffix(".git")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip(".-")
    return name or "recipe"


def scratch_root(scratch: str | None, environ: Mapping[str, str]) -> Path:
    """Where the run's clone would go: --scratch, BOOTSTRAP_SCRATCH, Colab's /content, or the
    local cache folder (Kaggle's /kaggle/temp), as for a run with ``storage.scratch: auto``."""
    from bootstrap.host import detect_host
    from bootstrap.plan import default_local_root

    chosen = scratch or environ.get("BOOTSTRAP_SCRATCH")
    if chosen:
        return Path(chosen).expanduser().absolute()
    host = detect_host(environ)
    if host.on_kaggle:
        return host.kaggle_temp
    return host.content_dir if host.on_colab else default_local_root("scratch", environ)


def init_recipe(
    url: str,
    *,
    output: Path | str | None = None,
    ref: str | None = None,
    path: str | None = None,
    name: str | None = None,
    force: bool = False,
    scratch: str | None = None,
    token_env: str | None = None,
    environ: Mapping[str, str] | None = None,
    progress: ProgressFactory = no_progress,
) -> InitResult:
    """Clone ``url`` (a git URL or a local folder), read it, and write a recipe for it.

    ``token_env`` names an environment variable holding a token for a private https repo, as
    ``repo.token_env`` does in a recipe (and is written there)."""
    from bootstrap.repo.checkout import describe_url, resolve_local_path, sync_repo

    env = os.environ if environ is None else environ
    # A folder of a repo of many examples is named after both: examples-imagenet.
    name = name or repo_name(url) + (f"-{repo_name(path)}" if path else "")
    target = Path(output) if output is not None else Path.cwd() / f"{name}.yaml"
    target = target.expanduser().absolute()
    _check_target(target, force)  # before the clone: refuse early, at no cost
    clone = scratch_root(scratch, env) / "init" / name
    token = None
    if token_env:
        token = env.get(token_env, "")
        if not token:
            raise RepoError(
                f"--token-env names {token_env}, but that environment variable is empty",
                hint=f"set {token_env} first (on Colab: import os; from google.colab import "
                f"userdata; os.environ['{token_env}'] = userdata.get('{token_env}'))",
            )
    result = sync_repo(url, clone, ref=ref, token=token, progress=progress, shallow=True)
    root = clone / path if path else clone
    if not root.is_dir():
        raise RepoError(
            f"--path {path!r} is not a folder in {describe_url(url)}",
            hint="give a subfolder of the repo, relative to its root",
        )
    local = resolve_local_path(url)
    recipe_url = str(local) if local is not None else describe_url(url)
    reading = read_repo(RepoScan(root), recipe_url, name, ref, path, result.commit)
    reading.token_env = token_env
    text, blockers = recipe_text(reading, target.name)
    check_recipe(text, target, blockers)
    action = _write(target, text)
    return InitResult(
        target, text, action, clone, result.commit, reading, blockers, list(reading.todos)
    )


def read_repo(
    scan: RepoScan, url: str, name: str, ref: str | None, path: str | None, commit: str
) -> Reading:
    """Everything init reads from one clone (``scan.root`` is where the training runs)."""
    entry = find_entry(scan)
    if entry.chosen is not None:
        entry.chosen.config = config_args(scan, entry.chosen)
    cli = read_cli(scan, entry.chosen.file) if entry.chosen else CliChoice(None)
    files = cli.files or scan.python_files()
    # Names that are flags in the code itself (configurator globals, fire's parameters) are
    # never followed to their default when reading a path: the user sets them.
    stop = {f.dest for f in cli.cli.flags} if cli.cli and _flags_are_names(cli) else set()
    framework = _framework(cli, files)
    saves = find_saves(files, stop)
    if not saves:
        saves = find_saves([f for f in scan.python_files() if f not in files], stop)
    return Reading(
        url=url,
        name=name,
        ref=ref,
        path=path,
        commit=commit,
        entry=entry,
        cli=cli,
        install=plan_install(scan, files, path),
        data=plan_data(scan, cli.cli, files),
        gpu=plan_gpu(cli.cli, files),
        checkpoints=choose_folder(cli.cli, saves, framework),
        resume=choose_resume(cli.cli, files, stop),
        smoke=plan_smoke(cli.cli),
        notes=scan.notes,
    )


def _flags_are_names(cli: CliChoice) -> bool:
    return cli.cli is not None and cli.cli.framework.startswith(("configurator", "fire"))


def _framework(cli: CliChoice, files: list[PyFile]) -> str:
    text = "\n".join(f.text for f in files)
    if cli.cli is not None and "TrainingArguments" in cli.cli.framework:
        return "hf"
    if "TrainingArguments(" in text and "transformers" in text:
        return "hf"
    if "lightning" in text.lower() and ("Trainer(" in text or "LightningCLI" in text):
        return "lightning"
    return ""


def recipe_text(reading: Reading, file_name: str) -> tuple[str, list[Blocker]]:
    items = build_items(reading)
    body, blockers = render(items)
    loaded = yaml.safe_load("\n".join(body))
    if loaded != as_data(items):  # a bug in the renderer, never the user's doing
        raise BootstrapError(f"init wrote YAML that does not read back as meant: {loaded!r}")
    smoke = "profiles" in loaded
    # The header names the blocking lines, so its own length shifts them: measure it first.
    head = _header(reading, file_name, blockers, 0, smoke)
    head = _header(reading, file_name, blockers, len(head), smoke)
    for blocker in blockers:
        blocker.line += len(head)
    text = "\n".join([*head, *body]) + "\n"
    return text + DIGEST_PREFIX + _digest(text) + "\n", blockers


def _header(
    reading: Reading, file_name: str, blockers: list[Blocker], offset: int, smoke: bool
) -> list[str]:
    where = f" (folder {reading.path})" if reading.path else ""
    text = [
        f"Recipe for {reading.url}{where}, written by `python -m bootstrap init` from "
        f"commit {reading.commit[:12]}.",
        "Each value init inferred says where it read it (file:line) and how sure it is: [sure] "
        "read from a declaration; [likely] a name or pattern that usually means it; [guess] "
        "check it.",
        "A value holding {TODO} blocks: the loader (and --dry-run) refuse this file until you "
        "replace it. TODO in a comment is a question that does not block.",
    ]
    if blockers:
        text.append(
            "Blocking: "
            + "; ".join(f"{b.key} (line {b.line + offset}, {b.why})" for b in blockers)
            + "."
        )
    else:
        text.append("Nothing blocks: it runs as it is.")
    text += [
        "",
        f"  python -m bootstrap {file_name} --dry-run   # check it; changes nothing",
        f"  python -m bootstrap {file_name}             # run it",
    ]
    if smoke:
        text.append(f"  python -m bootstrap {file_name} --smoke     # a short run on a CPU")
    if reading.notes:
        text += ["", "Not read: " + "; ".join(reading.notes[:10])]
    lines = []
    for paragraph in text:
        lines += comment_lines(paragraph, "")
    return lines


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unedited(text: str) -> bool:
    """Whether ``text`` is a recipe exactly as init wrote it (its digest line still fits)."""
    body, sep, last = text.rstrip("\n").rpartition("\n")
    return bool(sep) and last == DIGEST_PREFIX + _digest(body + "\n")


def _check_target(target: Path, force: bool) -> None:
    if force or not target.exists():
        return
    if target.is_dir():
        raise UsageError(f"{target} is a folder", hint="give -o a file name, e.g. -o my-run.yaml")
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    if not unedited(text):
        raise UsageError(
            f"{target} exists and is not as init wrote it (edited, or another file): "
            "init leaves it as it is",
            hint="pass --force to overwrite it, or -o another path",
        )


def _write(target: Path, text: str) -> str:
    from bootstrap.fsutil import atomic_write_text

    if target.exists():
        try:
            if target.read_text(encoding="utf-8") == text:
                return "unchanged"
        except (OSError, UnicodeDecodeError):
            pass
        action = "replaced"
    else:
        action = "written"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, text)
    return action


def check_recipe(text: str, target: Path, blockers: list[Blocker]) -> None:
    """The recipe must fail to load only at its {TODO}s, and load once they are filled."""
    from bootstrap.recipe.load import load_recipe

    with tempfile.TemporaryDirectory(prefix="bootstrap-init-") as tmp:
        draft = Path(tmp) / target.name
        draft.write_text(text, encoding="utf-8")
        try:
            load_recipe(draft, environ={})
        except RecipeError as exc:
            others = [p for p in exc.problems if TODO not in p.message]
            if others or not blockers:
                raise BootstrapError(
                    "init wrote a recipe the loader refuses (a bug in init):\n"
                    + "\n".join(f"  {p}" for p in exc.problems),
                    hint="report it with the repo's URL; edit the recipe by hand meanwhile",
                ) from None
        filled = text.replace(TODO, "TODO")
        draft.write_text(filled, encoding="utf-8")
        # What --dry-run does (load, overlay, resolve every path), on a made-up machine with a
        # GPU and no Colab, so that only the recipe itself can fail.
        from bootstrap.options import Options
        from bootstrap.runner.pipeline import make_plan

        machine = {"BOOTSTRAP_COLAB": "0", "BOOTSTRAP_KAGGLE": "0", "BOOTSTRAP_GPU": "1",
                   "HOME": tmp}  # fmt: skip
        for smoke in (False, True):
            options = Options(
                recipe=draft, smoke=smoke, persist=f"{tmp}/persist", scratch=f"{tmp}/scratch"
            )
            try:
                make_plan(options, machine)
            except RecipeError as exc:
                raise BootstrapError(
                    "init wrote a recipe that does not load even with its TODOs filled (a bug "
                    "in init):\n" + "\n".join(f"  {p}" for p in exc.problems),
                    hint="report it with the repo's URL; edit the recipe by hand meanwhile",
                ) from None
