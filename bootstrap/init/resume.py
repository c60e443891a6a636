"""The flag that makes the training continue from a checkpoint, and what kind it is.

Three kinds, as RECIPE.md's ``run.resume`` takes them (added only when a checkpoint exists):

- a switch, ``--resume``: the code finds its checkpoint itself, in its output folder;
- a path, ``--resume PATH`` / ``-r PATH`` / ``--resume_from_checkpoint PATH`` / Lightning's
  ``--ckpt_path``: given ``{checkpoint}``, the newest file ``run.match`` names;
- a value, ``--init_from=resume``: a flag that chooses how to start, one choice being 'resume'.

Hugging Face's ``--resume_from_checkpoint`` only counts when the code passes it on to
``trainer.train(resume_from_checkpoint=...)``: the Trainer never reads it by itself.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal

from bootstrap.init.commandline import Cli, Flag, norm, words_of
from bootstrap.init.paths import Ref, Resolver
from bootstrap.init.source import Confidence, Finding, PyFile, Where, call_name, calls, keyword

Kind = Literal["switch", "path", "value"]

_EXACT = {"resume", "resume_from_checkpoint", "resume_path", "resume_from", "resume_ckpt",
          "resume_checkpoint", "auto_resume", "resume_training"}  # fmt: skip
_NEAR = {"restore", "restore_path", "restore_from", "continue_from", "continue_training",
         "load_checkpoint", "ckpt_path", "checkpoint_path", "load_from", "init_from",
         "load_ckpt", "ckpt", "checkpoint"}  # fmt: skip
_NOT_RESUME = ("pretrain", "weights", "finetune", "teacher", "init_weights", "backbone")
NO_RESUME = (
    "the training starts over after a restart or on a new VM. To make it resumable without "
    "changing its code, use loop mode (run.callable with run.setup and run.epochs); or save "
    "and restore with bootstrap.Checkpointer (README: 'Checkpointing for code that has none')"
)


@dataclass
class ResumePlan:
    kind: Kind | None
    flag: Flag | None
    args: list[str]
    finding: Finding


def choose_resume(cli: Cli | None, files: list[PyFile], stop: set[str]) -> ResumePlan:
    hf = _hugging_face(cli, files, stop)
    if hf is not None:
        return hf
    if cli is not None and cli.subcommand == "fit":
        flag = cli.find("ckpt_path")
        if flag is not None:
            text = "Lightning CLI fit --ckpt_path"
            return ResumePlan(
                "path", flag, [*cli.args(flag, "{checkpoint}")], Finding(text, cli.where, "sure")
            )
    compared = _compared_to_resume(files)
    used = _loaded(files, stop)
    best: tuple[int, Flag] | None = None
    for flag in cli.flags if cli else ():
        score = _score(flag, compared, used)
        if score >= 5 and (best is None or score > best[0]):
            best = (score, flag)
    if best is None or cli is None:
        why = "no flag named like resume, and none compared to 'resume'"
        if cli is not None and any(n.startswith("LightningCLI(run=False)") for n in cli.notes):
            why = cli.notes[0]
        return ResumePlan(None, None, [], Finding("no resume flag", None, "likely", why))
    score, flag = best
    name = norm(flag.dest)
    value_kind = (
        "resume" in flag.choices
        or name in compared
        or ("resume" not in name and "resume" in words_of(flag.help))
    )
    confidence: Confidence = "sure" if score >= 12 else "likely"
    if value_kind and "resume" not in name:
        where = compared.get(name, flag.where)
        text = f"{flag.spelled()}=resume (a value that chooses how to start)"
        return ResumePlan("value", flag, cli.args(flag, "resume"), Finding(text, where, confidence))
    if flag.switch:
        text = f"{flag.spelled()} (a switch: the code finds its own checkpoint)"
        return ResumePlan("switch", flag, cli.args(flag), Finding(text, flag.where, confidence))
    text = f"{flag.spelled()} PATH (given the newest checkpoint)"
    note = f"loaded at {used[name]}" if name in used else ""
    return ResumePlan(
        "path", flag, cli.args(flag, "{checkpoint}"), Finding(text, flag.where, confidence, note)
    )


def _score(flag: Flag, compared: dict[str, Where], used: dict[str, Where]) -> int:
    name = norm(flag.dest)
    if flag.positional:
        return 0
    if "resume" in name:
        score = 10 + (2 if name in _EXACT else 0)
    elif any(word in name for word in _NOT_RESUME):
        return 0
    elif name in compared or "resume" in flag.choices:
        score = 12  # the code itself tells 'resume' apart: as sure as a flag named so
    elif name in _NEAR:
        score = 4 + (2 if "resume" in words_of(flag.help) else 0)
    else:
        return 0
    return score + (2 if name in used else 0)


def _compared_to_resume(files: list[PyFile]) -> dict[str, Where]:
    """Names compared with the string 'resume' (``init_from == 'resume'``), and where."""
    found: dict[str, Where] = {}
    for py in files:
        for node in ast.walk(py.tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            texts = {s.value for s in sides if isinstance(s, ast.Constant)}
            for side in sides:
                if isinstance(side, (ast.Tuple, ast.List, ast.Set)):
                    texts |= {e.value for e in side.elts if isinstance(e, ast.Constant)}
            if "resume" not in texts:
                continue
            for side in sides:
                name = side.attr if isinstance(side, ast.Attribute) else getattr(side, "id", None)
                if name:
                    found.setdefault(norm(name), py.at(node))
    return found


def _loaded(files: list[PyFile], stop: set[str]) -> dict[str, Where]:
    """Names whose value is loaded as a checkpoint (torch.load, load_from_checkpoint, ...)."""
    found: dict[str, Where] = {}
    for py in files:
        resolver = Resolver(py, stop)
        for call in calls(py.tree):
            if call_name(call) not in ("load", "load_from_checkpoint", "load_state", "isfile"):
                continue
            for arg in call.args[:1]:
                for ref in resolver.shape(arg).refs():
                    found.setdefault(norm(ref.name), py.at(call))
    return found


def _hugging_face(cli: Cli | None, files: list[PyFile], stop: set[str]) -> ResumePlan | None:
    """The Trainer's resume: only what the code passes to trainer.train(...) counts."""
    train_calls = [
        (py, call)
        for py in files
        for call in calls(py.tree)
        if call_name(call) == "train" and "Trainer" in py.text and "transformers" in py.text
    ]
    if not train_calls:
        return None
    for py, call in train_calls:
        value = keyword(call, "resume_from_checkpoint")
        if value is None:
            continue
        refs = [r for r in Resolver(py, stop).shape(value).refs() if isinstance(r, Ref)]
        names = {norm(r.name) for r in refs} | {"resume_from_checkpoint"}
        for flag in cli.flags if cli else ():
            if norm(flag.dest) in names and not flag.switch and cli is not None:
                text = f"{flag.spelled()} PATH, passed to trainer.train"
                return ResumePlan(
                    "path", flag, cli.args(flag, "{checkpoint}"), Finding(text, py.at(call), "sure")
                )
        text = "trainer.train(resume_from_checkpoint=...) with no flag read"
        return ResumePlan(None, None, [], Finding(text, py.at(call), "guess", "check the code"))
    py, call = train_calls[0]
    if cli is None or cli.find("resume_from_checkpoint") is None:
        return None
    why = (
        "TrainingArguments has --resume_from_checkpoint, but trainer.train() is called without "
        "it here, so the flag does nothing"
    )
    return ResumePlan(None, None, [], Finding("no resume flag", py.at(call), "sure", why))
