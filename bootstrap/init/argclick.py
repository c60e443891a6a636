"""Flags declared with argparse (``add_argument``) and click (``@click.option``), read from the
AST: the option strings, ``action``/``is_flag``, ``type``, ``default``, ``choices``, ``help``."""

from __future__ import annotations

import ast

from bootstrap.init.commandline import Cli, Flag
from bootstrap.init.source import (
    MISSING,
    PyFile,
    RepoScan,
    call_name,
    calls,
    dotted_name,
    keyword,
    literal,
)

_SWITCH_ACTIONS = {"store_true", "store_false", "store_const", "count", "help", "version"}


def _type_name(node: ast.expr | None) -> str:
    if node is None:
        return ""
    name = dotted_name(node).rsplit(".", 1)[-1]
    return {"str": "str", "int": "int", "float": "float", "bool": "bool", "Path": "str"}.get(
        name, "str" if name in ("STRING", "path", "Path") else ""
    )


def _text(node: ast.expr | None) -> str:
    value = literal(node)
    return value if isinstance(value, str) else ""


def _choices(node: ast.expr | None) -> tuple[object, ...]:
    if node is None:
        return ()
    if isinstance(node, ast.Call) and call_name(node) == "Choice" and node.args:
        node = node.args[0]  # click.Choice([...])
    value = literal(node)
    return tuple(value) if isinstance(value, (list, tuple, set)) else ()


def _dest(options: list[str]) -> str:
    longs = [o for o in options if o.startswith("--")]
    name = (longs or options)[0]
    return name.lstrip("-").replace("-", "_")


def read_argparse(py: PyFile, scan: RepoScan) -> Cli | None:
    flags: list[Flag] = []
    anchor: ast.AST | None = None
    for call in calls(py.tree):
        name = call_name(call)
        if name == "ArgumentParser" and anchor is None:
            anchor = call
        if name != "add_argument":
            continue
        words = [v for v in (literal(a) for a in call.args) if isinstance(v, str)]
        if not words:
            continue
        anchor = anchor or call
        action = keyword(call, "action")
        action_name = _text(action) or dotted_name(action).rsplit(".", 1)[-1] if action else ""
        switch = action_name in _SWITCH_ACTIONS or action_name == "BooleanOptionalAction"
        nargs = literal(keyword(call, "nargs"))
        positional = not words[0].startswith("-")
        dest = _text(keyword(call, "dest")) or (words[0] if positional else _dest(words))
        default = literal(keyword(call, "default"))
        if action_name == "store_true" and default is MISSING:
            default = False
        longs = [w for w in words if w.startswith("--")]
        option = "" if positional else (longs or words)[0]
        flags.append(
            Flag(
                dest=dest,
                option=option,
                switch=switch,
                default=default,
                choices=_choices(keyword(call, "choices")),
                kind="bool" if switch else _type_name(keyword(call, "type")),
                help=_text(keyword(call, "help")) + " " + _text(keyword(call, "metavar")),
                where=py.at(call),
                aliases=tuple(w for w in words if w != option and not positional),
                required=literal(keyword(call, "required")) is True
                or (positional and nargs not in ("?", "*")),
            )
        )
    if not flags or anchor is None:
        return None
    return Cli("argparse", py.at(anchor), tuple(flags))


def _is_click(decorator: ast.expr, names: tuple[str, ...]) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    dotted = dotted_name(target)
    return dotted.rsplit(".", 1)[-1] in names and (dotted.startswith("click.") or "." not in dotted)


def read_click(py: PyFile, scan: RepoScan) -> Cli | None:
    if "click" not in py.text:
        return None
    for node in ast.walk(py.tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not any(_is_click(d, ("command", "group")) for d in node.decorator_list):
            continue
        flags = [
            flag
            for d in node.decorator_list
            if isinstance(d, ast.Call) and _is_click(d, ("option", "argument"))
            for flag in [_click_flag(py, d)]
            if flag is not None
        ]
        # Decorators apply bottom-up; the help lists them top-down, as written.
        return Cli("click", py.at(node), tuple(flags))
    return None


def _click_flag(py: PyFile, call: ast.Call) -> Flag | None:
    words = [v for v in (literal(a) for a in call.args) if isinstance(v, str)]
    if not words:
        return None
    if call_name(call) == "argument":
        return Flag(dest=words[0], option="", where=py.at(call), required=True)
    options: list[str] = []
    for word in words:
        options += [w for w in word.split("/") if w.startswith("-")]  # --flag/--no-flag
    bare = [w for w in words if not w.startswith("-")]  # the parameter's name, when given
    longs = [o for o in options if o.startswith("--")]
    option = (longs or options or ["--" + bare[0]])[0]
    is_flag = literal(keyword(call, "is_flag")) is True or any("/" in w for w in words)
    default = literal(keyword(call, "default"))
    type_node = keyword(call, "type")
    return Flag(
        dest=bare[0] if bare else _dest(options),
        option=option,
        switch=is_flag,
        default=False if is_flag and default is MISSING else default,
        choices=_choices(type_node),
        kind="bool" if is_flag else _type_name(type_node),
        help=_text(keyword(call, "help")) + " " + _text(keyword(call, "metavar")),
        where=py.at(call),
        aliases=tuple(o for o in options if o != option and not o.startswith("--no-")),
        required=literal(keyword(call, "required")) is True,
    )
