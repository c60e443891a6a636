"""Clone, update or copy the training repository.

``sync_repo`` brings ``dest`` to the commit a recipe asks for and is safe to call again after a
disconnect: a fresh clone happens in a sibling folder and is moved into place only when it is
complete; an existing clone of the same URL is fetched and moved only when the ref moved, and a
working tree with changes to tracked files is never overwritten. A local folder that is not a git
repository is copied instead (newer or changed files are copied again; nothing in ``dest`` is
ever deleted, because the training may write its own files there; ``bootstrap.repo.foldercopy``).

A token for a private https repository reaches git only through environment-only git config
(``GIT_CONFIG_COUNT``): never argv, never ``.git/config``, and it is scrubbed from every error
(``bootstrap.repo.gitsafety``, which also checks URLs and refs before git sees them).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bootstrap.errors import RepoError
from bootstrap.progress import ProgressFactory, no_progress
from bootstrap.repo.foldercopy import COPY_MARKER, copy_folder
from bootstrap.repo.gitprogress import git_progress
from bootstrap.repo.gitsafety import (
    check_ref,
    check_url,
    describe_url,
    explain_git_error,
    git_credentials,
    git_env,
    resolve_local_path,
    url_key,
)

if TYPE_CHECKING:  # GitPython runs `git version` when imported: keep it out of import time
    from git import Repo
    from git.exc import GitCommandError

__all__ = [
    "COPY_MARKER",
    "Action",
    "RepoResult",
    "check_ref",
    "check_url",
    "describe_url",
    "resolve_local_path",
    "sync_repo",
]

log = logging.getLogger(__name__)

Action = Literal["cloned", "updated", "unchanged", "copied"]

_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class RepoResult:
    url_display: str  # the URL without credentials, or the local folder
    dest: Path
    commit: str  # full SHA; for a copied folder, a digest of its file list (sizes, mtimes)
    ref: str | None  # the ref asked for, or the remote's default branch when none was
    action: Action
    seconds: float


def sync_repo(
    url: str,
    dest: Path,
    *,
    ref: str | None = None,
    token: str | None = None,
    submodules: bool = False,
    base_dir: Path | None = None,
    progress: ProgressFactory = no_progress,
    shallow: bool = False,
) -> RepoResult:
    """Clone ``url`` into ``dest`` at ``ref``, update an earlier clone, or copy a plain folder.

    ``shallow`` clones only the commit asked for (``git clone --depth 1``), for a look at the
    files (``bootstrap init``); a ref that is a commit SHA (or a full ``refs/...`` name) is
    cloned whole, since a shallow clone can only start from a branch or a tag name."""
    started = time.monotonic()
    dest = Path(os.path.abspath(Path(dest).expanduser()))
    check_url(url)
    if ref is not None:
        check_ref(ref)
    local = resolve_local_path(url, base_dir)
    if local is not None:
        if not local.is_dir():
            what = "is not a folder" if local.exists() else "does not exist"
            raise RepoError(
                f"repo.url {url!r}: {local} {what}",
                hint="fix repo.url (a relative path is relative to the recipe's folder)",
            )
        if not _is_git_repo(local):
            if ref is not None:
                raise RepoError(
                    f"repo.ref is {ref!r}, but {local} is a plain folder, not a git repository",
                    hint="remove repo.ref, or point repo.url at a git repository",
                )
            commit, copied = copy_folder(local, dest, progress)
            return RepoResult(str(local), dest, commit, None, copied, time.monotonic() - started)
        if "\\" in str(local):  # GitPython turns backslashes into slashes in clone URLs
            raise RepoError(f"{local}: git repositories in paths with '\\' are not supported")
    target = str(local) if local is not None else url
    auth, secrets, plain_url = git_credentials(target, token)
    display = describe_url(target)
    env = git_env(auth, allow_file=local is not None or url.startswith("file:"))
    try:
        if _dest_state(dest, display) == "git":
            action, commit, ref_name = _update(plain_url, dest, ref, submodules, env, progress)
        else:
            by_name = not ref or not (_HEX.fullmatch(ref) or ref.startswith("refs/"))
            depth = 1 if shallow and by_name else None
            commit, ref_name = _clone(plain_url, dest, ref, submodules, env, progress, depth)
            action = "cloned"
    except _git_error_type() as exc:
        raise explain_git_error(exc, display, dest, token is not None, secrets) from None
    log.debug("%s %s at %s in %s", action, display, commit[:10], dest)
    return RepoResult(display, dest, commit, ref_name, action, time.monotonic() - started)


def _is_git_repo(path: Path) -> bool:
    bare = (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()
    return (path / ".git").exists() or bare


def _dest_state(dest: Path, display: str) -> Literal["absent", "git"]:
    if not dest.exists():
        return "absent"
    fix = f"delete or move {dest} and run again"
    if not dest.is_dir():
        raise RepoError(f"{dest} is a file, not a folder to clone {display} into", hint=fix)
    if (dest / ".git").exists():
        return "git"
    if (dest / COPY_MARKER).exists():
        raise RepoError(
            f"{dest} holds a copy of a plain folder, not a clone of {display}", hint=fix
        )
    if any(dest.iterdir()):
        raise RepoError(f"{dest} exists, is not empty and is not a clone of {display}", hint=fix)
    return "absent"


def _clone(
    url: str,
    dest: Path,
    ref: str | None,
    submodules: bool,
    env: dict[str, str],
    progress: ProgressFactory,
    depth: int | None = None,
) -> tuple[str, str | None]:
    from git import Repo

    # Clone beside dest and move it in when complete, so a kill mid-clone leaves no half repo.
    partial = dest.parent / f".{dest.name}.cloning"
    shutil.rmtree(partial, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A shallow clone fetches one branch or tag: the one asked for, by name.
    shallow = ["--depth", str(depth)] if depth else []
    if depth and ref:
        shallow += ["--branch", ref]  # check_ref refused a ref git could read as an option
    try:
        with git_progress(progress, f"clone {dest.name}") as bar:
            repo = Repo.clone_from(
                url, partial, progress=bar, env=env, no_checkout=True, multi_options=shallow or None
            )
        # GitPython rewrites the remote URL and mangles quotes and backslashes; git writes it right.
        repo.git.remote("set-url", "origin", url)
        commit, ref_name = _resolve(repo, ref, url)
        _checkout(repo, commit, submodules)
        if dest.exists():
            dest.rmdir()  # empty, checked by _dest_state
        os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return commit, ref_name


def _update(
    url: str,
    dest: Path,
    ref: str | None,
    submodules: bool,
    env: dict[str, str],
    progress: ProgressFactory,
) -> tuple[Action, str, str | None]:
    from git import GitCommandError, Repo

    repo = Repo(dest)
    repo.git.update_environment(**env)
    try:
        origin = repo.git.config("--get", "remote.origin.url")  # GitPython misreads quotes
    except GitCommandError:
        origin = "(no origin remote)"
    if url_key(origin) != url_key(url):
        raise RepoError(
            f"{dest} is a clone of {describe_url(origin)}, not of {describe_url(url)}",
            hint=f"delete or move {dest} to clone {describe_url(url)} there",
        )
    head = repo.git.rev_parse("--verify", "--quiet", "HEAD^{commit}", with_exceptions=False)
    if ref is not None and _FULL_SHA.fullmatch(ref) and head == ref.lower():
        return "unchanged", head, ref  # a SHA cannot move: no need to reach the remote
    with git_progress(progress, f"fetch {dest.name}") as bar:
        repo.remotes.origin.fetch(progress=bar, prune=True, tags=True, force=True)
    if ref is None:  # the remote's default branch may have changed
        repo.git.remote("set-head", "origin", "--auto")
    commit, ref_name = _resolve(repo, ref, url)
    if commit == head:
        if submodules:
            repo.git.submodule("update", "--init", "--recursive")
        return "unchanged", commit, ref_name
    if repo.is_dirty(untracked_files=False):
        raise RepoError(
            f"{dest} has changes to tracked files; moving it to {ref_name or 'HEAD'} "
            f"({commit[:10]}) would overwrite them",
            hint=f"commit or stash them (git -C '{dest}' stash), or delete {dest}; then run again",
        )
    _checkout(repo, commit, submodules)
    return "updated", commit, ref_name


def _checkout(repo: Repo, commit: str, submodules: bool) -> None:
    repo.git.checkout("--detach", commit)
    if submodules:
        repo.git.submodule("update", "--init", "--recursive")


def _resolve(repo: Repo, ref: str | None, url: str) -> tuple[str, str | None]:
    """The full SHA ``ref`` names in the fetched clone: a branch, then a tag, then a commit."""

    def commit_of(name: str) -> str | None:
        out = repo.git.rev_parse("--verify", "--quiet", f"{name}^{{commit}}", with_exceptions=False)
        return out.strip() or None

    if ref is None:
        head = repo.git.symbolic_ref("-q", "refs/remotes/origin/HEAD", with_exceptions=False)
        commit = commit_of(head) if head else None
        if commit is None:
            raise RepoError(
                f"{describe_url(url)} has no default branch (is it empty?)",
                hint="push a commit to it, or set repo.ref",
            )
        return commit, head.removeprefix("refs/remotes/origin/")
    names = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"]
    if ref.startswith(("refs/heads/", "refs/tags/")):
        names.insert(0, ref.replace("refs/heads/", "refs/remotes/origin/", 1))
    if _HEX.fullmatch(ref):
        names.append(ref)
    for name in names:
        commit = commit_of(name)
        if commit:
            return commit, ref
    # A commit no branch reaches, or a ref outside branches and tags (refs/pull/1/head).
    if _FULL_SHA.fullmatch(ref) or ref.startswith("refs/"):
        from git import GitCommandError

        try:
            repo.git.fetch("origin", ref)
        except GitCommandError:
            pass  # not on the remote either: report it as unknown below
        else:
            commit = commit_of(ref if _FULL_SHA.fullmatch(ref) else "FETCH_HEAD")
            if commit:
                return commit, ref
    raise RepoError(
        f"ref {ref!r} not found in {describe_url(url)}; {_known_refs(repo)}",
        hint="set repo.ref to one of these, to a commit SHA, or remove it for the default branch",
    )


def _known_refs(repo: Repo) -> str:
    found = []
    for kind, prefix in (("branches", "refs/remotes/origin/"), ("tags", "refs/tags/")):
        out = repo.git.for_each_ref("--format=%(refname)", prefix, with_exceptions=False)
        names = [n[len(prefix) :] for n in out.splitlines() if n != prefix + "HEAD"]
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        found.append(f"{kind}: {', '.join(names[:10]) or '(none)'}{more}")
    return "; ".join(found)


def _git_error_type() -> type[GitCommandError]:
    from git import GitCommandError

    return GitCommandError
