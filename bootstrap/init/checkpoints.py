"""Where the training writes its checkpoints, and what their names look like.

Read from the calls that save (``torch.save``, ``pickle.dump`` into an opened file,
``save_file``, ``trainer.save_checkpoint``, ``accelerator.save_state``, any ``save*`` call given
a path with a checkpoint's extension), from the folders a framework is given
(``TrainingArguments(output_dir=)``, ``ModelCheckpoint(dirpath=)``,
``Trainer(default_root_dir=)``), and from flags named like a folder for outputs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from bootstrap.init.commandline import Cli, Flag, norm
from bootstrap.init.paths import Ref, Resolver, Shape, glob_of
from bootstrap.init.source import Finding, PyFile, Where, call_name, calls, dotted_name, keyword

FOLDER_FLAGS = (
    "out_dir", "output_dir", "outdir", "save_dir", "checkpoint_dir", "checkpoints_dir",
    "ckpt_dir", "checkpoint_path", "save_path", "model_dir", "work_dir", "exp_dir", "log_dir",
    "logdir", "results_dir", "default_root_dir", "checkpoint", "save",
)  # fmt: skip
CHECKPOINT_EXT = re.compile(r"\.(pt|pth|ckpt|tar|bin|pkl|safetensors|th|pth\.tar)$", re.I)
ANY_CHECKPOINT = ("**/*.pt", "**/*.pth", "**/*.ckpt", "**/*.tar", "**/*.pkl", "**/*.safetensors")
HF_FOLDERS = "checkpoint-*/trainer_state.json"
LIGHTNING = "**/*.ckpt"


@dataclass(frozen=True)
class SaveSite:
    where: Where
    how: str  # "torch.save", "TrainingArguments(output_dir=)", ...
    shape: Shape
    pattern: str | None = None  # the framework's own file pattern, for a folder site
    folder: bool = False  # the path is a folder the framework writes into


@dataclass
class CheckpointPlan:
    folder: str  # run.checkpoints
    match: list[str]
    folder_flag: Flag | None = None  # given {ckpt}
    file_flag: Flag | None = None  # the flag is the checkpoint file's own path
    file_name: str = ""  # with file_flag: the name to give it inside {ckpt}
    finding: Finding | None = None
    others: list[str] = field(default_factory=list)
    todo: str | None = None


def find_saves(files: list[PyFile], stop: set[str]) -> list[SaveSite]:
    """Every save in ``files``, in order. Names in ``stop`` are flags: never followed."""
    sites: list[SaveSite] = []
    for py in files:
        resolver = Resolver(py, stop)
        for call in calls(py.tree):
            site = _site(py, resolver, call)
            if site is not None:
                sites.append(site)
    return sites


def _site(py: PyFile, resolver: Resolver, call: ast.Call) -> SaveSite | None:
    name = call_name(call)
    dotted = dotted_name(call.func)
    where = py.at(call)

    def arg(index: int, *names: str) -> ast.expr | None:
        for key in names:
            value = keyword(call, key)
            if value is not None:
                return value
        return call.args[index] if len(call.args) > index else None

    if (
        dotted in ("torch.save", "save")
        and name == "save"
        and len(call.args) + len(call.keywords) > 1
    ):
        return SaveSite(where, "torch.save", _opened(resolver, arg(1, "f")))
    if dotted.endswith("pickle.dump") or dotted in ("dump",) and "pickle" in py.text:
        return SaveSite(where, "pickle.dump", _opened(resolver, arg(1, "file")))
    if name == "save_file":
        return SaveSite(where, "save_file", resolver.shape(arg(1, "filename")))
    if name == "save_checkpoint" and "trainer" in dotted.lower():
        return SaveSite(where, "trainer.save_checkpoint", resolver.shape(arg(0, "filepath")))
    if name == "save_state" and "accelerator" in dotted.lower():
        return SaveSite(
            where, "accelerator.save_state", resolver.shape(arg(0, "output_dir")), folder=True
        )
    if name in ("TrainingArguments", "Seq2SeqTrainingArguments") and keyword(call, "output_dir"):
        shape = resolver.shape(keyword(call, "output_dir"))
        return SaveSite(where, f"{name}(output_dir=)", shape, HF_FOLDERS, folder=True)
    if name == "ModelCheckpoint" and keyword(call, "dirpath"):
        shape = resolver.shape(keyword(call, "dirpath"))
        return SaveSite(where, "ModelCheckpoint(dirpath=)", shape, "*.ckpt", folder=True)
    if name == "Trainer" and keyword(call, "default_root_dir"):
        shape = resolver.shape(keyword(call, "default_root_dir"))
        return SaveSite(where, "Trainer(default_root_dir=)", shape, LIGHTNING, folder=True)
    if "save" in name.lower() and not name.startswith(("savefig", "save_image")):
        for node in call.args[1:2] or call.args[:1]:
            shape = resolver.shape(node)
            if CHECKPOINT_EXT.search(_tail(shape)):
                return SaveSite(where, f"{name}()", shape)
    return None


def _tail(shape: Shape) -> str:
    last = shape.parts[-1] if shape.parts else ""
    return last if isinstance(last, str) else ""


def _opened(resolver: Resolver, node: ast.expr | None) -> Shape:
    """The path a file object was opened with (``with open(path, 'wb') as f``), else itself."""
    if isinstance(node, ast.Name):
        scope = resolver.scope_of(node)
        for item in ast.walk(scope):
            if isinstance(item, ast.withitem) and isinstance(item.optional_vars, ast.Name):
                opened = item.context_expr
                if (
                    item.optional_vars.id == node.id
                    and isinstance(opened, ast.Call)
                    and call_name(opened) == "open"
                    and opened.args
                ):
                    return resolver.shape(opened.args[0])
    return resolver.shape(node)


def choose_folder(cli: Cli | None, sites: list[SaveSite], framework: str) -> CheckpointPlan:
    """run.checkpoints and run.match, from the saves first, then from the flags' names."""
    flags = {norm(f.dest): f for f in cli.flags} if cli else {}
    described = [f"{s.how} ({s.where})" for s in sites]
    for i, site in enumerate(sites):
        ref, rest = site.shape.head_ref()
        flag = flags.get(norm(ref.name)) if isinstance(ref, Ref) else None
        if flag is None:
            continue
        others = described[:i] + described[i + 1 :]
        if not rest and not site.folder:  # the flag is the file's whole path
            name = _default_name(flag) or "checkpoint.pt"
            text = f"{site.how} writes to {flag.spelled()} itself"
            return CheckpointPlan(
                "{ckpt}", [name], file_flag=flag, file_name=name, others=others,
                finding=Finding(text, site.where, "likely", f"given {{ckpt}}/{name}"),
            )  # fmt: skip
        match = site.pattern or rest or None
        text = f"{site.how} into {flag.spelled()}" + (f", files {match}" if match else "")
        return CheckpointPlan(
            "{ckpt}", [match] if match else _defaults(framework), folder_flag=flag,
            others=others, finding=Finding(text, site.where, "sure"),
        )  # fmt: skip
    for i, site in enumerate(sites):
        path = site.shape.literal
        if path is None:
            continue
        folder, _, name = path.rpartition("/") if not site.folder else (path, "", "")
        folder = folder.removeprefix("./").rstrip("/")
        if folder.startswith(("/", "~")):
            continue
        match = site.pattern or name or None
        text = f"{site.how} writes {path!r} in its working folder"
        return CheckpointPlan(
            "{repo}/" + folder if folder and folder != "." else "{repo}",
            [match] if match else _defaults(framework),
            others=described[:i] + described[i + 1 :],
            finding=Finding(text, site.where, "sure" if match else "likely"),
        )
    named = _named_pattern(sites)
    for name in FOLDER_FLAGS:
        flag = flags.get(name)
        if flag is not None and not flag.switch:
            note = "the flag's name says it is the output folder"
            if named is not None:
                note += f"; the file pattern is from {named[1].how} ({named[1].where})"
            return CheckpointPlan(
                "{ckpt}", [named[0]] if named else _defaults(framework), folder_flag=flag,
                others=described,
                finding=Finding(f"flag {flag.spelled()}", flag.where, "likely", note),
            )  # fmt: skip
    if framework == "lightning":
        note = "Lightning's default: lightning_logs/ in the working folder"
        return CheckpointPlan(
            "{repo}/lightning_logs", [LIGHTNING], others=described,
            finding=Finding("Lightning Trainer", None, "likely", note),
        )  # fmt: skip
    partial = next((s for s in sites if s.shape.refs()), None)
    return CheckpointPlan(
        "{ckpt}", _defaults(framework), others=described,
        finding=Finding(
            "checkpoint folder not found", partial.where if partial else None, "guess",
            "no save call with a known folder, and no output-folder flag",
        ),
        todo="set run.checkpoints to the folder the training saves into (and pass it there)",
    )  # fmt: skip


_CHECKPOINT_WORDS = re.compile(r"snapshot|ckpt|checkpoint|model|state|epoch|step", re.I)


def _named_pattern(sites: list[SaveSite]) -> tuple[str, SaveSite] | None:
    """A file pattern from a save whose folder is not known: ``**/network-snapshot-*.pkl``."""
    for site in sites:
        name = glob_of(site.shape.parts).rsplit("/", 1)[-1]
        if name.strip("*") and (CHECKPOINT_EXT.search(name) and _CHECKPOINT_WORDS.search(name)):
            return "**/" + name, site
    return None


def _defaults(framework: str) -> list[str]:
    if framework == "hf":
        return [HF_FOLDERS]
    if framework == "lightning":
        return [LIGHTNING]
    return list(ANY_CHECKPOINT)


def _default_name(flag: Flag) -> str | None:
    if isinstance(flag.default, str) and flag.default:
        return flag.default.rstrip("/").rsplit("/", 1)[-1]
    return None
