"""Load a recipe file, apply profiles and ``--set`` overrides, and validate it all at once.

``load_recipe`` does the I/O and keeps the YAML line of every key; ``parse_recipe`` is pure and
never mutates its input. Both collect every problem and raise one RecipeError listing them as
``file:line: dotted.key: message``. A value that came from a profile is reported where the
profile writes it (``profiles.smoke.run.args``), one from ``--set`` as ``(from --set)``.
The models live in ``bootstrap.recipe.models``, and the YAML and overlay machinery in
``bootstrap.recipe.source``; the models' issues are worded here.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bootstrap.errors import Problem, RecipeError
from bootstrap.recipe.fields import Invalid, Issue, describe
from bootstrap.recipe.modelkit import Model
from bootstrap.recipe.models import (
    DataItem,
    InstallSpec,
    Recipe,
    RepoSpec,
    RunSpec,
    Storage,
    entry_problems,
)
from bootstrap.recipe.placeholders import (
    PlaceholderError,
    data_index,
    find_placeholders,
    is_known,
    missing_env_message,
    missing_env_vars,
    unknown_placeholder_message,
)
from bootstrap.recipe.source import (
    KeyPath,
    Origin,
    SourceMap,
    Where,
    apply_override,
    apply_profile,
    choose_profiles,
    dotted,
    profile_names,
    read_yaml,
)

__all__ = ["Recipe", "Where", "load_recipe", "parse_recipe"]

_SECTIONS: dict[str, type[Model]] = {
    "storage": Storage,
    "repo": RepoSpec,
    "install": InstallSpec,
    "data": DataItem,
    "run": RunSpec,
}
_EXAMPLES = {
    ("name",): "name: my-run",
    ("repo",): "repo: {url: https://github.com/me/project.git}",
    ("repo", "url"): "url: https://github.com/me/project.git",
    ("run",): "run: {script: train.py}",
    ("data", "source"): 'source: "{persist}/data.tar"',
}


def _unknown(path: KeyPath) -> str:
    key, parent = str(path[-1]), path[:-1]
    model = _SECTIONS.get(parent[0], Recipe) if parent else Recipe
    valid = model.yaml_keys()
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    if not parent:  # a key written one level too high, e.g. `restarts:` beside `run:`
        for section, section_model in _SECTIONS.items():
            if section != "data" and key in section_model.yaml_keys():
                return f"unknown key {key!r}; did you mean '{section}.{key}'?"
    return f"unknown key {key!r}; valid keys: {', '.join(valid)}"


def _translate(issue: Issue) -> tuple[KeyPath, str]:
    """One issue as (path, message) in the words of RECIPE.md."""
    if issue.kind == "missing":
        example = _EXAMPLES.get(tuple(p for p in issue.path if not isinstance(p, int)))
        return issue.path, "missing required key" + (f"; add e.g. `{example}`" if example else "")
    if issue.kind == "unknown":
        return issue.path, _unknown(issue.path)
    return issue.path, issue.message


def _strings(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if path or key != "profiles":  # a profile's strings are checked where it applies
                yield from _strings(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


def _placeholder_problems(
    path: KeyPath, text: str, environ: Mapping[str, str] | None, data_count: int
) -> Iterator[str]:
    try:
        names = find_placeholders(text)
    except PlaceholderError as exc:
        yield str(exc)
        return
    if environ is not None:
        yield from (missing_env_message(var) for var in missing_env_vars(text, environ))
    for name in sorted(names):
        index = data_index(name)
        if not is_known(name):
            yield unknown_placeholder_message(name)
        elif index is not None and path[0] in ("storage", "repo", "data"):
            yield f"{{{name}}} cannot be used in {path[0]}: it is where data[{index}] ends up"
        elif index is not None and index >= data_count:
            items = (
                f"data[0] to data[{data_count - 1}]"
                if data_count > 1
                else ("only data[0]" if data_count else "no data items")
            )
            yield f"{{{name}}} names data[{index}], but the recipe has {items}"
        elif name == "checkpoint" and path[:2] != ("run", "resume"):
            yield "{checkpoint} is only valid in run.resume"
        elif path[0] == "storage" and name != "checkpoint":
            yield f"{{{name}}} cannot be used in storage: placeholders are built from it"
        elif path[0] == "repo" and name == "repo":
            yield "{repo} cannot be used in repo: it is built from repo.url and repo.path"


def _check(
    mapping: Mapping[str, Any],
    locate: Callable[[KeyPath], Where],
    environ: Mapping[str, str] | None,
) -> tuple[Recipe | None, list[Problem]]:
    data = copy.deepcopy(dict(mapping))
    found: list[tuple[KeyPath, str]] = []
    recipe = None
    run = data.get("run")
    try:
        recipe = Recipe.from_mapping(data)
    except Invalid as exc:
        for issue in exc.issues:
            path, message = _translate(issue)
            if path == ("version",) and message.startswith("unsupported"):
                return None, [_problem(locate, path, message)]  # the rest is likely a new format
            found.append((path, message))
    if isinstance(run, dict) and any(path[:1] == ("run",) for path, _ in found):
        # A run with a bad key is never built, so its own rules did not run: ask the same rule
        # of the mapping as given. What a built run already reported is not repeated (below).
        found += [(("run", *rel), message) for rel, message in entry_problems(run)]
    items = data.get("data")
    data_count = len(items) if isinstance(items, list) else 0
    for path, text in _strings(data):
        found += [
            (path, message) for message in _placeholder_problems(path, text, environ, data_count)
        ]
    problems = list(dict.fromkeys(_problem(locate, path, message) for path, message in found))
    return (recipe if not problems else None), problems


def _problem(locate: Callable[[KeyPath], Where], path: KeyPath, message: str) -> Problem:
    where = locate(path)
    return Problem(where.file, where.line, where.key, message)


def parse_recipe(
    mapping: Mapping[str, Any],
    *,
    source_path: Path | str | None = None,
    line_of: Callable[[KeyPath], int | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Recipe:
    """Validate a mapping (as YAML would give it) into a Recipe; never mutates ``mapping``.

    ``line_of(path)`` gives the line of a key path such as ``("run", "args", 0)``, for messages.
    With ``environ``, ``${VAR}`` references without a default must be set in it.
    """
    file = str(source_path) if source_path is not None else "recipe"

    def locate(path: KeyPath) -> Where:
        return Where(file, line_of(path) if line_of else None, dotted(path))

    if not isinstance(mapping, Mapping):
        message = f"expected a mapping at the top level, got {describe(mapping)}"
        raise RecipeError([Problem(file, None, "", message)])
    recipe, problems = _check(mapping, locate, environ)
    if recipe is None:
        raise RecipeError(problems)
    source = Path(source_path).absolute() if source_path is not None else None
    return recipe.with_source(source)


def load_recipe(
    path: Path | str,
    *,
    profile: str | None = None,
    smoke: bool = False,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Recipe:
    """Read, overlay and validate a recipe file. ``environ`` defaults to ``os.environ``.

    Raises RecipeError with every problem found (every profile is checked, not only the one
    applied), or UsageError for a missing file, an unknown profile or a malformed ``--set``.
    """
    path = Path(path)
    file = str(path)
    data, lines, problems = read_yaml(path)
    if not isinstance(data, dict):
        message = (
            "the recipe is empty"
            if data is None
            else (f"expected a mapping of keys at the top level, got {describe(data)}")
        )
        raise RecipeError([*problems, Problem(file, None, "", message)])
    base = SourceMap(file, {p: Origin(file, line) for p, line in lines.items()})
    profiles, nested = profile_names(data, base)
    chosen = choose_profiles(profile, smoke, profiles, file)
    merged, smap = data, base
    for name in chosen:
        merged, smap = apply_profile(merged, smap, name, lines)
    for text in overrides:
        merged, smap = apply_override(merged, smap, text)
    recipe, found = _check(merged, smap.locate, os.environ if environ is None else environ)
    problems += nested + found + _other_profiles(data, base, profiles, chosen, lines)
    if problems or recipe is None:
        ordered = sorted(dict.fromkeys(problems), key=lambda p: (p.file != file, p.line or 1e9))
        raise RecipeError(ordered)
    source = path.absolute()
    return recipe.with_source(source, source.parent)


def _other_profiles(
    data: dict[str, Any],
    base: SourceMap,
    profiles: Sequence[str],
    chosen: Sequence[str],
    lines: Mapping[KeyPath, int],
) -> list[Problem]:
    """Problems that a profile not applied now would bring, so a typo in one shows up early."""
    others = [name for name in profiles if name not in chosen]
    if not others:
        return []
    known = set(_check(data, base.locate, None)[1])
    problems = []
    for name in others:
        merged, smap = apply_profile(data, base, name, lines)
        for problem in _check(merged, smap.locate, None)[1]:
            if problem in known:
                continue
            if not problem.key.startswith(f"profiles.{name}."):
                problem = replace(problem, message=f"{problem.message} (with profile {name!r})")
            problems.append(problem)
    return problems
