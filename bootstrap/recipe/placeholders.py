"""Placeholders in recipe strings: ``{name}`` from the plan, ``${VAR}`` from the environment.

The grammar, small on purpose so that a typo is an error and not a silent literal:

- ``{name}``: a placeholder; ``name`` is an identifier (see ``KNOWN``), or ``data0``,
  ``data1``, ...: the folder holding data item N's files (``data_index``).
- ``${VAR}``: the environment variable VAR; an error when VAR is not set.
- ``${VAR:-default}``: VAR, or ``default`` when VAR is unset or empty (as in the shell). The
  default may itself hold placeholders: ``${DATA:-{scratch}/data}``. The first ``}`` that does
  not close a placeholder inside it ends the default.
- ``{{`` and ``}}``: a literal ``{`` and ``}``; ``${{`` is therefore a literal ``${``.

Any other ``{`` or ``}`` is an error saying how to write a literal brace.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

KNOWN = frozenset({"persist", "scratch", "run", "repo", "ckpt", "name", "checkpoint"})
# In the order a reader meets them in RECIPE.md; {checkpoint} is special (run.resume only).
_LISTED = ("persist", "scratch", "run", "repo", "ckpt", "name")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DATA = re.compile(r"data(0|[1-9][0-9]*)")


def data_index(name: str) -> int | None:
    """N for ``{dataN}`` (data item N's folder: its ``to``, or its source read in place)."""
    found = _DATA.fullmatch(name)
    return int(found.group(1)) if found else None


def is_known(name: str) -> bool:
    return name in KNOWN or data_index(name) is not None


class PlaceholderError(ValueError):
    """A string is not a valid template, or names something that has no value here."""


@dataclass(frozen=True)
class _Name:
    name: str


@dataclass(frozen=True)
class _Env:
    var: str
    default: tuple[_Token, ...] | None


_Token = str | _Name | _Env


def _parse(text: str, start: int = 0, nested: bool = False) -> tuple[tuple[_Token, ...], int]:
    """Tokens of ``text[start:]``; when ``nested``, stop at the ``}`` that closes a default."""
    tokens: list[_Token] = []
    literal: list[str] = []
    i, n = start, len(text)

    def flush() -> None:
        if literal:
            tokens.append("".join(literal))
            literal.clear()

    while i < n:
        char = text[i]
        if char == "$" and text.startswith("{", i + 1) and not text.startswith("{{", i + 1):
            ident = _IDENT.match(text, i + 2)
            after = ident.end() if ident else i + 2
            default: tuple[_Token, ...] | None = None
            if ident and text.startswith(":-", after):
                default, after = _parse(text, after + 2, nested=True)
            if not ident or not text.startswith("}", after):
                raise PlaceholderError(
                    f"malformed ${{...}} in {text!r}: write ${{VAR}} or ${{VAR:-default}}"
                )
            flush()
            tokens.append(_Env(ident.group(), default))
            i = after + 1
        elif char == "{":
            if text.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            ident = _IDENT.match(text, i + 1)
            if not ident or not text.startswith("}", ident.end()):
                raise PlaceholderError(
                    f"stray '{{' in {text!r}: placeholders look like {{name}}; "
                    f"write {{{{ for a literal brace"
                )
            flush()
            tokens.append(_Name(ident.group()))
            i = ident.end() + 1
        elif char == "}":
            if nested:
                break
            if not text.startswith("}}", i):
                raise PlaceholderError(f"stray '}}' in {text!r}: write }}}} for a literal brace")
            literal.append("}")
            i += 2
        else:
            literal.append(char)
            i += 1
    else:
        if nested:
            raise PlaceholderError(f"unclosed ${{...}} in {text!r}: end the default with }}")
    flush()
    return tuple(tokens), i


def find_placeholders(text: str) -> set[str]:
    """The ``{name}`` placeholders in ``text``, defaults of ``${VAR:-...}`` included."""
    found: set[str] = set()

    def walk(tokens: tuple[_Token, ...]) -> None:
        for token in tokens:
            if isinstance(token, _Name):
                found.add(token.name)
            elif isinstance(token, _Env) and token.default is not None:
                walk(token.default)

    walk(_parse(text)[0])
    return found


def missing_env_vars(text: str, environ: Mapping[str, str]) -> list[str]:
    """The variables that ``expand`` would complain about, in order, without raising."""
    missing: list[str] = []

    def walk(tokens: tuple[_Token, ...]) -> None:
        for token in tokens:
            if not isinstance(token, _Env) or environ.get(token.var):
                continue
            if token.default is not None:
                walk(token.default)
            elif token.var not in environ and token.var not in missing:
                missing.append(token.var)

    walk(_parse(text)[0])
    return missing


def unknown_placeholder_message(name: str) -> str:
    """What to say about ``{name}`` when it is not a placeholder at all."""
    if name == "TODO":  # written by `bootstrap init` where it could not decide
        return (
            "{TODO} is still here: `bootstrap init` left it where it could not decide; "
            "replace it with the value the comment above it asks for"
        )
    close = difflib.get_close_matches(name, sorted(KNOWN | {"data0"}), n=1)
    if close:
        return f"unknown placeholder {{{name}}}; did you mean {{{close[0]}}}?"
    known = ", ".join(f"{{{k}}}" for k in _LISTED)
    return (
        f"unknown placeholder {{{name}}}; known: {known}, {{data0}} {{data1}} ... (each data "
        "item's folder) ({checkpoint} in run.resume only)"
    )


def missing_env_message(var: str) -> str:
    return f"environment variable {var} is not set; set it, or give a default: ${{{var}:-value}}"


def expand(text: str, values: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """Replace ``{name}`` from ``values`` and ``${VAR}`` from ``environ``; unescape braces.

    Raises PlaceholderError (a ValueError) for bad syntax, an unknown name, a known name with
    no value here, or an unset variable without a default.
    """
    return _render(_parse(text)[0], values, environ, env_only=False)


def expand_env_only(text: str, environ: Mapping[str, str]) -> str:
    """Replace only ``${VAR}``; the result is still a template.

    ``{name}`` placeholders and brace escapes are kept, and braces in the variables' values
    are escaped, so ``expand(expand_env_only(t, env), values, {}) == expand(t, values, env)``.
    """
    return _render(_parse(text)[0], {}, environ, env_only=True)


def escape(text: str) -> str:
    """``text`` as a template that expands to itself."""
    return text.replace("{", "{{").replace("}", "}}")


def _render(
    tokens: tuple[_Token, ...],
    values: Mapping[str, str],
    environ: Mapping[str, str],
    env_only: bool,
) -> str:
    out: list[str] = []
    for token in tokens:
        if isinstance(token, str):
            out.append(escape(token) if env_only else token)
        elif isinstance(token, _Name):
            if env_only:
                out.append(f"{{{token.name}}}")
            elif token.name in values:
                out.append(values[token.name])
            elif is_known(token.name):
                raise PlaceholderError(f"placeholder {{{token.name}}} has no value here")
            else:
                raise PlaceholderError(unknown_placeholder_message(token.name))
        else:
            value = environ.get(token.var)
            if value or (value is not None and token.default is None):
                out.append(escape(value) if env_only else value)
            elif token.default is not None:
                out.append(_render(token.default, values, environ, env_only))
            else:
                raise PlaceholderError(missing_env_message(token.var))
    return "".join(out)
