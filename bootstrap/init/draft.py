"""Put what was read together into the recipe's items, each with the comment that says where
it came from and how sure ``init`` is, and a ``{TODO}`` where the user must decide.

A value holding ``{TODO}`` is one the recipe loader refuses (a placeholder it knows ``init``
leaves, reported at its line), so such a recipe cannot run until it is filled. Other open
questions are ``TODO`` comments only: the recipe runs, but the comment says what to check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bootstrap.init.checkpoints import CheckpointPlan
from bootstrap.init.data import DataPlan
from bootstrap.init.entry import EntryChoice
from bootstrap.init.flags import CliChoice
from bootstrap.init.gpu import GpuPlan
from bootstrap.init.render import Item
from bootstrap.init.requirements import DEFAULT_KEEP, InstallPlan
from bootstrap.init.resume import NO_RESUME, ResumePlan
from bootstrap.init.smoke import SmokePlan

TODO = "{TODO}"


@dataclass
class Reading:
    """Everything ``init`` read from one clone."""

    url: str
    name: str
    ref: str | None
    path: str | None  # repo.path
    commit: str
    entry: EntryChoice
    cli: CliChoice
    install: InstallPlan
    data: DataPlan
    gpu: GpuPlan
    checkpoints: CheckpointPlan
    resume: ResumePlan
    smoke: SmokePlan
    todos: list[str] = field(default_factory=list)  # open questions that do not block
    notes: list[str] = field(default_factory=list)  # files that could not be read
    token_env: str | None = None  # repo.token_env, for a private repo


def build_items(r: Reading) -> list[Item]:
    items = [Item("version", 1), Item("name", r.name), _repo(r), _install(r)]
    data = _data(r)
    if data is not None:
        items.append(data)
    items.append(Item("gpu", r.gpu.gpu, [f"gpu: {r.gpu.finding.comment()}"]))
    run_args, smoke_args = _args(r)
    # Without a data entry, why not is said beside the args, where a data path would go.
    data_note = None if data is not None else f"data: {r.data.finding.comment()}"
    items.append(Item("run", _run(r, run_args, data_note)))
    if r.smoke.args or r.gpu.smoke_args:
        why = r.smoke.finding.comment() if r.smoke.finding else "a CPU device for --smoke"
        smoke = Item("smoke", [Item("run", [Item("args", smoke_args)])], [f"--smoke: {why}"])
        items.append(Item("profiles", [smoke]))
    return items


def _repo(r: Reading) -> Item:
    repo = [Item("url", r.url)]
    if r.ref:
        repo.append(Item("ref", r.ref, [f"init read {r.commit[:12]} at this ref"]))
    else:
        repo[0].comments.append(
            f"init read commit {r.commit[:12]}; add `ref: {r.commit[:12]}` to pin it"
        )
    if r.path:
        repo.append(Item("path", r.path))
    if r.token_env:
        repo.append(Item("token_env", r.token_env))
    return Item("repo", repo)


def _install(r: Reading) -> Item:
    plan = r.install
    notes = [f"install: {f.comment()}" for f in plan.findings]
    if plan.todo:
        notes.append(f"TODO: {plan.todo}")
        r.todos.append(f"install.packages: {plan.todo}")
    items = [Item("requirements", plan.requirements, notes)]
    if plan.packages:
        items.append(Item("packages", plan.packages))
    keep_notes = ["Held at the versions Colab preinstalls (the default list, plus the pins below"
                  " that would break Colab's builds)."]  # fmt: skip
    if plan.pins:
        keep_notes.append("Pins that differ from Colab's preinstalled version:")
        keep_notes += [f"  {pin}" for pin in plan.pins]
    if list(plan.keep) != list(DEFAULT_KEEP) or plan.pins:
        items.append(Item("keep", plan.keep, keep_notes))
    return Item("install", items)


def _data(r: Reading) -> Item | None:
    plan = r.data
    if plan.kind != "needs":
        return None
    why = (
        "TODO (blocks): put the data set in one archive on Drive (.tar, .tar.gz, .zip) and name "
        "it here; it is extracted into `to` on each new VM. If the archive holds a top folder, "
        "add it to the path the training is given."
    )
    entry = [
        Item("source", "{persist}/datasets/" + TODO + ".tar.gz", blocking="the data archive"),
        Item("to", plan.to or "{scratch}/data"),
    ]
    return Item("data", [entry], [f"data: {plan.finding.comment()}", why])


def _args(r: Reading) -> tuple[list[str], list[str]]:
    cli = r.cli.cli
    if cli is None:
        return [], []
    head = cli.head()
    if r.entry.chosen is not None:
        head += r.entry.chosen.config
    body: list[str] = []
    filled: set[str] = set()
    data = r.data
    if data.kind == "needs" and data.flag is not None:
        filled.add(data.flag.dest)
        if data.flag.positional:
            head += cli.args(data.flag, data.value)
        else:
            body += cli.args(data.flag, data.value)
    ck = r.checkpoints
    if ck.folder_flag is not None:
        body += cli.args(ck.folder_flag, "{ckpt}")
        filled.add(ck.folder_flag.dest)
    if ck.file_flag is not None:
        body += cli.args(ck.file_flag, "{ckpt}/" + ck.file_name)
        filled.add(ck.file_flag.dest)
    # Code that saves only when the loss improves (nanoGPT's family) would resume from an old
    # step after a restart: ask it to save at every evaluation.
    always = cli.find("always_save_checkpoint")
    if always is not None and always.default is False:
        body += cli.args(always, None if always.switch else "True")
    for flag in cli.flags:
        if flag.required and flag.dest not in filled and not flag.switch:
            body += cli.args(flag, TODO)
            r.todos.append(
                f"run.args: {flag.spelled()} is required; give it a value ({flag.where})"
            )
    smoke_body = [*body, *r.gpu.smoke_args, *r.smoke.args]
    return [*head, *body, *r.gpu.args], [*head, *smoke_body]


def _run(r: Reading, args: list[str], data_note: str | None) -> list[Item]:
    chosen = r.entry.chosen
    notes = [f"entry: {r.entry.finding.comment()}"]
    if r.entry.others:
        others = ", ".join(
            f"{e.value} ({e.score} point{'' if e.score == 1 else 's'})" for e in r.entry.others
        )
        notes.append(f"other candidates: {others}")
    if chosen is not None and chosen.command:
        shown = chosen.command if len(chosen.command) <= 160 else chosen.command[:157] + "..."
        notes.append(f"README runs it: {shown}")
    if chosen is not None and chosen.config:
        notes.append(
            f"args start with the config file that command gives: {' '.join(chosen.config)}"
        )
    if chosen is None:
        notes.append("TODO (blocks): name the script that trains, relative to the repo")
        entry = Item("script", TODO, notes, blocking="the entry point")
    else:
        entry = Item(chosen.kind, chosen.value, notes)
    items = [entry]
    cli_notes = [f"command line: {f.comment()}" for f in r.cli.findings]
    if r.cli.cli is not None:
        cli_notes += [f"note: {n}" for n in r.cli.cli.notes]
    if any(TODO in a for a in args):
        cli_notes.append("TODO (blocks): give the required flags marked {TODO} a value")
    if data_note:
        cli_notes.append(data_note)
    items.append(
        Item("args", args, cli_notes, blocking="a required flag" if TODO in "".join(args) else "")
    )
    ck = r.checkpoints
    ck_notes = [f"checkpoints: {ck.finding.comment()}" if ck.finding else "checkpoints"]
    if ck.others:
        ck_notes.append("other saves: " + ", ".join(ck.others[:5]))
    if ck.todo:
        ck_notes.append(f"TODO: {ck.todo}")
        r.todos.append(f"run.checkpoints: {ck.todo}")
    items.append(Item("checkpoints", ck.folder, ck_notes))
    items.append(Item("match", ck.match[0] if len(ck.match) == 1 else ck.match))
    if ck.folder == "{repo}":
        why = "the training saves into its working folder: everything in it is mirrored but these"
        items.append(Item("exclude", [".git", "**/*.py", "data"], [why]))
    res = r.resume
    res_notes = [f"resume: {res.finding.comment()}"]
    if res.kind is None:
        res_notes.append(f"No resume flag: {NO_RESUME}.")
        r.todos.append("run.resume: no resume flag found (loop mode or bootstrap.Checkpointer)")
        items.append(Item("restarts", 3, res_notes))
    else:
        if res.kind == "switch":
            res_notes.append("added only when a checkpoint exists; the code reads it from the "
                             "folder above")  # fmt: skip
        items.append(Item("resume", res.args, res_notes))
        items.append(Item("restarts", 3))
    return items
