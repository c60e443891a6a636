"""Which file starts the training: ``train.py``, ``main.py``, ``scripts/train*.py``, a
``[project.scripts]`` entry, a file with a ``__main__`` guard, a command the README shows.

Every candidate gets points for each sign (its name, its place, a guard, training calls, a
command line, a README mention) and loses some for names that mean something else (eval,
sample, prepare); the best is chosen and the others listed, so the user can switch.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

from bootstrap.init.source import Confidence, Finding, PyFile, RepoScan, Where, has_main_guard

_OTHER_JOBS = re.compile(
    r"(^|[_/-])(eval|evaluate|test|tests|sample|generate|infer|inference|predict|export|demo|"
    r"prepare|download|preprocess|convert|setup|conftest|benchmark|bench|plot|visuali[sz]e)"
)
_TRAINING = re.compile(
    r"\.backward\(|optimizer\.step\(|\.step\(\)|trainer\.(train|fit)\(|\.fit\(|Trainer\(|"
    r"torch\.save\(|save_checkpoint\("
)
_CLI = re.compile(r"add_argument\(|click\.|fire\.Fire|HfArgumentParser|LightningCLI|configurator|"
                  r"simple_parsing|tyro\.cli|sys\.argv")  # fmt: skip
_README_COMMAND = re.compile(
    r"(?:python3?|torchrun|accelerate\s+launch|deepspeed|lightning\s+run\s+model)\b[^\n`]*?"
    r"(?:\s-m\s+([A-Za-z_][\w.]*)|\s((?:[\w.-]+/)*[\w.-]+\.py))"
)


@dataclass
class Entry:
    kind: Literal["script", "module"]
    value: str  # a script path relative to the repo, or a dotted module
    file: PyFile
    score: int = 0
    reasons: list[str] = field(default_factory=list)
    where: Where | None = None
    command: str = ""  # the README's command line that runs it
    config: list[str] = field(default_factory=list)  # a config file that command passes


@dataclass
class EntryChoice:
    chosen: Entry | None
    others: list[Entry]
    finding: Finding


def find_entry(scan: RepoScan) -> EntryChoice:
    mentioned = _readme_mentions(scan)
    scripts = _project_scripts(scan)
    entries: dict[str, Entry] = {}
    for py in scan.python_files():
        entry = _score(py, mentioned, scripts)
        if entry is not None:
            entries[py.path] = entry
    ranked = sorted(entries.values(), key=lambda e: (-e.score, e.value.count("/"), e.value))
    if not ranked:
        return EntryChoice(
            None,
            [],
            Finding(
                "no entry point found",
                None,
                "guess",
                "no train.py, main.py, scripts/train*.py, [project.scripts] or __main__ guard",
            ),
        )
    best, others = ranked[0], ranked[1:]
    margin = best.score - (others[0].score if others else 0)
    strong = any(r.startswith(("README", "__main__", "[project.scripts]")) for r in best.reasons)
    confidence: Confidence = (
        "sure" if margin >= 3 and strong else "likely" if margin >= 1 else "guess"
    )
    text = f"{best.kind} {best.value}: " + ", ".join(best.reasons)
    note = "" if margin >= 1 else f"as good as {others[0].value}: check which one trains"
    return EntryChoice(best, others[:6], Finding(text, best.where, confidence, note))


def _score(
    py: PyFile, mentioned: dict[str, tuple[Where, str]], scripts: dict[str, Where]
) -> Entry | None:
    path = py.path
    name = path.rsplit("/", 1)[-1]
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    guard = has_main_guard(py.tree)
    as_module = py.module
    readme_hit = mentioned.get(path) or mentioned.get(as_module)
    readme = readme_hit[0] if readme_hit else None
    script = scripts.get(as_module)
    top_level_code = any(
        isinstance(s, (ast.Expr, ast.For, ast.While, ast.With)) for s in py.tree.body
    )
    named = re.match(r"(train|main|run|pretrain|finetune|fine_tune)([_-].*)?\.py$", name)
    if name in ("__init__.py", "setup.py", "conftest.py") or not (
        guard or readme or script or (named and top_level_code)
    ):
        return None
    entry = Entry("script", path, py, where=py.at(guard) if guard else Where(path))
    if script is not None and not readme:
        entry = Entry("module", as_module, py, where=script)

    if readme_hit:
        entry.command = readme_hit[1]

    def sign(points: int, reason: str) -> None:
        entry.score += points
        entry.reasons.append(reason)

    if readme:
        sign(4, f"README shows it ({readme})")
    if script:
        sign(3, f"[project.scripts] names it ({script})")
    if guard:
        sign(2, "__main__ guard")
    if name == "train.py" and not folder:
        sign(5, "train.py at the root")
    elif name == "main.py" and not folder:
        sign(4, "main.py at the root")
    elif named and "train" in name:
        sign(3 if folder in ("", "scripts", "tools", "src") else 2, "a train*.py")
    elif named:
        sign(1, f"named {name}")
    if _TRAINING.search(py.text):
        sign(2, "trains (backward/step/fit/save)")
    if _CLI.search(py.text):
        sign(1, "reads a command line")
    if _OTHER_JOBS.search(path.lower().removesuffix(".py")):
        sign(-4, "its name says another job")
    depth = path.count("/")
    if depth > 1:
        entry.score -= depth - 1
    return entry


def _readme_mentions(scan: RepoScan) -> dict[str, tuple[Where, str]]:
    """Scripts and modules that a README runs: the first line that runs each, and the whole
    command (its continuation lines joined)."""
    found: dict[str, tuple[Where, str]] = {}
    for name in scan.listdir():
        if not name.lower().startswith("readme"):
            continue
        lines = (scan.text(name) or "").splitlines()
        for number, line in enumerate(lines, 1):
            for match in _README_COMMAND.finditer(line):
                target = match.group(1) or (match.group(2) or "").removeprefix("./")
                if target and target not in found:
                    command = line[match.start() :].strip()
                    more = number
                    while command.endswith("\\") and more < len(lines) and more < number + 30:
                        command = command[:-1].rstrip() + " " + lines[more].strip()
                        more += 1
                    found[target] = (Where(name, number), command.strip("`$ "))
    return found


_CONFIG_OPTIONS = ("-c", "--config", "--cfg", "--config-file", "--config_file", "--config-name")


def config_args(scan: RepoScan, entry: Entry) -> list[str]:
    """The config file the README's command gives the entry, when that file is in the repo:
    ``-c configs/x.yaml``, or a first positional ``config/x.py`` (nanoGPT's configurator)."""
    try:
        words = shlex.split(entry.command)
    except ValueError:
        return []
    tail = next(
        (words[i + 1 :] for i, w in enumerate(words) if w.removeprefix("./") == entry.value
         or (entry.kind == "module" and w == entry.value)),
        [],
    )  # fmt: skip
    for i, word in enumerate(tail):
        option, equals, value = word.partition("=")
        if option in _CONFIG_OPTIONS:
            path = value if equals else (tail[i + 1] if i + 1 < len(tail) else "")
            if path and scan.exists(path.removeprefix("./")):
                return [word] if equals else [word, path]
    first = tail[0] if tail else ""
    if re.search(r"\.(py|ya?ml|json)$", first) and scan.exists(first.removeprefix("./")):
        return [first]
    return []


def _project_scripts(scan: RepoScan) -> dict[str, Where]:
    """Modules named by [project.scripts] (pyproject.toml) or console_scripts (setup.py)."""
    found: dict[str, Where] = {}
    pyproject = scan.text("pyproject.toml") or ""
    section = False
    for number, line in enumerate(pyproject.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped == "[project.scripts]"
            continue
        match = re.match(r"[\w.-]+\s*=\s*['\"]([\w.]+)(?::[\w.]+)?['\"]", stripped)
        if section and match:
            found.setdefault(match.group(1), Where("pyproject.toml", number))
    setup = scan.text("setup.py") or ""
    for number, line in enumerate(setup.splitlines(), 1):
        for match in re.finditer(r"['\"][\w.-]+\s*=\s*([\w.]+):[\w.]+['\"]", line):
            found.setdefault(match.group(1), Where("setup.py", number))
    return found
