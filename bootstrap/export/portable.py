"""Whether a recipe can run on another machine: a fresh VM that has nothing of this one's disk.

There the tool fetches everything itself, so the repo must be a URL it can clone, and each data
source a URL, a file in persist (which an exporter puts where every machine reaches it: a
bucket) or a file inside the clone. Any other path names this machine's disk, and would fail
there only after the VM was paid for; it is reported here, before anything is launched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bootstrap.errors import Problem
from bootstrap.plan import Plan
from bootstrap.recipe.source import KeyPath, dotted
from bootstrap.values import is_scp_like, is_url, url_scheme

REPO_FIX = (
    "push it to a git host and give its URL, e.g. https://github.com/me/project.git "
    "(with repo.token_env for a private repo)"
)
DATA_FIX = (
    'copy it into persist storage (the bucket) and write "{persist}/<its path there>", '
    "or give an http(s) URL"
)

LineOf = Callable[[KeyPath], int | None]


def portability_problems(plan: Plan, file: str, line_of: LineOf) -> list[Problem]:
    """Every key of ``plan``'s recipe that names something only this machine has.

    ``plan`` is resolved with persist at the path the other machine will have it (so a source
    under ``{persist}`` is recognised); ``line_of`` gives a key's line in ``file``."""

    def problem(path: KeyPath, message: str) -> Problem:
        return Problem(file, line_of(path), dotted(path), message)

    problems = []
    url = plan.repo_url
    if url_scheme(url) == "file" or not (is_url(url) or is_scp_like(url)):
        where = "a file:// URL" if is_url(url) else "a folder"
        problems.append(
            problem(
                ("repo", "url"),
                f"{url} is {where} on this machine, which the cluster cannot clone: {REPO_FIX}",
            )
        )
    for step in plan.data:
        if is_url(step.source) and url_scheme(step.source) != "file":
            continue  # fetched by the tool on the cluster, which says which schemes it reads
        if not is_url(step.source) and _reachable(Path(step.source), plan):
            continue
        problems.append(
            problem(
                ("data", step.index, "source"),
                f"{step.source} is on this machine's disk, which the cluster does not have: "
                f"{DATA_FIX}",
            )
        )
    # storage.resume_from or --resume-from: an earlier run's output, read where it is.
    if plan.resume_from is not None and not _reachable(plan.resume_from, plan):
        message = (
            f"{plan.resume_from} is on this machine's disk, which the cluster does not have: "
            f"copy it into persist storage (the bucket, {plan.persist} on the cluster) and "
            "give that path"
        )
        origin = plan.resume_from_origin
        problems.append(
            problem(("storage", "resume_from"), message)
            if origin == "storage.resume_from"
            else Problem(origin, None, "", message)
        )
    return problems


def _reachable(path: Path, plan: Plan) -> bool:
    """A path in persist (on the bucket), or in the clone (made by the tool before the data
    items that read from it)."""
    return any(path == root or root in path.parents for root in (plan.persist, plan.clone_dir))
