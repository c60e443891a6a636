"""What a path expression in the code is made of: literal text, names that may be flags, and
parts that are only known at run time.

``torch.save(state, os.path.join(args.out_dir, f"ckpt_{epoch}.pt"))`` reads as
``[Ref("out_dir"), "/", "ckpt_", WILD, ".pt"]``: a folder from the flag ``out_dir`` and the
file pattern ``ckpt_*.pt``. A local name is followed to its assignment in the same function or
module, and a parameter to its default (``def save_checkpoint(state, filename='x.pth')``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from bootstrap.init.source import PyFile, call_name, dotted_name


@dataclass(frozen=True)
class Ref:
    """A name whose value is not in the code: ``args.out_dir`` is Ref("out_dir")."""

    name: str
    dotted: str


class _Wild:
    def __repr__(self) -> str:
        return "WILD"


WILD = _Wild()
Part = str | Ref | _Wild


@dataclass(frozen=True)
class Shape:
    parts: tuple[Part, ...]

    @property
    def literal(self) -> str | None:
        """The whole path when it is all literal text."""
        if all(isinstance(p, str) for p in self.parts):
            return "".join(p for p in self.parts if isinstance(p, str))
        return None

    def head_ref(self) -> tuple[Ref | None, str]:
        """The leading name (when the path starts with one) and the glob of what follows."""
        if self.parts and isinstance(self.parts[0], Ref):
            return self.parts[0], glob_of(self.parts[1:]).lstrip("/")
        return None, glob_of(self.parts)

    def refs(self) -> list[Ref]:
        return [p for p in self.parts if isinstance(p, Ref)]


def glob_of(parts: tuple[Part, ...] | list[Part]) -> str:
    text = "".join(p if isinstance(p, str) else "*" for p in parts)
    text = re.sub(r"\*+", "*", text)
    # A folder that is only known at run time (a run id) may be any depth: '**'.
    return re.sub(r"(^|/)\*(?=/)", r"\1**", text)


class Resolver:
    """Follows names inside one file; built once per file (it indexes parents)."""

    def __init__(self, py: PyFile, stop: set[str] | frozenset[str] = frozenset()):
        self.py = py
        self.stop = stop  # names that are flags (configurator globals, fire parameters)
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(py.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def scope_of(self, node: ast.AST) -> ast.AST:
        current: ast.AST | None = node
        while current is not None:
            current = self.parents.get(current)
            if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
                return current
        return self.py.tree

    def shape(self, node: ast.AST | None, depth: int = 0) -> Shape:
        return Shape(tuple(self._parts(node, depth)))

    def _parts(self, node: ast.AST | None, depth: int) -> list[Part]:
        if node is None or depth > 6:
            return [WILD]
        if isinstance(node, ast.Constant):
            return [node.value] if isinstance(node.value, str) else [WILD]
        if isinstance(node, ast.JoinedStr):
            out: list[Part] = []
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    inner = self._parts(value.value, depth + 1)
                    out += inner if len(inner) == 1 and isinstance(inner[0], Ref) else [WILD]
                else:
                    out += self._parts(value, depth + 1)
            return out
        if isinstance(node, ast.BinOp):
            left = self._parts(node.left, depth + 1)
            if isinstance(node.op, ast.Add):
                return left + self._parts(node.right, depth + 1)
            if isinstance(node.op, ast.Div):  # pathlib: folder / "name"
                return [*left, "/", *self._parts(node.right, depth + 1)]
            if isinstance(node.op, ast.Mod) and len(left) == 1 and isinstance(left[0], str):
                return _formatted(left[0], r"%[-#0 +]*\d*(?:\.\d+)?[sdifrx]")
            return [WILD]
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        if isinstance(node, ast.Attribute):
            return [Ref(node.attr, dotted_name(node))]
        if isinstance(node, ast.Name):
            return self._name(node, depth)
        return [WILD]

    def _call(self, node: ast.Call, depth: int) -> list[Part]:
        name = call_name(node)
        dotted = dotted_name(node.func)
        if (
            name == "join"
            and ("path" in dotted or dotted == "join")
            or name in ("Path", "PurePath")
        ):
            out: list[Part] = []
            for i, arg in enumerate(node.args):
                out += (["/"] if i else []) + self._parts(arg, depth + 1)
            return out or [WILD]
        if name in ("str", "abspath", "expanduser", "realpath", "normpath") and node.args:
            return self._parts(node.args[0], depth + 1)
        if name == "format" and isinstance(node.func, ast.Attribute):
            base = self._parts(node.func.value, depth + 1)
            if len(base) == 1 and isinstance(base[0], str):
                return _formatted(base[0], r"\{[^{}]*\}")
        if name == "joinpath" and isinstance(node.func, ast.Attribute):
            out = self._parts(node.func.value, depth + 1)
            for arg in node.args:
                out += ["/", *self._parts(arg, depth + 1)]
            return out
        return [WILD]

    def _name(self, node: ast.Name, depth: int) -> list[Part]:
        if node.id in self.stop:
            return [Ref(node.id, node.id)]
        scope = self.scope_of(node)
        value = self._assigned(scope, node.id, node.lineno)
        if value is not None:
            return self._parts(value, depth + 1)
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            default = _param_default(scope, node.id)
            if default is not None:
                parts = self._parts(default, depth + 1)
                return parts if parts != [WILD] else [Ref(node.id, node.id)]
            module_value = self._assigned(self.py.tree, node.id, 10**9)
            if module_value is not None and not _is_param(scope, node.id):
                return self._parts(module_value, depth + 1)
        return [Ref(node.id, node.id)]

    def _assigned(self, scope: ast.AST, name: str, before: int) -> ast.expr | None:
        """The value last assigned to ``name`` in ``scope`` before line ``before``."""
        found: tuple[int, ast.expr] | None = None
        for stmt in ast.walk(scope):
            if isinstance(stmt, ast.Assign):
                targets, value = stmt.targets, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                targets, value = [stmt.target], stmt.value
            else:
                continue
            if stmt.lineno >= before or self.scope_of(stmt) is not scope:
                continue
            named = any(isinstance(t, ast.Name) and t.id == name for t in targets)
            if named and (found is None or stmt.lineno >= found[0]):
                found = (stmt.lineno, value)
        return found[1] if found else None


def _formatted(template: str, field: str) -> list[Part]:
    out: list[Part] = []
    for i, text in enumerate(re.split(field, template)):
        out += ([WILD] if i else []) + ([text] if text else [])
    return out


def _param_default(fn: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> ast.expr | None:
    args = [*fn.args.posonlyargs, *fn.args.args]
    defaults = dict(zip([a.arg for a in args[len(args) - len(fn.args.defaults) :]],
                        fn.args.defaults, strict=True))  # fmt: skip
    for arg, default in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True):
        if default is not None:
            defaults[arg.arg] = default
    return defaults.get(name)


def _is_param(fn: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> bool:
    args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
    return any(a.arg == name for a in args)
