"""Flags that are not declared one by one: a function's parameters (``fire.Fire``), dataclass
fields (``HfArgumentParser``, ``simple_parsing``, ``pyrallis``, ``tyro``; Hugging Face's own
``TrainingArguments``), a Lightning CLI, and the nanoGPT-style configurator (``--key=value``
rewriting the module's globals)."""

from __future__ import annotations

import ast
import re

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

# The TrainingArguments fields a recipe may need, with their meaning for init. Written from
# the transformers documentation; the rest of its ~100 fields are not needed here.
HF_TRAINING_FIELDS = (
    Flag("output_dir", "--output_dir", kind="str", help="where checkpoints are written"),
    Flag("overwrite_output_dir", "--overwrite_output_dir", switch=True, kind="bool"),
    Flag("resume_from_checkpoint", "--resume_from_checkpoint", kind="str", help="a checkpoint"),
    Flag("num_train_epochs", "--num_train_epochs", default=3.0, kind="float"),
    Flag("max_steps", "--max_steps", default=-1, kind="int"),
    Flag("per_device_train_batch_size", "--per_device_train_batch_size", default=8, kind="int"),
    Flag("save_steps", "--save_steps", default=500, kind="int"),
    Flag("do_train", "--do_train", switch=True, kind="bool"),
)

# Lightning CLI options every LightningCLI has (jsonargparse, from the Trainer's signature).
LIGHTNING_FIELDS = (
    Flag("default_root_dir", "--trainer.default_root_dir", kind="str"),
    Flag("max_epochs", "--trainer.max_epochs", kind="int"),
    Flag("max_steps", "--trainer.max_steps", kind="int"),
    Flag("limit_train_batches", "--trainer.limit_train_batches", kind="int"),
    Flag("accelerator", "--trainer.accelerator", kind="str"),
    Flag("config", "--config", kind="str"),
)


Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _def_named(scan: RepoScan, py: PyFile, name: str) -> tuple[PyFile, Definition] | None:
    """A function or class called ``name``: in ``py`` first, then anywhere in the repo."""
    for where in [py, *(f for f in scan.python_files() if f is not py)]:
        for node in ast.walk(where.tree):
            if isinstance(node, Definition) and node.name == name:
                return where, node
    return None


def _annotation(node: ast.expr | None) -> str:
    text = ast.unparse(node) if node is not None else ""
    for kind in ("bool", "int", "float", "str"):
        if re.search(rf"\b{kind}\b", text):
            return kind
    return ""


def read_fire(py: PyFile, scan: RepoScan) -> Cli | None:
    if "fire" not in py.text:
        return None
    for call in calls(py.tree):
        if dotted_name(call.func) not in ("fire.Fire", "Fire"):
            continue
        if not call.args or not isinstance(call.args[0], ast.Name):
            note = "fire.Fire() without a function: every module-level name is a command"
            return Cli("fire", py.at(call), (), notes=(note,))
        found = _def_named(scan, py, call.args[0].id)
        if found is None:
            return Cli("fire", py.at(call), ())
        where, node = found
        if isinstance(node, ast.ClassDef):
            init = next(
                (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None,
            )
            if init is None:
                return Cli("fire", py.at(call), ())
            node = init
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        return Cli("fire", py.at(call), tuple(_params(where, node)))
    return None


def _params(py: PyFile, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Flag]:
    args = [*fn.args.posonlyargs, *fn.args.args]
    defaults = [None] * (len(args) - len(fn.args.defaults)) + list(fn.args.defaults)
    pairs = list(zip(args, defaults, strict=True))
    pairs += list(zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True))
    flags = []
    for arg, default_node in pairs:
        if arg.arg in ("self", "cls"):
            continue
        default = literal(default_node)
        kind = _annotation(arg.annotation) or (
            type(default).__name__ if default not in (MISSING, None) else ""
        )
        # fire sets a bool parameter with a bare --name; any other takes a value.
        flags.append(
            Flag(
                dest=arg.arg,
                option=f"--{arg.arg}",
                switch=kind == "bool",
                default=default,
                kind=kind,
                help=_line_comment(py, arg),
                where=py.at(arg),
                required=default_node is None,
            )
        )
    return flags


def _line_comment(py: PyFile, node: ast.AST) -> str:
    line = getattr(node, "end_lineno", None) or getattr(node, "lineno", None)
    if not line:
        return ""
    text = py.text.splitlines()[line - 1] if line <= py.text.count("\n") + 1 else ""
    return text.split("#", 1)[1].strip() if "#" in text else ""


_DATACLASS_PARSERS = {
    "HfArgumentParser": "HfArgumentParser",
    "parse": "simple_parsing",  # simple_parsing.parse(Config), pyrallis.parse(config_class=)
    "add_arguments": "simple_parsing",
    "cli": "tyro",
    "wrap": "pyrallis",
}


def read_dataclass_cli(py: PyFile, scan: RepoScan) -> Cli | None:
    for call in calls(py.tree):
        name = call_name(call)
        framework = _DATACLASS_PARSERS.get(name)
        if framework is None:
            continue
        owner = dotted_name(call.func).split(".")[0]
        if name == "parse" and owner in ("pyrallis", "draccus"):
            framework = owner
        elif name == "parse" and "simple_parsing" not in py.text:
            continue
        if name == "cli" and "tyro" not in py.text:
            continue
        classes = _class_args(call)
        if name == "wrap":
            continue  # @pyrallis.wrap() names its class in the function's annotation: rare
        if not classes:
            continue
        flags: list[Flag] = []
        hf = False
        for class_name in classes:
            found = _def_named(scan, py, class_name)
            if class_name == "TrainingArguments" and (
                found is None or not isinstance(found[1], ast.ClassDef)
            ):
                hf = True
                continue
            if found is None or not isinstance(found[1], ast.ClassDef):
                continue
            fields, inherits_hf = _fields(scan, found[0], found[1], dashes=framework == "tyro")
            flags += fields
            hf = hf or inherits_hf
        if hf:
            have = {f.dest for f in flags}
            flags += [f for f in HF_TRAINING_FIELDS if f.dest not in have]
            framework += " with transformers.TrainingArguments"
        return Cli(framework, py.at(call), tuple(flags))
    return None


def _class_args(call: ast.Call) -> list[str]:
    nodes: list[ast.expr] = list(call.args[:1]) + [
        k.value for k in call.keywords if k.arg in ("dataclass_types", "config_class")
    ]
    names = []
    for node in nodes:
        items = node.elts if isinstance(node, (ast.Tuple, ast.List)) else [node]
        names += [dotted_name(i).rsplit(".", 1)[-1] for i in items if dotted_name(i)]
    return names


def _fields(
    scan: RepoScan, py: PyFile, node: ast.ClassDef, *, dashes: bool, depth: int = 0
) -> tuple[list[Flag], bool]:
    """The fields of a dataclass and of its bases in the repo; whether one base is HF's."""
    flags: list[Flag] = []
    hf = False
    for base in node.bases:
        base_name = dotted_name(base).rsplit(".", 1)[-1]
        if base_name in ("TrainingArguments", "Seq2SeqTrainingArguments"):
            hf = True
            continue
        found = _def_named(scan, py, base_name) if base_name and depth < 3 else None
        if found is not None and isinstance(found[1], ast.ClassDef):
            more, more_hf = _fields(scan, found[0], found[1], dashes=dashes, depth=depth + 1)
            flags += more
            hf = hf or more_hf
    for stmt in node.body:
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        name = stmt.target.id
        value = stmt.value
        if isinstance(value, ast.Call) and call_name(value) == "field":
            value = keyword(value, "default")
        kind = _annotation(stmt.annotation)
        flags = [f for f in flags if f.dest != name]  # a subclass redefines a field
        flags.append(
            Flag(
                dest=name,
                option="--" + (name.replace("_", "-") if dashes else name),
                switch=kind == "bool",
                default=literal(value),
                kind=kind,
                help=_line_comment(py, stmt),
                where=py.at(stmt),
            )
        )
    return flags, hf


def read_lightning_cli(py: PyFile, scan: RepoScan) -> Cli | None:
    if "LightningCLI" not in py.text:
        return None
    cli_classes = {"LightningCLI"} | {
        n.name
        for f in scan.python_files()
        for n in ast.walk(f.tree)
        if isinstance(n, ast.ClassDef) and any("LightningCLI" in dotted_name(b) for b in n.bases)
    }
    for call in calls(py.tree):
        if call_name(call) not in cli_classes:
            continue
        run = literal(keyword(call, "run"))
        flags = [f for f in LIGHTNING_FIELDS]
        if run is False:
            note = (
                "LightningCLI(run=False): no subcommands, so no --ckpt_path; the code calls "
                "trainer.fit itself"
            )
            return Cli("Lightning CLI", py.at(call), tuple(flags), notes=(note,))
        flags.append(Flag("ckpt_path", "--ckpt_path", kind="str", help="resume from a checkpoint"))
        return Cli("Lightning CLI", py.at(call), tuple(flags), subcommand="fit")
    return None


_EXEC_CONFIG = re.compile(r"exec\(\s*open\(\s*['\"][^'\"]*configurator[^'\"]*['\"]")


def read_configurator(py: PyFile, scan: RepoScan) -> Cli | None:
    """nanoGPT's style: module globals, then ``exec(open('configurator.py').read())``, which
    rewrites any of them from ``--key=value`` (no space, no '=' inside a value)."""
    match = _EXEC_CONFIG.search(py.text)
    if match is None:
        return None
    exec_line = py.text[: match.start()].count("\n") + 1
    flags = []
    for stmt in py.tree.body:
        if stmt.lineno >= exec_line:
            break
        if not (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            continue
        default = literal(stmt.value)
        if default is MISSING or isinstance(default, (list, dict, tuple)):
            continue
        name = stmt.targets[0].id
        flags.append(
            Flag(
                dest=name,
                option=f"--{name}",
                default=default,
                kind=type(default).__name__,
                help=_line_comment(py, stmt),
                where=py.at(stmt),
            )
        )
    return Cli("configurator (--key=value)", py.at(exec_line), tuple(flags), equals=True)
