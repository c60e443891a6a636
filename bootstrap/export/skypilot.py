"""A SkyPilot task that runs a recipe on cloud machines: ``--export skypilot``.

Persist becomes a bucket mounted on every node. A managed job (``sky jobs launch``) that loses
its spot VM is relaunched on a new one, where the same command finds the run state and the
checkpoint mirror in the bucket and resumes, as a re-run Colab cell does from Drive. Scratch
stays on each VM's own disk (the tool's default there), the clone and the data are fetched
again, and the training restarts from the newest mirrored checkpoint.

``task_config`` builds the task as plain data and ``render`` writes it as YAML. SkyPilot is
never imported: it is a test dependency only, whose own loader checks what is written here.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bootstrap.errors import Problem, RecipeError, UsageError
from bootstrap.export.portable import LineOf, portability_problems
from bootstrap.host import Host
from bootstrap.nodes import DEFAULT_MASTER_PORT, MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK
from bootstrap.options import Options
from bootstrap.plan import resolve_plan
from bootstrap.recipe.load import load_recipe
from bootstrap.recipe.models import Recipe
from bootstrap.recipe.placeholders import missing_env_vars
from bootstrap.recipe.source import KeyPath, dotted, read_yaml

PERSIST_MOUNT = "/colab-bootstrap"  # where the bucket is mounted on every node: {persist}
RECIPE_DIR = "~/.colab-bootstrap/recipe"  # where the run command writes the recipe
# The cluster installs the tool from its repository, as a Colab cell does: recipe format 1 is
# a stable contract, so a newer tool there runs a recipe this one accepts.
TOOL = "git+https://github.com/colab-bootstrap/colab-bootstrap"
# A recipe says whether it needs a GPU, not which: T4 is what Colab's free GPU runtime gives,
# so what a Colab recipe was sized for. --accelerators chooses another.
DEFAULT_GPU = "T4"
_ACCELERATORS = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?::([0-9]+))?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_BUCKET_URI = re.compile(r"[a-z0-9]+://[^\s/]+(/\S*)?")
# Variables the cluster sets itself: a recipe's ${HOME} means the VM's home, not this one's.
_OWN_VARIABLES = frozenset({"HOME", "USER", "LOGNAME", "PATH", "PWD", "SHELL", "TMPDIR", "LANG"})
# The image SkyPilot starts has no torch; Colab's has torch, torchvision and torchaudio, which
# the tool holds (install.keep) while it installs the repo's requirements. Install them the same.
SETUP = f"""\
set -e
python -c 'import torch' 2>/dev/null || python -m pip install torch torchvision torchaudio
python -m pip install {shlex.quote(TOOL)}
"""


@dataclass(frozen=True)
class SkyPilotChoices:
    """What the command line chose for the cloud machines."""

    bucket: str | None = None  # a bucket name (made when missing) or an existing one's URI
    accelerators: str | None = None  # GPUs per node, NAME or NAME:COUNT; from the recipe if None
    nodes: int = 1
    spot: bool = False


def export_skypilot(
    options: Options, choices: SkyPilotChoices, environ: Mapping[str, str] | None = None
) -> str:
    """The SkyPilot task YAML that runs ``options.recipe`` on ``choices.nodes`` machines.

    Raises UsageError for choices that cannot work on a cluster, and RecipeError naming every
    recipe key that cannot (a local folder as the repo, a data file on this disk, ...)."""
    _check_options(options, choices)
    env = dict(os.environ if environ is None else environ)
    recipe = load_recipe(
        options.recipe, profile=options.profile, overrides=options.sets, environ=env
    )
    source = recipe.source_path or Path(options.recipe).absolute()
    # Lines are those of the file as written: a value that a profile or --set replaced is
    # reported by its key alone, not at a line that holds something else.
    lines = {} if (options.profile or options.sets) else read_yaml(source)[1]
    line_of: LineOf = lines.get
    # Resolved as the cluster will resolve it (persist on the bucket, no Colab, no Drive),
    # only to tell which paths it will have.
    cluster = Host(
        on_colab=False,
        content_dir=Path("/content"),
        drive_mounted=False,
        gpu_names=(),
        boot_time=0.0,
    )
    # This machine's BOOTSTRAP_ settings (storage roots, a resume folder) are not the cluster's.
    cluster_env = {k: v for k, v in env.items() if not k.startswith("BOOTSTRAP_")}
    plan = resolve_plan(
        recipe,
        cluster,
        persist=PERSIST_MOUNT,
        scratch=options.scratch,
        environ=cluster_env,
        resume_from=options.resume_from,
    )
    problems = portability_problems(plan, str(source), line_of)
    problems += _cluster_problems(recipe, choices, str(source), line_of)
    if problems:
        raise RecipeError(problems)
    text = source.read_text(encoding="utf-8")
    return render(task_config(recipe, text, options, choices), _header(recipe, source, choices))


def task_config(
    recipe: Recipe, text: str, options: Options, choices: SkyPilotChoices
) -> dict[str, Any]:
    """The task as SkyPilot's YAML keys it; ``text`` is the recipe file, carried inside."""
    config: dict[str, Any] = {"name": recipe.name}
    resources = _resources(recipe, choices)
    if resources:
        config["resources"] = resources
    config["num_nodes"] = choices.nodes
    config["file_mounts"] = {PERSIST_MOUNT: _bucket_mount(str(choices.bucket))}
    secrets = needed_variables(recipe)
    if secrets:
        # No value: SkyPilot takes each from `--secret NAME` at launch, from the launching
        # shell's environment, and keeps it out of its logs. Nothing secret is written here.
        config["secrets"] = dict.fromkeys(secrets)
    config["setup"] = SETUP
    config["run"] = run_script(recipe, text, options, choices)
    return config


def run_script(recipe: Recipe, text: str, options: Options, choices: SkyPilotChoices) -> str:
    """What each node runs: write the recipe, then ``python -m bootstrap`` with persist on the
    bucket (and, for several nodes, torchrun's rendezvous from SkyPilot's variables)."""
    name = Path(recipe.source_path or options.recipe).name
    recipe_file = f"{RECIPE_DIR}/{shlex.quote(name)}"  # ~ unquoted, for the shell to expand
    # The recipe travels inside the task rather than as a file mount or workdir: a managed job
    # then needs nothing from this machine when it is relaunched after a preemption (SkyPilot
    # would otherwise upload local files to a bucket of its own first), and the task says
    # exactly what runs. Written by printf from one quoted word, never a heredoc that a line
    # of the recipe could end early; its ${VAR} stay for the tool to read on the node.
    lines = [
        "set -e",
        f"mkdir -p {RECIPE_DIR}",
        f"printf '%s' {shlex.quote(text)} > {recipe_file}",
    ]
    if choices.nodes > 1:
        # Every node runs the tool; node 0, the first of SKYPILOT_NODE_IPS, hosts torchrun's
        # static rendezvous (bootstrap.nodes.rendezvous_options reads these).
        lines += [
            f'export {NNODES}="$SKYPILOT_NUM_NODES"',
            f'export {NODE_RANK}="$SKYPILOT_NODE_RANK"',
            f'export {MASTER_ADDR}="$(printf \'%s\\n\' "$SKYPILOT_NODE_IPS" | head -n 1)"',
            f"export {MASTER_PORT}={DEFAULT_MASTER_PORT}",
        ]
    lines.append(f"python -m bootstrap {recipe_file} {shlex.join(tool_arguments(options))}")
    return "\n".join(lines) + "\n"


def tool_arguments(options: Options) -> list[str]:
    """The command line's choices that the cluster's run repeats, persist set to the bucket."""
    args = ["--persist", PERSIST_MOUNT]
    if options.scratch:
        args += ["--scratch", options.scratch]
    if options.resume_from:
        args += ["--resume-from", options.resume_from]
    if options.profile:
        args += ["--profile", options.profile]
    for override in options.sets:
        args += ["--set", override]
    if options.extend:
        args.append("--extend")
    return args


def needed_variables(recipe: Recipe) -> list[str]:
    """The environment variables the recipe needs on the cluster: repo.token_env and every
    ${VAR} without a default (the profile applied), in the order the recipe gives them."""
    names = [recipe.repo.token_env] if recipe.repo.token_env else []
    data = {key: value for key, value in recipe.to_dict().items() if key != "profiles"}
    for text in _strings(data):
        names += missing_env_vars(text, {})
    return [name for name in dict.fromkeys(names) if name not in _OWN_VARIABLES]


def render(config: Mapping[str, Any], header: Iterable[str] = ()) -> str:
    """The task as YAML, after ``header`` as comment lines."""
    body = yaml.dump(dict(config), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return "".join(f"# {line}".rstrip() + "\n" for line in header) + body


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the setup and run scripts) as literal blocks, as a person writes
    them. PyYAML still quotes one that a block cannot hold exactly (trailing spaces, tabs)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _check_options(options: Options, choices: SkyPilotChoices) -> None:
    if not choices.bucket:
        raise UsageError(
            "--export skypilot needs --bucket: persist (the run state, the logs, the "
            "checkpoint mirror) lives in a bucket, so that a new VM resumes the run",
            hint="add --bucket NAME (a new bucket of that name is made on first launch) or "
            "--bucket gs://existing-bucket (s3://, r2://, ... as SkyPilot reads them)",
        )
    if not (_BUCKET.fullmatch(choices.bucket) or _BUCKET_URI.fullmatch(choices.bucket)):
        raise UsageError(
            f"--bucket {choices.bucket!r} is neither a bucket name nor a bucket URI",
            hint="give 3 to 63 lower-case letters, digits, '-', '_' or '.', e.g. --bucket "
            "my-runs, or an existing bucket's URI, e.g. --bucket gs://my-runs",
        )
    if choices.nodes < 1:
        raise UsageError(f"--nodes {choices.nodes}: give 1 or more")
    if choices.accelerators is not None:
        parse_accelerators(choices.accelerators)
    refused = {
        "--persist": (
            options.persist is not None,
            "on the cluster persist is the bucket; choose it with --bucket",
        ),
        "--smoke": (options.smoke, "it runs CPU-only, for CI; run it here instead"),
        "--fresh": (
            options.fresh,
            "a managed job repeats its command after each preemption, so every relaunch would "
            "start over; for a new run, change the recipe's name (a new run folder) or remove "
            "runs/<name> from the bucket",
        ),
    }
    for option, (given, why) in refused.items():
        if given:
            raise UsageError(
                f"{option} does not go with --export: {why}", hint=f"leave out {option}"
            )


def parse_accelerators(text: str) -> tuple[str, int]:
    """``NAME`` or ``NAME:COUNT`` (GPUs per node) as (NAME, COUNT); UsageError otherwise."""
    match = _ACCELERATORS.fullmatch(text.strip())
    count = int(match.group(2)) if match and match.group(2) else 1
    if match is None or count < 1:
        raise UsageError(
            f"--accelerators {text!r} is not NAME or NAME:COUNT",
            hint="give the GPU type and how many per node, e.g. --accelerators A100:8 "
            "(`sky show-gpus` lists them)",
        )
    return match.group(1), count


def _per_node(recipe: Recipe) -> int | None:
    """The processes each node runs when the recipe fixes them (run.nproc under torchrun)."""
    run = recipe.run
    return run.nproc if run.launcher == "torchrun" and isinstance(run.nproc, int) else None


def _resources(recipe: Recipe, choices: SkyPilotChoices) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if choices.accelerators is not None:
        name, count = parse_accelerators(choices.accelerators)
        resources["accelerators"] = f"{name}:{count}"
    elif recipe.gpu != "none":  # optional too: a cloud VM without the GPU it can use is waste
        resources["accelerators"] = f"{DEFAULT_GPU}:{_per_node(recipe) or 1}"
    if choices.spot:
        resources["use_spot"] = True
    return resources


def _bucket_mount(bucket: str) -> dict[str, Any]:
    # MOUNT: the tool reads and writes persist as files, as it does Drive. persistent: the
    # bucket outlives every cluster and job, as it must for the run to resume.
    where = {"source": bucket} if "://" in bucket else {"name": bucket}
    return {**where, "mode": "MOUNT", "persistent": True}


def _cluster_problems(
    recipe: Recipe, choices: SkyPilotChoices, file: str, line_of: LineOf
) -> list[Problem]:
    def problem(path: KeyPath, message: str) -> Problem:
        return Problem(file, line_of(path), dotted(path), message)

    problems = []
    run = recipe.run
    if choices.nodes > 1 and run.launcher != "torchrun":
        problems.append(
            problem(
                ("run", "launcher"),
                f"--nodes {choices.nodes} needs run.launcher: torchrun (with python, each node "
                "would train alone, all writing the same run): set it in the recipe or add "
                "--set run.launcher=torchrun",
            )
        )
    if choices.nodes > 1 and recipe.repo.into == "persist":
        problems.append(
            problem(
                ("repo", "into"),
                f"--nodes {choices.nodes} with repo.into: persist would have every node clone "
                "into the same folder of the bucket at once: drop repo.into (each node clones "
                "to its own disk) or add --set repo.into=scratch",
            )
        )
    per_node = _per_node(recipe)
    if choices.accelerators is not None and per_node is not None:
        name, count = parse_accelerators(choices.accelerators)
        if per_node > count:
            problems.append(
                problem(
                    ("run", "nproc"),
                    f"run.nproc is {per_node}, one process per GPU, but --accelerators "
                    f"{choices.accelerators} gives each node {count}: pass --accelerators "
                    f"{name}:{per_node}, or --set run.nproc={count}",
                )
            )
    return problems


def _header(recipe: Recipe, source: Path, choices: SkyPilotChoices) -> list[str]:
    secrets = "".join(f" --secret {name}" for name in needed_variables(recipe))
    return [
        f"SkyPilot task for the colab-bootstrap recipe {recipe.name} ({source.name}).",
        f"Persist (run state, logs, checkpoint mirror) is the bucket {choices.bucket}, "
        f"mounted at {PERSIST_MOUNT}.",
        "Saved as task.yaml, launch it as a managed job, which a spot preemption relaunches",
        "on a new VM that resumes from the bucket:",
        f"  sky jobs launch -n {recipe.name} task.yaml{secrets}",
        f"or on a cluster you keep: sky launch -c {recipe.name} task.yaml{secrets}",
        "",
    ]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
