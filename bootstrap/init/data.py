"""Where the training reads its data, and whether a ``data:`` entry is needed at all.

Code that downloads its own data (``download=True``, ``load_dataset``) needs none; nor does a
data path whose default is a file the repo ships. A data flag with no usable default, or a
literal ``data/...`` path missing from the repo, needs an archive staged from Drive: that
archive is the user's to name, so the entry is written with a ``{TODO}`` that blocks loading.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Literal

from bootstrap.init.commandline import Cli, Flag, norm
from bootstrap.init.source import Finding, PyFile, RepoScan, call_name, calls, keyword

DATA_FLAGS = (
    "data_dir", "data_root", "dataroot", "data_path", "dataset_dir", "dataset_path",
    "dataset_root", "data_folder", "train_dir", "data", "root", "input_file", "train_file",
    "train_data",
)  # fmt: skip
_PATH_CALLS = {"join", "open", "Path", "glob", "listdir", "ImageFolder", "memmap", "load",
               "read_csv", "fromfile", "DatasetFolder", "loadtxt"}  # fmt: skip
_DATA_PATH = re.compile(r"^(\./)?(data|datasets?)(/[^*{}%]*)?$")
_PATH_NAME = re.compile(r"(dir|path|root|folder)$", re.I)


@dataclass
class DataPlan:
    kind: Literal["downloads", "ships", "needs", "none"]
    finding: Finding
    flag: Flag | None = None  # the flag given the staged folder
    to: str | None = None  # data[].to
    value: str | None = None  # what the flag is given


def plan_data(scan: RepoScan, cli: Cli | None, files: list[PyFile]) -> DataPlan:
    for py in files:
        for call in calls(py.tree):
            download = keyword(call, "download")
            if isinstance(download, ast.Constant) and download.value is True:
                text = f"{call_name(call)}(download=True)"
                return DataPlan("downloads", Finding(text, py.at(call), "sure", _OWN))
            if call_name(call) == "load_dataset":
                return DataPlan("downloads", Finding("load_dataset()", py.at(call), "likely", _OWN))
    flag = _data_flag(cli)
    if flag is not None:
        default = flag.default if isinstance(flag.default, str) else ""
        if default and scan.exists(default.removeprefix("./")):
            note = f"its default, {default}, is in the repo"
            return DataPlan("ships", Finding(f"{flag.spelled()}", flag.where, "likely", note))
        note = f"default {default!r} is not in the repo" if default else "no default"
        return DataPlan(
            "needs",
            Finding(f"data flag {flag.spelled()}", flag.where, "likely", note),
            flag=flag,
            to="{scratch}/data",
            value="{scratch}/data",
        )
    for py in files:
        found = _literal_data_path(py)
        if found is None:
            continue
        path, node = found
        top = path.removeprefix("./").split("/")[0]
        if scan.exists(path.removeprefix("./")):
            note = "that path is in the repo"
            return DataPlan("ships", Finding(f"reads {path!r}", py.at(node), "likely", note))
        note = f"{top}/ is not in the repo: staged into the clone"
        return DataPlan(
            "needs", Finding(f"reads {path!r}", py.at(node), "likely", note), to="{repo}/" + top
        )
    return DataPlan("none", Finding("no data path or download found", None, "guess"))


_OWN = "the code downloads its own data: no data entry (an archive on Drive saves a download)"


def _data_flag(cli: Cli | None) -> Flag | None:
    if cli is None:
        return None
    for name in DATA_FLAGS:
        for flag in cli.flags:
            # A flag with choices names a data set ('cifar10'), not a folder.
            if norm(flag.dest) == name and not flag.switch and not flag.choices:
                return flag
    return None


def _literal_data_path(py: PyFile) -> tuple[str, ast.AST] | None:
    for node in ast.walk(py.tree):
        value: ast.expr | None = None
        if isinstance(node, ast.Call) and call_name(node) in _PATH_CALLS and node.args:
            value = node.args[0]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and _PATH_NAME.search(t.id) for t in node.targets
        ):
            value = node.value
        text = value.value if isinstance(value, ast.Constant) else None
        if isinstance(text, str) and _DATA_PATH.match(text):
            return text, node
    return None
