"""Checked fields for the recipe models: validation that collects every problem, and a schema.

A check is a small object that converts and checks one value as YAML gives it, appends an
``Issue`` (the key path, what kind of problem, and the message) for each thing wrong instead of
stopping at the first, and describes itself as JSON Schema. Models built from checks, and
``Invalid`` carrying every issue, are in ``bootstrap.recipe.modelkit``. Kinds ``missing`` and
``unknown`` carry no message: the caller words them, knowing the recipe's sections.

Why not pydantic: the tool runs inside the user's Python, into which the user's requirements
are installed; a repo that pins an old pydantic would break the tool's own next start, and
importing pydantic took a third of the tool's start-up. This is the small part of it we use.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

KeyPath = tuple[Any, ...]
Kind = Literal["missing", "unknown", "invalid"]


class Issue(NamedTuple):
    path: KeyPath
    kind: Kind
    message: str = ""


class Invalid(ValueError):
    """A mapping did not make a model; ``issues`` says every why."""

    def __init__(self, issues: Sequence[Issue]):
        self.issues = list(issues)
        super().__init__("; ".join(f"{'.'.join(map(str, i.path))}: {i.message or i.kind}"
                                   for i in self.issues))  # fmt: skip


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


def _scalar(value: object) -> bool:
    return value is not None and not isinstance(value, (str, list, tuple, dict))


class Check:
    """Converts and checks one value; appends an Issue for each problem."""

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def fail(issues: list[Issue], path: KeyPath, message: str) -> None:
        issues.append(Issue(path, "invalid", message))


class Str(Check):
    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if not isinstance(value, str):
            quote = "; quote it" if _scalar(value) else ""
            self.fail(issues, path, f"expected a string, got {describe(value)}{quote}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}


class Text(Str):
    """A string, or a number or true/false written as one: 3 -> "3", true -> "true"."""

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        return super().__call__(value, path, issues)

    def schema(self) -> dict[str, Any]:
        return {"type": ["string", "number", "boolean"]}


class Bool(Check):
    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if not isinstance(value, bool):
            self.fail(issues, path, f"expected true or false, got {describe(value)}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


class Int(Check):
    def __init__(self, minimum: int | None = None):
        self.minimum = minimum

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(issues, path, f"expected an integer, got {describe(value)}")
        elif self.minimum is not None and value < self.minimum:
            self.fail(issues, path, f"must be at least {self.minimum}, got {describe(value)}")
        return value

    def schema(self) -> dict[str, Any]:
        bound = {} if self.minimum is None else {"minimum": self.minimum}
        return {"type": "integer", **bound}


class AutoOrInt(Check):
    """The text ``auto``, or an integer of at least ``minimum``."""

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if value == "auto":
            return value
        if not isinstance(value, int) or isinstance(value, bool) or value < self.minimum:
            self.fail(issues, path, f"expected auto or an integer of at least {self.minimum}, "
                      f"got {describe(value)}")  # fmt: skip
        return value

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"const": "auto", "type": "string"},
                          {"type": "integer", "minimum": self.minimum}]}  # fmt: skip


class Duration(Check):
    """Seconds as a number, or text such as 90s, 11h30m, HH:MM:SS; a float of seconds."""

    def __init__(self, parse: Callable[[Any], float], positive: bool = False):
        self.parse, self.positive = parse, positive

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.fail(issues, path, f"expected a duration, got {describe(value)}")
            return value
        try:
            seconds = self.parse(value)
        except ValueError as exc:
            self.fail(issues, path, str(exc))
            return value
        if self.positive and seconds <= 0:
            self.fail(issues, path, f"must be more than 0, got {describe(value)}")
        return seconds

    def schema(self) -> dict[str, Any]:
        return {"type": ["number", "string"], "description": "seconds, 11h30m, 90s or HH:MM:SS"}


class OneOf(Check):
    def __init__(self, *choices: str):
        self.choices = choices

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if not isinstance(value, str) or value not in self.choices:
            quoted = [repr(c) for c in self.choices]
            expected = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if quoted[:-1] else quoted)
            self.fail(issues, path, f"expected {expected}, got {describe(value)}")
        return value

    def schema(self) -> dict[str, Any]:
        if len(self.choices) == 1:
            return {"const": self.choices[0], "type": "string"}
        return {"enum": list(self.choices), "type": "string"}


class Optional(Check):
    """null, or what ``inner`` accepts."""

    def __init__(self, inner: Check):
        self.inner = inner

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        return None if value is None else self.inner(value, path, issues)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [self.inner.schema(), {"type": "null"}]}


class NoneIs(Check):
    """null means the empty value (``install:`` with only comments under it is null in YAML)."""

    def __init__(self, inner: Check, empty: Callable[[], Any]):
        self.inner, self.empty = inner, empty

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        return self.empty() if value is None else self.inner(value, path, issues)

    def schema(self) -> dict[str, Any]:
        return self.inner.schema()


class ListOf(Check):
    """A list, as a tuple; ``min_items`` with the message to give when there are fewer."""

    def __init__(self, item: Check, min_items: tuple[int, str] | None = None):
        self.item, self.min_items = item, min_items

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if not isinstance(value, (list, tuple)):
            self.fail(issues, path, f"expected a list, got {describe(value)}")
            return value
        if self.min_items and len(value) < self.min_items[0]:
            self.fail(issues, path, self.min_items[1])
        return tuple(self.item(v, (*path, i), issues) for i, v in enumerate(value))

    def schema(self) -> dict[str, Any]:
        return {"items": self.item.schema(), "type": "array"}


class MapOf(Check):
    """A mapping with string keys; its values checked by ``value`` (None: anything)."""

    def __init__(self, value: Check | None = None):
        self.value = value

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if not isinstance(value, dict):
            self.fail(issues, path, f"expected a mapping, got {describe(value)}")
            return value
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.fail(issues, (*path, key), f"keys must be strings, got {describe(key)}")
                continue
            out[key] = item if self.value is None else self.value(item, (*path, key), issues)
        return out

    def schema(self) -> dict[str, Any]:
        items: Any = True if self.value is None else self.value.schema()
        return {"additionalProperties": items, "type": "object"}


class Then(Check):
    """``inner``, then ``rule`` on its result if it passed: a ValueError is the message."""

    def __init__(self, inner: Check, rule: Callable[[Any], Any]):
        self.inner, self.rule = inner, rule

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        before = len(issues)
        value = self.inner(value, path, issues)
        if len(issues) == before:
            try:
                return self.rule(value)
            except ValueError as exc:
                self.fail(issues, path, str(exc))
        return value

    def schema(self) -> dict[str, Any]:
        return self.inner.schema()


class Custom(Check):
    """A function that returns the value or raises ValueError, with its schema given."""

    def __init__(self, convert: Callable[[Any], Any], schema: dict[str, Any]):
        self.convert, self._schema = convert, schema

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        try:
            return self.convert(value)
        except ValueError as exc:
            self.fail(issues, path, str(exc))
            return value

    def schema(self) -> dict[str, Any]:
        return self._schema
