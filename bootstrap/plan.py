"""Resolve a validated recipe and the host into a Plan: one object that knows every path.

Every later step reads the Plan and nothing else, so ``--dry-run`` can show exactly what a run
would do, and no step reaches into another's internals.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.errors import DriveNotMounted, Problem, RecipeError
from bootstrap.host import DRIVE_MOUNT_CELL, Host
from bootstrap.mirror.selection import FolderRule, Tree, folder_rules, has_wildcard
from bootstrap.nodes import node_rank
from bootstrap.recipe.models import DataItem, PrepareSpec, Recipe
from bootstrap.recipe.placeholders import expand, expand_env_only
from bootstrap.values import is_scp_like, is_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataStep:
    index: int
    source: str  # a local path (absolute) or a URL (the stager says which schemes it reads)
    dest: Path  # data[].to: unused when the source is used in place
    sha256: str | None
    in_place: bool = False  # a folder read where it is (data[].copy), nothing written

    @property
    def is_url(self) -> bool:
        return is_url(self.source)

    @property
    def folder(self) -> Path:
        """Where the training finds this item's files: ``{dataN}``."""
        return Path(self.source) if self.in_place else self.dest


@dataclass(frozen=True)
class PrepareStep:
    index: int
    command: tuple[str, ...]  # after the interpreter: (script path, *args) or ("-m", module, *args)
    creates: tuple[str, ...]  # globs relative to {repo}

    @property
    def label(self) -> str:
        return f"prepare[{self.index}]"


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    host: Host
    smoke: bool
    persist: Path
    scratch: Path
    persist_origin: str  # where the persist root came from: "--persist", "BOOTSTRAP_PERSIST", ...
    scratch_origin: str
    run_dir: Path  # {run}: logs, state, the checkpoint mirror
    clone_dir: Path  # the root of the clone
    work_dir: Path  # {repo}: the clone with repo.path applied
    repo_url: str  # a URL, or an absolute local path
    checkpoints: Path  # run.checkpoints resolved
    data: tuple[DataStep, ...]
    prepare: tuple[PrepareStep, ...]
    entry: str  # run.script / run.module / run.callable, placeholders applied
    args: tuple[str, ...]
    resume_args: tuple[str, ...] | None  # still holding "{checkpoint}"
    kwargs: dict[str, Any]
    env: dict[str, str]
    deadline: float | None  # epoch seconds at which to stop, from run.time_limit
    values: dict[str, str] = field(default_factory=dict)  # the placeholder values
    kept: tuple[Tree, ...] = ()  # run.keep: more folders the mirror keeps (beside checkpoints)
    time_limit: float | None = None  # run.time_limit, or the host's default (Kaggle)
    time_limit_origin: str = ""  # "run.time_limit", or which default chose it
    # storage.resume_from: a read-only folder laid out like persist (an earlier run's output),
    # restored from when persist holds no checkpoint of this run (runner.kept.restore_source).
    resume_from: Path | None = None
    resume_from_origin: str = ""
    # This machine's place in a group of several (bootstrap.nodes). Only node 0 writes the run
    # folder's shared parts (the checkpoint mirror, state.json, logs); the others restore from
    # it and keep their own state and logs in {run}/nodes/N, so no two nodes write one file.
    node_rank: int = 0

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def state_dir(self) -> Path:
        """Markers for work that dies with the VM (installed packages, staged data)."""
        return self.scratch / ".bootstrap" / self.recipe.name

    @property
    def node_dir(self) -> Path:
        """Where this node keeps its state and logs: ``{run}``, or ``{run}/nodes/N``."""
        return self.run_dir / "nodes" / str(self.node_rank) if self.node_rank else self.run_dir

    @property
    def logs_dir(self) -> Path:
        return self.node_dir / "logs"

    @property
    def mirror_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def folder_checkpoints(self) -> tuple[FolderRule, ...]:
        """The folder checkpoints run.match names (kept whole or not at all)."""
        return folder_rules(self.recipe.run.match)

    @property
    def trees(self) -> tuple[Tree, ...]:
        """Everything the mirror keeps: the checkpoints folder first, then run.keep."""
        main = Tree(self.checkpoints, self.mirror_dir, exclude=self.recipe.run.exclude)
        return (main, *self.kept)

    @property
    def state_file(self) -> Path:
        return self.node_dir / "state.json"

    def resume_for(self, checkpoint: Path) -> list[str]:
        """run.resume with {checkpoint} replaced by the newest matching file."""
        values = {**self.values, "checkpoint": str(checkpoint)}
        return [expand(a, values, {}) for a in (self.resume_args or ())]

    def past_deadline(self, now: float) -> bool:
        """Whether run.time_limit has passed at ``now`` (epoch seconds)."""
        return self.deadline is not None and now >= self.deadline


SMOKE_DIR = "smoke"  # under each storage root: where --smoke runs keep everything
PERSIST_FOLDER = "colab-bootstrap"  # the folder auto persist makes on Drive or in /kaggle/working
# Kaggle ends a GPU or CPU session 12 hours after it started, without a signal, as Colab
# recycles a VM. Stopping at 11h30m leaves time for run.stop_grace, the last mirror pass and
# the notebook's own end (a saved version then writes /kaggle/working as its output).
KAGGLE_TIME_LIMIT = 11.5 * 3600


def default_local_root(kind: str, environ: Mapping[str, str]) -> Path:
    """Off Colab, persist lives in the user's data folder and scratch in the cache folder."""
    home = Path(environ.get("HOME") or Path.home())
    if kind == "persist":
        base = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    else:
        base = Path(environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / PERSIST_FOLDER


def resolve_plan(
    recipe: Recipe,
    host: Host,
    *,
    persist: str | None = None,
    scratch: str | None = None,
    smoke: bool = False,
    environ: Mapping[str, str] | None = None,
    now: float | None = None,
    resume_from: str | None = None,
) -> Plan:
    """Every path and value of the run, from the recipe, the host and the command line."""
    env = dict(os.environ if environ is None else environ)
    base = recipe.base_dir
    roots = _storage_roots(recipe, host, persist, scratch, smoke, env)
    name = recipe.name
    values = {
        "persist": str(roots.persist),
        "scratch": str(roots.scratch),
        "name": name,
        "run": str(roots.persist / "runs" / name),
        "ckpt": str(roots.scratch / "checkpoints" / name),
    }
    repo = recipe.repo
    clone_dir = (roots.persist if repo.into == "persist" else roots.scratch) / "repos" / name
    work_dir = clone_dir / _expand(repo.path, values, env, "repo.path") if repo.path else clone_dir
    values["repo"] = str(work_dir)
    repo_url = _expand(repo.url, values, env, "repo.url")
    if not (is_url(repo_url) or is_scp_like(repo_url)):
        repo_url = str(_path(repo_url, base))
    data = tuple(
        _data_step(i, item, values, env, base, host, str(recipe.source_path or "recipe"))
        for i, item in enumerate(recipe.data)
    )
    values.update({f"data{step.index}": str(step.folder) for step in data})
    run = recipe.run
    # On Colab and Kaggle the machine's own clock runs from the session's start; elsewhere
    # nothing ends the machine, so the limit counts from this run.
    on_platform = host.on_colab or host.on_kaggle
    time_zero = host.boot_time if on_platform else (time.time() if now is None else now)
    time_limit, time_limit_origin = run.time_limit, "run.time_limit"
    if time_limit is None and host.on_kaggle:
        time_limit, time_limit_origin = KAGGLE_TIME_LIMIT, "Kaggle's default"
    previous, previous_origin = _resume_from(recipe, resume_from, env)
    return Plan(
        recipe=recipe,
        host=host,
        smoke=smoke,
        persist=roots.persist,
        scratch=roots.scratch,
        persist_origin=roots.persist_origin,
        scratch_origin=roots.scratch_origin,
        run_dir=Path(values["run"]),
        clone_dir=clone_dir,
        work_dir=work_dir,
        repo_url=repo_url,
        checkpoints=_path(_expand(run.checkpoints, values, env, "run.checkpoints"), base),
        data=data,
        prepare=tuple(
            _prepare_step(i, step, work_dir, values, env) for i, step in enumerate(run.prepare)
        ),
        entry=_expand(run.entry, values, env, f"run.{run.entry_kind}"),
        args=tuple(_expand(a, values, env, "run.args") for a in run.args),
        # {checkpoint} is only known at launch; ${VAR} is read now, like everything else.
        resume_args=(
            tuple(expand_env_only(a, env) for a in run.resume) if run.resume is not None else None
        ),
        kwargs=_expand_tree(dict(run.kwargs), values, env, "run.kwargs"),
        env={k: _expand(v, values, env, f"run.env.{k}") for k, v in run.env.items()},
        deadline=time_zero + time_limit if time_limit is not None else None,
        values=values,
        kept=_kept_trees(run.keep, run.exclude, roots, work_dir, values, env, base),
        time_limit=time_limit,
        time_limit_origin=time_limit_origin if time_limit is not None else "",
        resume_from=previous,
        resume_from_origin=previous_origin,
        node_rank=node_rank(env),
    )


def _resume_from(
    recipe: Recipe, cli_value: str | None, env: Mapping[str, str]
) -> tuple[Path | None, str]:
    """storage.resume_from: the command line, then the environment, then the recipe."""
    for value, origin in (
        (cli_value, "--resume-from"),
        (env.get("BOOTSTRAP_RESUME_FROM"), "BOOTSTRAP_RESUME_FROM"),
        (recipe.storage.resume_from, "storage.resume_from"),
    ):
        if value:
            text = _expand(value, {}, env, "storage.resume_from")
            return _path(text, recipe.base_dir), origin
    return None, ""


def _kept_trees(
    entries: tuple[str, ...],
    exclude: tuple[str, ...],
    roots: _Roots,
    work_dir: Path,
    values: Mapping[str, str],
    env: Mapping[str, str],
    base: Path,
) -> tuple[Tree, ...]:
    """run.keep as trees: one per root the entries lie under ({repo}, {scratch}, or the
    filesystem's root), each kept in {run}/kept/<repo|scratch|root> with the entries as globs
    relative to it. An entry on persist already is left where it is."""
    run_dir = Path(values["run"])
    includes: dict[str, list[str]] = {}
    origins: dict[str, Path] = {}
    for index, entry in enumerate(entries):
        key = f"run.keep[{index}]"
        text = _expand(entry, values, env, key)
        parts = Path(text).parts
        cut = next((i for i, part in enumerate(parts) if has_wildcard(part)), None)
        # The folder before the first wildcard, and the glob from there ("." when it starts).
        fixed = _path(text if cut is None else str(Path(*parts[:cut])), base)
        pattern = None if cut is None else "/".join(parts[cut:])
        label, root = _kept_root(fixed, roots, work_dir)
        if label is None:
            log.info("%s (%s) is on persist already: it is kept where it is", key, fixed)
            continue
        relative = fixed.relative_to(root).as_posix() if fixed != root else ""
        if pattern is not None:
            globs = [f"{relative}/{pattern}" if relative else pattern]
        elif relative:
            globs = [relative, f"{relative}/**/*"]  # a file, or a folder and all inside it
        else:
            globs = ["**/*"]
        includes.setdefault(label, []).extend(globs)
        origins[label] = root
    return tuple(
        Tree(origins[label], run_dir / "kept" / label, tuple(globs), exclude, f"kept/{label}")
        for label, globs in includes.items()
    )


def _kept_root(path: Path, roots: _Roots, work_dir: Path) -> tuple[str | None, Path]:
    """Which root a run.keep entry lies under: ("repo", {repo}), ("scratch", ...), ("root",
    /), or (None, persist) when persist holds it already."""
    for label, root in (("persist", roots.persist), ("repo", work_dir), ("scratch", roots.scratch)):
        if path == root or root in path.parents:
            return (None, root) if label == "persist" else (label, root)
    return "root", Path(path.anchor)


@dataclass(frozen=True)
class _Roots:
    persist: Path
    scratch: Path
    persist_origin: str  # which setting chose it, for --dry-run
    scratch_origin: str


def _storage_roots(
    recipe: Recipe,
    host: Host,
    persist: str | None,
    scratch: str | None,
    smoke: bool,
    env: Mapping[str, str],
) -> _Roots:
    """The two storage roots: the command line, then the environment, then the recipe."""
    base = recipe.base_dir
    persist_root, persist_origin = _storage_root(
        "persist", persist, env, recipe.storage.persist, host, smoke, base
    )
    scratch_root, scratch_origin = _storage_root(
        "scratch", scratch, env, recipe.storage.scratch, host, smoke, base
    )
    for kind, root, origin in (
        ("persist", persist_root, persist_origin),
        ("scratch", scratch_root, scratch_origin),
    ):
        if host.on_unmounted_drive(root):
            raise DriveNotMounted(
                f"storage.{kind} is {root} ({origin}), on Google Drive, but Drive is not "
                f"mounted at {host.content_dir / 'drive'}: the run's files would go to the "
                "VM's disk and be lost with it",
                hint=f"run `{DRIVE_MOUNT_CELL}` in a notebook cell first",
            )
    if not smoke:
        return _Roots(persist_root, scratch_root, persist_origin, scratch_origin)
    # A smoke run is a run of its own: off Colab both would share the same roots, and the
    # smoke run's checkpoints would resume the real run, or its end mark it finished.
    return _Roots(
        persist_root / SMOKE_DIR,
        scratch_root / SMOKE_DIR,
        persist_origin + f", {SMOKE_DIR}/ for --smoke",
        scratch_origin + f", {SMOKE_DIR}/ for --smoke",
    )


def _data_step(
    index: int,
    item: DataItem,
    values: Mapping[str, str],
    env: Mapping[str, str],
    base: Path,
    host: Host,
    recipe_name: str,
) -> DataStep:
    key = f"data[{index}]"
    source = _expand(item.source, values, env, f"{key}.source")
    if not is_url(source):
        source = str(_path(source, base))
    if item.copy is False and is_url(source):
        raise RecipeError(
            [
                Problem(
                    recipe_name,
                    None,
                    f"{key}.copy",
                    "copy: false reads a folder where it is, but the source is a URL: "
                    "remove copy: false to download it",
                )
            ]
        )
    # auto: a folder among Kaggle's inputs is read where it is. They are read-only and
    # already on the machine; a copy would cost time and scratch space for nothing.
    in_place = item.copy is False or (
        item.copy == "auto"
        and not is_url(source)
        and host.in_kaggle_input(Path(source))
        and os.path.isdir(source)
    )
    return DataStep(
        index=index,
        source=source,
        dest=_path(_expand(item.to, values, env, f"{key}.to"), base),
        sha256=item.sha256,
        in_place=in_place,
    )


def _prepare_step(
    index: int, step: PrepareSpec, work_dir: Path, values: Mapping[str, str], env: Mapping[str, str]
) -> PrepareStep:
    key = f"run.prepare[{index}]"
    if step.script is not None:
        head: tuple[str, ...] = (
            str(work_dir / _expand(step.script, values, env, f"{key}.script")),
        )
    else:
        head = ("-m", str(step.module))
    return PrepareStep(
        index=index,
        command=(*head, *(_expand(a, values, env, f"{key}.args") for a in step.args)),
        creates=tuple(_expand(g, values, env, f"{key}.creates") for g in step.creates),
    )


def _storage_root(
    kind: str,
    cli_value: str | None,
    env: Mapping[str, str],
    recipe_value: str,
    host: Host,
    smoke: bool,
    base: Path,
) -> tuple[Path, str]:
    env_name = f"BOOTSTRAP_{kind.upper()}"
    for value, origin in (
        (cli_value, f"--{kind}"),
        (env.get(env_name), env_name),
        (recipe_value, f"storage.{kind}"),
    ):
        if value and value != "auto":
            return _path(_expand(value, {}, env, f"storage.{kind}"), base), origin
    # auto
    if host.on_kaggle:
        # /kaggle/working is what a saved version keeps (and "Files" persistence carries to
        # the next session), but only 20 GB of it: the clone, the data and the checkpoints as
        # written go to local disk outside it, the folder Kaggle's template names for that.
        if kind == "scratch":
            return host.kaggle_temp, "auto (Kaggle local disk, not saved)"
        return (
            host.kaggle_working / PERSIST_FOLDER,
            "auto (Kaggle /kaggle/working, saved as output)",
        )
    if host.on_colab and not smoke:
        if kind == "scratch":
            return host.content_dir, "auto (Colab local disk)"
        if not host.drive_mounted:
            raise DriveNotMounted(
                f"storage.persist is auto on Colab, but Google Drive is not mounted at "
                f"{host.drive_root}",
                hint=f"run `{DRIVE_MOUNT_CELL}` in a notebook cell first, "
                f"or pass --persist PATH to keep the run state elsewhere",
            )
        return host.drive_root / PERSIST_FOLDER, "auto (Google Drive)"
    return default_local_root(kind, env), "auto (local folder)"


def _expand(text: str, values: Mapping[str, str], env: Mapping[str, str], key: str) -> str:
    try:
        return expand(text, values, env)
    except (KeyError, ValueError) as exc:
        reason = exc.args[0] if exc.args else str(exc)
        raise RecipeError([Problem("recipe", None, key, str(reason))]) from None


def _expand_tree(value: Any, values: Mapping[str, str], env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str):
        return _expand(value, values, env, key)
    if isinstance(value, dict):
        return {k: _expand_tree(v, values, env, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(v, values, env, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _path(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
