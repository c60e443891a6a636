"""The recipe as typed, immutable models: one class per section of RECIPE.md (version 1).

Field names are the YAML keys, except where a key shadows a Python builtin: ``run.callable`` is
``RunSpec.entry_callable`` in Python (alias ``"callable"``). Models are built from YAML mappings by
alias, so ``entry_callable:`` in a recipe is an unknown key, and every error names the YAML key.
Build them with ``bootstrap.recipe.parse_recipe`` or ``load_recipe``: those collect every
problem with its line; building a model directly raises pydantic's ValidationError.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from bootstrap.durations import parse_duration

SUPPORTED_VERSION = 1
ENTRY_KEYS = ("script", "module", "callable")
ENTRY_MESSAGE = "give exactly one of run.script, run.module, run.callable"


def describe(value: object) -> str:
    """A value as an error message shows it: 'three', 3, null, a list."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"a date ({value})"
    return f"a {type(value).__name__}"


def _text(value: object) -> object:
    """Scalars become the strings a user would expect: 3 -> "3", true -> "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value  # a string passes; anything else fails the str check with a clear message


def _none_is(empty: Callable[[], object]) -> BeforeValidator:
    # `install:` with only comments under it is null in YAML; it means "the defaults".
    return BeforeValidator(lambda v: empty() if v is None else v)


def _globs(example: str) -> BeforeValidator:
    """One glob or a non-empty list of them."""

    def check(value: object) -> object:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, (list, tuple)) and not value:
            raise ValueError(f"give at least one glob, e.g. {example}")
        return value

    return BeforeValidator(check)


def _duration(value: object) -> object:
    if value is None or isinstance(value, (str, int, float)):
        return None if value is None else parse_duration(value)
    raise ValueError(f"expected a duration, got {describe(value)}")


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


Text = Annotated[str, BeforeValidator(_text)]
# Editors see what a user may write, not the float it becomes.
_DURATION_SCHEMA = {"type": ["number", "string"], "description": "seconds, 11h30m, 90s or HH:MM:SS"}
Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Storage(_Model):
    persist: str = "auto"
    scratch: str = "auto"


class RepoSpec(_Model):
    url: str
    ref: str | None = None
    path: str | None = None
    into: Literal["scratch", "persist"] = "scratch"
    token_env: str | None = None
    submodules: StrictBool = False

    _token_env = field_validator("token_env")(_env_name)


class InstallSpec(_Model):
    requirements: Annotated[Literal["auto"] | tuple[str, ...], BeforeValidator(_requirements)] = (
        "auto"
    )
    packages: tuple[str, ...] = ()
    keep: tuple[str, ...] = ("torch", "torchvision", "torchaudio")
    pip_args: tuple[str, ...] = ()


class DataItem(_Model):
    source: str
    to: str = "{scratch}/data"
    sha256: str | None = None

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = value.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"expected 64 hexadecimal characters (a SHA-256), got {value!r}")
        return digest


class PrepareSpec(_Model):
    """One item of ``run.prepare``: a command run in ``{repo}`` before the training."""

    script: str | None = None
    module: str | None = None
    args: tuple[Text, ...] = ()
    # Globs relative to {repo}; when given, the command is also re-run if any matches nothing.
    creates: Annotated[tuple[str, ...], _globs('creates: "data/train.bin"')] = ()

    @model_validator(mode="after")
    def _one_command(self) -> PrepareSpec:
        given = [key for key in ("script", "module") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of script or module"
                + (f" (got {', '.join(given)})" if given else ", e.g. script: prepare.py")
            )
        if self.module is not None and not _is_dotted(self.module):
            raise ValueError(
                f"expected a dotted module name, e.g. data.prepare, got {self.module!r}"
            )
        return self

    @property
    def command(self) -> str:
        """The script path or module name, as the recipe gives it."""
        return self.script if self.script is not None else f"-m {self.module}"


class RunSpec(_Model):
    """``run``. The YAML key ``callable`` is the attribute ``entry_callable``."""

    script: str | None = None
    module: str | None = None
    entry_callable: str | None = Field(None, alias="callable")
    args: tuple[Text, ...] = ()
    kwargs: Annotated[dict[str, Any], _none_is(dict)] = Field(default_factory=dict)
    env: Annotated[dict[str, Text], _none_is(dict)] = Field(default_factory=dict)
    checkpoints: str = "{ckpt}"
    match: Annotated[tuple[str, ...], _globs('match: "**/*.pt"')] = ("**/*",)
    resume: tuple[Text, ...] | None = None
    restarts: StrictInt = Field(3, ge=0)
    time_limit: Duration | None = Field(None, gt=0)
    stop_grace: Duration = 60.0
    # none: stdin closed. terminal: a pseudo-terminal as stdin only (output stays piped and
    # teed), for code that asks the terminal its size (`stty size`) or checks isatty().
    stdin: Literal["none", "terminal"] = "none"
    setup: str | None = None
    epochs: StrictInt | None = Field(None, ge=1)
    # Commands run in {repo} after the data is staged and before the training (e.g. a
    # dataset's prepare.py); each runs once per VM, see bootstrap.prepare_steps.
    prepare: Annotated[tuple[PrepareSpec, ...], _none_is(tuple)] = ()
    # End this session of the training this long after it is first launched: the training is
    # asked to stop like at the time limit, and the tool exits 0 (a bounded --smoke run).
    stop_after: Duration | None = Field(None, gt=0)

    _entry_points = field_validator("entry_callable", "setup")(_entry_point)

    @field_validator("module")
    @classmethod
    def _module(cls, value: str | None) -> str | None:
        if value is not None and not _is_dotted(value):
            raise ValueError(f"expected a dotted module name, e.g. mypkg.train, got {value!r}")
        return value

    @field_validator("script")
    @classmethod
    def _script(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a script path relative to {repo}, e.g. train.py")
        return value

    @field_validator("kwargs")
    @classmethod
    def _kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        _json_like(value)
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            _env_name(key)
        return value

    @model_validator(mode="after")
    def _entry(self) -> RunSpec:
        problems = entry_problems(self.model_dump(by_alias=True, exclude_defaults=True))
        if problems:
            raise ValueError(problems[0][1])
        return self

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
        raise RuntimeError("run has no entry point")  # the validator makes this unreachable

    @property
    def loop_mode(self) -> bool:
        return self.setup is not None


def entry_problems(run: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Cross-key rules of ``run`` on a raw mapping: one entry point; loop mode keys together."""
    problems: list[tuple[tuple[str, ...], str]] = []
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


class Recipe(_Model):
    """A validated recipe. ``source_path`` and ``base_dir`` are not YAML keys."""

    version: StrictInt = SUPPORTED_VERSION
    name: str
    storage: Annotated[Storage, _none_is(dict)] = Field(default_factory=Storage)
    repo: RepoSpec
    install: Annotated[InstallSpec, _none_is(dict)] = Field(default_factory=InstallSpec)
    data: Annotated[tuple[DataItem, ...], _none_is(tuple)] = ()
    gpu: Literal["optional", "required", "none"] = "optional"
    run: RunSpec
    profiles: Annotated[dict[str, Annotated[dict[str, Any], _none_is(dict)]], _none_is(dict)] = (
        Field(default_factory=dict)
    )

    _source_path: Path | None = PrivateAttr(None)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != SUPPORTED_VERSION:
            raise ValueError(
                f"unsupported recipe version {value}; this colab-bootstrap reads version "
                f"{SUPPORTED_VERSION} (upgrade colab-bootstrap, or write version: 1)"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or any(not (c.isascii() and (c.isalnum() or c in "._-")) for c in value):
            raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_', '-'")
        if value in (".", ".."):
            raise ValueError(f"{value!r} is not a valid name: it names a folder, {{run}}")
        return value

    @property
    def source_path(self) -> Path | None:
        """The recipe file, or None for a recipe parsed from a mapping."""
        return self._source_path

    @property
    def base_dir(self) -> Path:
        """Relative paths in the recipe are relative to this folder: the file's, or the cwd."""
        return self._base_dir

    def with_source(self, source_path: Path | None, base_dir: Path | None = None) -> Recipe:
        """A copy that knows where it came from."""
        copy = self.model_copy()
        copy._source_path = source_path
        copy._base_dir = base_dir or (source_path.parent if source_path else Path.cwd())
        return copy

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain YAML-ready data, keyed by the YAML names (for --dry-run)."""
        return self.model_dump(mode="json", by_alias=True)
