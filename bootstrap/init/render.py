"""Write a recipe as YAML with comments: PyYAML keeps none, so the text is built here.

An ``Item`` is one key with its value and the comment lines above it. Strings are written
double-quoted unless plainly safe, lists in flow style when short, and the text is read back
with ``yaml.safe_load`` by the caller to prove it says what the items say.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

WIDTH = 100
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


@dataclass
class Item:
    key: str
    value: Any  # a scalar, a list of scalars, list[Item] (a mapping), list[list[Item]]
    comments: list[str] = field(default_factory=list)
    trailing: str = ""
    blocking: str = ""  # why this value blocks loading until it is edited ({TODO} in it)


@dataclass
class Blocker:
    key: str  # dotted, e.g. data[0].source
    line: int  # in the rendered text
    why: str


def scalar(value: Any, quote: bool = False) -> str:
    """One YAML scalar; ``quote`` quotes every string (in a list of args, all read alike)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if not quote and _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)  # JSON strings are YAML double-quoted scalars


def comment_lines(text: str, indent: str) -> list[str]:
    lines = []
    for paragraph in text.splitlines() or [""]:
        wrapped = textwrap.wrap(
            paragraph, WIDTH - len(indent) - 2, break_long_words=False, break_on_hyphens=False
        )
        lines += [f"{indent}# {w}".rstrip() for w in wrapped or [""]]
    return lines


def render(items: list[Item]) -> tuple[list[str], list[Blocker]]:
    """The YAML lines of ``items`` (a top-level mapping) and where the blocking values are."""
    out: list[str] = []
    blockers: list[Blocker] = []
    _mapping(items, "", "", out, blockers)
    return out, blockers


def _mapping(
    items: list[Item], indent: str, path: str, out: list[str], blockers: list[Blocker]
) -> None:
    for item in items:
        if not indent and out and (item.comments or (isinstance(item.value, list) and item.value)):
            out.append("")  # a blank line before each top-level section
        for text in item.comments:
            out += comment_lines(text, indent)
        key = f"{path}.{item.key}" if path else item.key
        tail = f"  # {item.trailing}" if item.trailing else ""
        value = item.value
        key_line = len(out) + 1
        if isinstance(value, list) and value and all(isinstance(v, Item) for v in value):
            out.append(f"{indent}{item.key}:{tail}")
            _mapping(value, indent + "  ", key, out, blockers)
        elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            out.append(f"{indent}{item.key}:{tail}")
            for i, entry in enumerate(value):
                begin = len(out)
                _mapping(entry, indent + "    ", f"{key}[{i}]", out, blockers)
                # The entry's first key line carries the dash: "  - source: ...".
                first = next(n for n in range(begin, len(out)) if not _is_comment(out[n]))
                out[first] = f"{indent}  - " + out[first][len(indent) + 4 :]
        elif isinstance(value, list):
            flow = "[" + ", ".join(scalar(v, quote=True) for v in value) + "]"
            if len(indent) + len(item.key) + len(flow) + 2 <= WIDTH:
                out.append(f"{indent}{item.key}: {flow}{tail}")
            else:
                out.append(f"{indent}{item.key}:{tail}")
                out += [f"{indent}  - {scalar(v, quote=True)}" for v in value]
        else:
            out.append(f"{indent}{item.key}: {scalar(value)}{tail}")
        if item.blocking:
            blockers.append(Blocker(key, key_line, item.blocking))


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def as_data(items: list[Item]) -> dict[str, Any]:
    """The plain mapping ``items`` stand for: what the rendered YAML must load as."""
    result: dict[str, Any] = {}
    for item in items:
        value = item.value
        if isinstance(value, list) and value and all(isinstance(v, Item) for v in value):
            result[item.key] = as_data(value)
        elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            result[item.key] = [as_data(entry) for entry in value]
        else:
            result[item.key] = value
    return result
