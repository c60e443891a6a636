"""The recipe as typed, immutable models: one class per section of RECIPE.md (version 1).

Field names are the YAML keys, except where a key shadows a Python builtin: ``run.callable`` is
``RunSpec.entry_callable`` in Python (YAML key ``"callable"``), so ``entry_callable:`` in a
recipe is an unknown key, and every error names the YAML key. Build them with
``load.parse_recipe`` or ``load_recipe``: those collect every problem with its line;
``Model.from_mapping`` raises ``fields.Invalid``. The checks are declared with each
field (``fields``, ``modelkit``), which also give the JSON Schema.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from bootstrap.recipe.durations import parse_duration
from bootstrap.recipe.fields import (
    AutoOrInt,
    Bool,
    Check,
    Custom,
    Duration,
    Int,
    Invalid,
    Issue,
    KeyPath,
    ListOf,
    MapOf,
    NoneIs,
    OneOf,
    Optional,
    Str,
    Text,
    Then,
    describe,
)
from bootstrap.recipe.modelkit import Model, ModelOf, as_data, spec
from bootstrap.values import sha256_digest

SUPPORTED_VERSION = 1
ENTRY_KEYS = ("script", "module", "callable")
ENTRY_MESSAGE = "give exactly one of run.script, run.module, run.callable"


def _globs(example: str, *, may_be_empty: bool = False) -> Check:
    """One glob or a list of them (non-empty unless ``may_be_empty``)."""
    message = f"give at least one glob, e.g. {example}"
    as_list = ListOf(Str()) if may_be_empty else ListOf(Str(), min_items=(1, message))

    class Globs(Check):
        def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
            return (value,) if isinstance(value, str) else as_list(value, path, issues)

        def schema(self) -> dict[str, Any]:
            return {"anyOf": [{"type": "string"}, as_list.schema()]}

    return Globs()


def _requirements(value: object) -> object:
    if value == "auto":
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected auto or a list of requirement file names, got {describe(value)}")


def _json_like(value: object, where: str = "") -> None:
    """kwargs travel to the training as JSON; refuse what JSON cannot carry."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _json_like(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"key {describe(key)} at {where or 'the top'} must be a string")
            _json_like(item, f"{where}.{key}" if where else key)
        return
    raise ValueError(
        f"{where} is {describe(value)}; kwargs hold strings, numbers, true/false, null, "
        "lists and mappings (quote it to make it a string)"
    )


def _is_dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _entry_point(value: str | None) -> str | None:
    if value is not None:
        module, colon, attr = value.partition(":")
        if not (colon and _is_dotted(module) and _is_dotted(attr)):
            raise ValueError(f"expected module:function, e.g. train:main, got {value!r}")
    return value


def _env_name(value: str | None) -> str | None:
    if value is not None and not (value.isidentifier() and value.isascii()):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def _sha256(value: str | None) -> str | None:
    return None if value is None else sha256_digest(value)


def _module_name(value: str | None) -> str | None:
    if value is not None and not _is_dotted(value):
        raise ValueError(f"expected a dotted module name, e.g. mypkg.train, got {value!r}")
    return value


def _script_path(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("expected a script path relative to {repo}, e.g. train.py")
    return value


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        _env_name(key)
    return value


def _kwargs(value: dict[str, Any]) -> dict[str, Any]:
    _json_like(value)
    return value


def _version(value: int) -> int:
    if value != SUPPORTED_VERSION:
        raise ValueError(
            f"unsupported recipe version {value}; this colab-bootstrap reads version "
            f"{SUPPORTED_VERSION} (upgrade colab-bootstrap, or write version: 1)"
        )
    return value


def _name(value: str) -> str:
    if not value or any(not (c.isascii() and (c.isalnum() or c in "._-")) for c in value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_', '-'")
    if value in (".", ".."):
        raise ValueError(f"{value!r} is not a valid name: it names a folder, {{run}}")
    return value


_TEXT_LIST = ListOf(Text())
_OPTIONAL_STR = Optional(Str())
_REQUIREMENTS_SCHEMA = {
    "anyOf": [{"const": "auto", "type": "string"}, {"items": {"type": "string"}, "type": "array"}]
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Storage(Model):
    persist: str = spec(Str(), "auto")
    scratch: str = spec(Str(), "auto")
    # A read-only folder laid out like persist (an earlier run's, e.g. a Kaggle notebook's
    # output attached as an input): checkpoints are restored from it when persist has none.
    resume_from: str | None = spec(_OPTIONAL_STR, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepoSpec(Model):
    url: str = spec(Str())
    ref: str | None = spec(_OPTIONAL_STR, None)
    path: str | None = spec(_OPTIONAL_STR, None)
    into: Literal["scratch", "persist"] = spec(OneOf("scratch", "persist"), "scratch")
    token_env: str | None = spec(Then(_OPTIONAL_STR, _env_name), None)
    submodules: bool = spec(Bool(), False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InstallSpec(Model):
    requirements: Literal["auto"] | tuple[str, ...] = spec(
        Custom(_requirements, _REQUIREMENTS_SCHEMA), "auto"
    )
    packages: tuple[str, ...] = spec(ListOf(Str()), ())
    keep: tuple[str, ...] = spec(ListOf(Str()), ("torch", "torchvision", "torchaudio"))
    pip_args: tuple[str, ...] = spec(ListOf(Str()), ())


def _copy(value: object) -> object:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f"expected auto, true or false, got {describe(value)}")


_COPY_SCHEMA = {"anyOf": [{"const": "auto", "type": "string"}, {"type": "boolean"}]}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataItem(Model):
    source: str = spec(Str())
    to: str = spec(Str(), "{scratch}/data")
    sha256: str | None = spec(Then(_OPTIONAL_STR, _sha256), None)
    # Whether a folder source is copied into `to` (true) or read where it is (false: `to` is
    # not written; {dataN} names the folder). auto: read in place a folder among Kaggle's
    # inputs (read-only, already local), copy everything else.
    copy: bool | Literal["auto"] = spec(Custom(_copy, _COPY_SCHEMA), "auto")


def _one_command(step: PrepareSpec) -> None:
    given = [key for key in ("script", "module") if getattr(step, key) is not None]
    if len(given) != 1:
        raise ValueError(
            "give exactly one of script or module"
            + (f" (got {', '.join(given)})" if given else ", e.g. script: prepare.py")
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrepareSpec(Model):
    """One item of ``run.prepare``: a command run in ``{repo}`` before the training."""

    rules = (_one_command,)

    script: str | None = spec(_OPTIONAL_STR, None)
    module: str | None = spec(Then(_OPTIONAL_STR, _module_name), None)
    args: tuple[str, ...] = spec(_TEXT_LIST, ())
    # Globs relative to {repo}; when given, the command is also re-run if any matches nothing.
    creates: tuple[str, ...] = spec(_globs('creates: "data/train.bin"'), ())

    @property
    def command(self) -> str:
        """The script path or module name, as the recipe gives it."""
        return self.script if self.script is not None else f"-m {self.module}"


def _entry(run: RunSpec) -> None:
    problems = entry_problems(
        {key: value for key, value in as_data(run).items() if value is not None}
    )
    if problems:
        raise Invalid([Issue(key, "invalid", message) for key, message in problems])


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec(Model):
    """``run``. The YAML key ``callable`` is the attribute ``entry_callable``."""

    rules = (_entry,)

    script: str | None = spec(Then(_OPTIONAL_STR, _script_path), None)
    module: str | None = spec(Then(_OPTIONAL_STR, _module_name), None)
    entry_callable: str | None = spec(Then(_OPTIONAL_STR, _entry_point), None, key="callable")
    args: tuple[str, ...] = spec(_TEXT_LIST, ())
    kwargs: dict[str, Any] = spec(NoneIs(Then(MapOf(), _kwargs), dict), factory=dict)
    env: dict[str, str] = spec(NoneIs(Then(MapOf(Text()), _env_names), dict), factory=dict)
    checkpoints: str = spec(Str(), "{ckpt}")
    # Which of the files in `checkpoints` are checkpoints: they choose {checkpoint} and whether
    # to resume. The whole folder is mirrored whatever they say. "checkpoint-*/trainer_state.json"
    # names folder checkpoints by the file that marks them whole (bootstrap.mirror.selection).
    match: tuple[str, ...] = spec(_globs('match: "**/*.pt"'), ("**/*",))
    # More to keep on persist beside the checkpoints (a TensorBoard folder, samples): folders,
    # files or globs, placeholders applied; restored to their place on a new VM.
    keep: tuple[str, ...] = spec(
        NoneIs(_globs('keep: "{repo}/runs"', may_be_empty=True), tuple), ()
    )
    # Globs of what not to mirror (relative to run.checkpoints and to each kept folder's root):
    # big junk such as "**/*.png" or "**/wandb".
    exclude: tuple[str, ...] = spec(
        NoneIs(_globs('exclude: "**/*.png"', may_be_empty=True), tuple), ()
    )
    resume: tuple[str, ...] | None = spec(Optional(_TEXT_LIST), None)
    restarts: int = spec(Int(minimum=0), 3)
    time_limit: float | None = spec(Optional(Duration(parse_duration, positive=True)), None)
    stop_grace: float = spec(Duration(parse_duration), 60.0)
    # What the training (and each run.prepare command) runs on. terminal: one pseudo-terminal
    # as stdin, stdout and stderr, as a Colab `!` cell gives any command (isatty() is true,
    # `stty size` works, what the user types reaches it; output still teed to the logs).
    # none: stdin closed, stdout and stderr a pipe, for code that wants them.
    stdin: Literal["none", "terminal"] = spec(OneOf("none", "terminal"), "terminal")
    setup: str | None = spec(Then(_OPTIONAL_STR, _entry_point), None)
    epochs: int | None = spec(Optional(Int(minimum=1)), None)
    # Commands run in {repo} after the data is staged and before the training (e.g. a
    # dataset's prepare.py); each runs once per VM, see bootstrap.runner.prepare_steps.
    prepare: tuple[PrepareSpec, ...] = spec(NoneIs(ListOf(ModelOf(PrepareSpec)), tuple), ())
    # End this session of the training this long after it is first launched: the training is
    # asked to stop like at the time limit, and the tool exits 0 (a bounded --smoke run).
    stop_after: float | None = spec(Optional(Duration(parse_duration, positive=True)), None)
    # How the training is started: python (one process), or torchrun (torch.distributed.run,
    # one process per GPU on this machine, each rank running the same script, module or
    # callable). nproc: the number of processes under torchrun; auto is every visible GPU, or 1.
    launcher: Literal["python", "torchrun"] = spec(OneOf("python", "torchrun"), "python")
    nproc: int | Literal["auto"] = spec(AutoOrInt(minimum=1), "auto")

    @property
    def entry_kind(self) -> Literal["script", "module", "callable"]:
        """Which of run.script, run.module, run.callable the recipe gives."""
        if self.script is not None:
            return "script"
        return "module" if self.module is not None else "callable"

    @property
    def entry(self) -> str:
        """The value of that key: a script path, a module name, or ``module:function``."""
        for value in (self.script, self.module, self.entry_callable):
            if value is not None:
                return value
        raise RuntimeError("run has no entry point")  # the rules make this unreachable

    @property
    def loop_mode(self) -> bool:
        return self.setup is not None


def entry_problems(run: Mapping[str, Any]) -> list[tuple[KeyPath, str]]:
    """The cross-key rules of ``run``, on a mapping: one entry point; loop mode keys together.

    ``RunSpec`` checks them once it is built; the recipe loader also asks here when a bad key
    kept it from being built, so that every problem is reported at once."""
    problems: list[tuple[KeyPath, str]] = []
    given = [key for key in ENTRY_KEYS if run.get(key) is not None]
    if len(given) != 1:
        detail = f" (got {', '.join(given)})" if given else ""
        problems.append(((), ENTRY_MESSAGE + detail))
    loop = [key for key in ("setup", "epochs") if run.get(key) is not None]
    if len(loop) == 1:
        other = "epochs" if loop == ["setup"] else "setup"
        problems.append(
            ((loop[0],), f"loop mode needs run.setup and run.epochs together; add run.{other}")
        )
    if loop and "callable" not in given:
        problems.append(((loop[0],), "loop mode (run.setup, run.epochs) needs run.callable"))
    return problems


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe(Model):
    """A validated recipe. ``source_path`` and ``base_dir`` are not YAML keys."""

    version: int = spec(Then(Int(), _version), SUPPORTED_VERSION)
    name: str = spec(Then(Str(), _name))
    storage: Storage = spec(NoneIs(ModelOf(Storage), Storage), factory=Storage)
    repo: RepoSpec = spec(ModelOf(RepoSpec))
    install: InstallSpec = spec(NoneIs(ModelOf(InstallSpec), InstallSpec), factory=InstallSpec)
    data: tuple[DataItem, ...] = spec(NoneIs(ListOf(ModelOf(DataItem)), tuple), ())
    gpu: Literal["optional", "required", "none"] = spec(
        OneOf("optional", "required", "none"), "optional"
    )
    run: RunSpec = spec(ModelOf(RunSpec))
    profiles: dict[str, dict[str, Any]] = spec(
        NoneIs(MapOf(NoneIs(MapOf(), dict)), dict), factory=dict
    )

    # Where the recipe came from: not YAML keys, not compared.
    source_path: Path | None = dataclasses.field(default=None, compare=False, repr=False)
    base_dir: Path = dataclasses.field(default_factory=Path.cwd, compare=False, repr=False)

    def with_source(self, source_path: Path | None, base_dir: Path | None = None) -> Recipe:
        """A copy that knows where it came from (the file, and the folder paths start from)."""
        base = base_dir or (source_path.parent if source_path else Path.cwd())
        return dataclasses.replace(self, source_path=source_path, base_dir=base)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain YAML-ready data, keyed by the YAML names (for --dry-run)."""
        return as_data(self)
