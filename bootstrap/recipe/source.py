"""Where recipe values come from: YAML with line numbers, profile overlays, ``--set``.

Every value of the final mapping is traced to the place a user would fix it: a line of the
recipe, a line inside a profile (shown as ``profiles.NAME.key``), or the command line.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bootstrap.errors import Problem, RecipeError, UsageError
from bootstrap.recipe.fields import describe

KeyPath = tuple[Any, ...]  # e.g. ("data", 0, "sha256")
FROM_SET = "(from --set)"


@dataclass(frozen=True)
class Where:
    file: str
    line: int | None
    key: str  # the dotted key shown to the user


def dotted(path: KeyPath) -> str:
    """("data", 0, "sha256") -> "data[0].sha256"."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def read_yaml(path: Path) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UsageError(f"recipe file not found: {file}", hint="check the path") from None
    except UnicodeDecodeError:
        raise RecipeError([Problem(file, None, "", "the file is not UTF-8 text")]) from None
    except OSError as exc:
        raise UsageError(f"cannot read the recipe {file}: {exc.strerror}") from None
    loader = yaml.SafeLoader(text)
    lines: dict[KeyPath, int] = {}
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines, problems
        # Index before constructing: construction flattens `<<` merge keys in place.
        _index(loader, node, (), lines, problems, file, set())
        return loader.construct_document(node), lines, problems
    except yaml.MarkedYAMLError as exc:
        raise RecipeError([_yaml_problem(file, exc)]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([Problem(file, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()


def _index(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    problems: list[Problem],
    file: str,
    active: set[int],
) -> None:
    if id(node) in active:
        line = node.start_mark.line + 1
        raise RecipeError([Problem(file, line, dotted(path), "a YAML alias refers to itself")])
    active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                message = f"duplicate key; first given at line {seen[key]}"
                problems.append(Problem(file, line, dotted((*path, key)), message))
            seen[key] = lines[path + (key,)] = line
            _index(loader, value_node, (*path, key), lines, problems, file, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index(loader, item, (*path, i), lines, problems, file, active)


def _yaml_problem(file: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    problem = exc.problem or "unreadable"
    tag = re.search(r"constructor for the tag '([^']*)'", problem)
    if tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return Problem(file, line, "", f"YAML tag {name} is not allowed: recipes are plain YAML")
    if exc.context and "single document" in exc.context:
        return Problem(file, line, "", "a recipe is one YAML document; remove the second '---'")
    context = f" ({exc.context})" if exc.context else ""
    return Problem(file, line, "", f"invalid YAML: {problem}{context}")


@dataclass(frozen=True)
class Origin:
    file: str
    line: int | None
    prefix: KeyPath = ()  # where the value sits in its file: ("profiles", "smoke") for a profile


class SourceMap:
    def __init__(self, file: str, entries: Mapping[KeyPath, Origin]):
        self.file = file
        self.entries = dict(entries)

    def locate(self, path: KeyPath) -> Where:
        for end in range(len(path), 0, -1):
            origin = self.entries.get(path[:end])
            if origin is not None:
                return Where(origin.file, origin.line, dotted(origin.prefix + path))
        return Where(self.file, None, dotted(path))

    def replaced(self, path: KeyPath, entries: Mapping[KeyPath, Origin]) -> SourceMap:
        kept = {p: o for p, o in self.entries.items() if p[: len(path)] != path}
        return SourceMap(self.file, {**kept, **entries})


def apply_profile(
    data: dict[str, Any], smap: SourceMap, name: str, lines: Mapping[KeyPath, int]
) -> tuple[dict[str, Any], SourceMap]:
    """Deep-merge profile ``name`` over ``data``: mappings merge, anything else replaces."""
    prefix = ("profiles", name)
    result = [smap]

    def replaced(path: KeyPath) -> None:
        full = prefix + path
        entries = {
            p[len(prefix) :]: Origin(smap.file, line, prefix)
            for p, line in lines.items()
            if p[: len(full)] == full
        }
        result[0] = result[0].replaced(path, entries)

    def merge(base: Any, over: Any, path: KeyPath) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            out = dict(base)
            for key, value in over.items():
                if path or key != "profiles":  # nesting is reported by profile_names
                    out[key] = merge(base.get(key), value, (*path, key))
            return out
        replaced(path)
        return copy.deepcopy(over)

    overlay = data["profiles"][name]
    if not isinstance(overlay, dict):  # the models report it
        return data, smap
    return merge(data, overlay, ()), result[0]


def profile_names(data: Mapping[str, Any], smap: SourceMap) -> tuple[list[str], list[Problem]]:
    """The profile names, and the problems that the models cannot see."""
    raw = data.get("profiles")
    profiles = raw if isinstance(raw, dict) else {}
    problems = []
    for name, overlay in profiles.items():
        if isinstance(overlay, dict) and "profiles" in overlay:
            where = smap.locate(("profiles", name, "profiles"))
            problems.append(Problem(where.file, where.line, where.key, "profiles cannot nest"))
    return list(profiles), problems


def choose_profiles(profile: str | None, smoke: bool, names: Sequence[str], file: str) -> list[str]:
    chosen: list[str] = []
    if profile is not None:
        if profile not in names:
            close = difflib.get_close_matches(profile, names, n=1)
            listed = f"profiles in this recipe: {', '.join(names)}" if names else ""
            hint = (f"did you mean {close[0]!r}? " if close else "") + (
                listed or "this recipe defines no profiles"
            )
            raise UsageError(f"no profile {profile!r} in {file}", hint=hint)
        chosen.append(profile)
    if smoke and "smoke" in names and "smoke" not in chosen:
        chosen.append("smoke")  # --smoke without a smoke profile is fine: it only goes CPU-only
    return chosen


_SEGMENT = re.compile(r"([^.\[\]=\s]+)((?:\[\d+\])*)")


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """``"data[0].sha256=null"`` -> (("data", 0, "sha256"), None); the value is read as YAML."""
    key, equals, raw = text.partition("=")
    key = key.strip()
    usage = f"--set {text!r}"
    if not equals or not key:
        raise UsageError(f"{usage}: expected KEY=VALUE", hint="e.g. --set run.restarts=5")
    path: list[Any] = []
    for segment in key.split("."):
        match = _SEGMENT.fullmatch(segment)
        if not match:
            raise UsageError(f"{usage}: {key!r} is not a dotted key", hint="e.g. data[0].to")
        name = match.group(1)
        path.append(int(name) if name.isdigit() else name)
        path.extend(int(i) for i in re.findall(r"\d+", match.group(2)))
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or "unreadable"
        raise UsageError(
            f"{usage}: the value is not valid YAML ({reason})",
            hint='quote it for the shell, e.g. --set \'run.args=["--lr", "0.1"]\'',
        ) from None
    return tuple(path), value


def apply_override(
    data: dict[str, Any], smap: SourceMap, text: str
) -> tuple[dict[str, Any], SourceMap]:
    path, value = parse_override(text)
    data = copy.deepcopy(data)
    node: Any = data
    actual: list[Any] = []
    for depth, step in enumerate(path):
        here = dotted(tuple(actual)) or "the recipe"
        last = depth == len(path) - 1
        if isinstance(node, dict):
            key = step if isinstance(step, str) or step in node else str(step)
            if not last and node.get(key) is None:
                node[key] = {}
        elif isinstance(node, list):
            if not isinstance(step, int):
                raise UsageError(f"--set {text!r}: {here} is a list; index it, e.g. {here}[0]")
            if step >= len(node):
                raise UsageError(
                    f"--set {text!r}: {here} has {len(node)} item(s), so no {here}[{step}]",
                    hint=f"set the whole list instead: --set '{here}=[...]'",
                )
            key = step
        else:
            raise UsageError(f"--set {text!r}: {here} is {describe(node)}, not a mapping or list")
        actual.append(key)
        if last:
            node[key] = value
        else:
            node = node[key]
    full = tuple(actual)
    return data, smap.replaced(full, {full: Origin(FROM_SET, None)})
