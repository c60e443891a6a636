"""Clone, update or copy the training repository.

``sync_repo`` brings ``dest`` to the commit a recipe asks for and is safe to call again after a
disconnect: a fresh clone happens in a sibling folder and is moved into place only when it is
complete; an existing clone of the same URL is fetched and moved only when the ref moved, and a
working tree with changes to tracked files is never overwritten. A local folder that is not a git
repository is copied instead (newer or changed files are copied again; nothing in ``dest`` is
ever deleted, because the training may write its own files there).

A token for a private https repository reaches git only through environment-only git config
(``GIT_CONFIG_COUNT``): never argv, never ``.git/config``, and it is scrubbed from every error.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from bootstrap.errors import RepoError
from bootstrap.fsutil import atomic_write_json, read_json
from bootstrap.progress import ProgressBar, ProgressFactory, no_progress

if TYPE_CHECKING:  # GitPython runs `git version` when imported: keep it out of import time
    from git import Repo
    from git.exc import GitCommandError

log = logging.getLogger(__name__)

Action = Literal["cloned", "updated", "unchanged", "copied"]
COPY_MARKER = ".bootstrap-copy"  # in a copied folder: which source it is a copy of

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP = re.compile(r"^([^@/\s]+)@([^:/\s]+):")  # git@github.com:me/repo.git
_TRANSPORT = re.compile(r"^[A-Za-z0-9+.-]+::")  # ext::cmd, fd::, any remote helper
_SCHEMES = {"https", "http", "ssh", "git", "file", "git+ssh", "ssh+git"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_REF = re.compile(r"[\s~^:?*\[\\\x00-\x1f\x7f]|\.\.|@\{|//|/\.|\.lock(/|$)|^\.|[/.]$")
_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class RepoResult:
    url_display: str  # the URL without credentials, or the local folder
    dest: Path
    commit: str  # full SHA; for a copied folder, a digest of its file list (sizes, mtimes)
    ref: str | None  # the ref asked for, or the remote's default branch when none was
    action: Action
    seconds: float


def describe_url(url: str) -> str:
    """``url`` safe to show: https://user:pw@host/x -> https://host/x; ssh keeps its user."""
    match = _SCHEME.match(url)
    if not match:
        return url
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    keep = f"{user}@" if match.group(1).lower() in {"ssh", "git+ssh", "ssh+git"} and user else ""
    return parts._replace(netloc=keep + host).geturl()


def resolve_local_path(url: str, base_dir: Path | None = None) -> Path | None:
    """The folder ``url`` names when it is a local path (relative to ``base_dir``), else None."""
    if _SCHEME.match(url) or _SCP.match(url) or _TRANSPORT.match(url):
        return None
    path = Path(url).expanduser()
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return Path(os.path.abspath(path))


def sync_repo(
    url: str,
    dest: Path,
    *,
    ref: str | None = None,
    token: str | None = None,
    submodules: bool = False,
    base_dir: Path | None = None,
    progress: ProgressFactory = no_progress,
) -> RepoResult:
    """Clone ``url`` into ``dest`` at ``ref``, update an earlier clone, or copy a plain folder."""
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
            commit, action = _copy_folder(local, dest, progress)
            return RepoResult(str(local), dest, commit, None, action, time.monotonic() - started)
        if "\\" in str(local):  # GitPython turns backslashes into slashes in clone URLs
            raise RepoError(f"{local}: git repositories in paths with '\\' are not supported")
    target = str(local) if local is not None else url
    auth, secrets, plain_url = _credentials(target, token)
    display = describe_url(target)
    env = _git_env(auth, allow_file=local is not None or url.startswith("file:"))
    try:
        if _dest_state(dest, display) == "git":
            action, commit, ref_name = _update(plain_url, dest, ref, submodules, env, progress)
        else:
            commit, ref_name = _clone(plain_url, dest, ref, submodules, env, progress)
            action = "cloned"
    except _git_error_type() as exc:
        raise _explain(exc, display, dest, token is not None, secrets) from None
    log.debug("%s %s at %s in %s", action, display, commit[:10], dest)
    return RepoResult(display, dest, commit, ref_name, action, time.monotonic() - started)


def check_url(url: str) -> None:
    """Refuse URLs that make git run commands or read options, before git ever sees them."""
    why = None
    scheme = _SCHEME.match(url)
    if not url.strip():
        why = "is empty"
    elif url.startswith("-"):
        why = "starts with '-', which git would read as an option"
    elif _CONTROL.search(url):
        why = "contains control characters"
    elif _TRANSPORT.match(url):
        why = "uses git's transport::address form, which can run commands"
    elif scheme and scheme.group(1).lower() not in _SCHEMES:
        why = f"uses the unsupported scheme {scheme.group(1)!r}"
    elif (scheme or _SCP.match(url)) and not url.startswith("file:") and re.search(r"\s", url):
        why = "contains whitespace"
    elif scheme or _SCP.match(url):
        netloc = urlsplit(url).netloc if scheme else url.partition(":")[0]
        if any(part.startswith("-") for part in re.split("[@:]", netloc)):
            why = "names a user or host starting with '-', which ssh would read as an option"
    if why:
        raise RepoError(
            f"repo.url {describe_url(url)!r} {why}",
            hint="use an https://, ssh://, git@host:path or file:// URL, or a local folder",
        )


def check_ref(ref: str) -> None:
    """Refuse refs that git would read as options or that no branch, tag or commit can have."""
    if not ref or ref.startswith("-") or ref == "@" or _BAD_REF.search(ref):
        raise RepoError(
            f"repo.ref {ref!r} is not a valid branch, tag or commit name",
            hint="give a branch (main), a tag (v1.0) or a commit SHA",
        )


def _is_git_repo(path: Path) -> bool:
    bare = (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()
    return (path / ".git").exists() or bare


def _credentials(url: str, token: str | None) -> tuple[list[tuple[str, str]], list[str], str]:
    """Git config carrying ``token`` (or a URL's user:password), the secrets, the plain URL."""
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme not in {"http", "https"}:
        if token:
            log.warning("a token only applies to https URLs; not using it for %s", url)
        return [], [], url
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    plain = parts._replace(netloc=host).geturl() if password else url
    if not token and not password:
        return [], [], url
    if scheme == "http" and (parts.hostname or "") not in _LOOPBACK:
        raise RepoError(
            f"refusing to send credentials for {describe_url(url)} over plain http",
            hint="use the https:// URL of the repository",
        )
    pair = f"x-access-token:{token}" if token else f"{user}:{password}"
    encoded = base64.b64encode(pair.encode()).decode()
    # Scoped to the host, so that submodules elsewhere never see the token.
    config = [(f"http.{scheme}://{host}/.extraHeader", f"Authorization: Basic {encoded}")]
    return config, [s for s in (token, password, encoded) if s], plain


def _git_env(auth: list[tuple[str, str]], *, allow_file: bool) -> dict[str, str]:
    # A remote repo may not pull in file:// submodules (CVE-2022-39253); a local one may.
    protocols = "file:git:http:https:ssh" if allow_file else "git:http:https:ssh"
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": protocols}
    # Abort a transfer stuck below 1 kB/s for a minute instead of hanging the cell forever.
    config = [("http.lowSpeedLimit", "1000"), ("http.lowSpeedTime", "60"), *auth]
    first = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)  # keep the user's own entries
    for index, (key, value) in enumerate(config, start=first):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    env["GIT_CONFIG_COUNT"] = str(first + len(config))
    return env


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
) -> tuple[str, str | None]:
    from git import Repo

    # Clone beside dest and move it in when complete, so a kill mid-clone leaves no half repo.
    partial = dest.parent / f".{dest.name}.cloning"
    shutil.rmtree(partial, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _git_progress(progress, f"clone {dest.name}") as bar:
            repo = Repo.clone_from(url, partial, progress=bar, env=env, no_checkout=True)
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
    if _url_key(origin) != _url_key(url):
        raise RepoError(
            f"{dest} is a clone of {describe_url(origin)}, not of {describe_url(url)}",
            hint=f"delete or move {dest} to clone {describe_url(url)} there",
        )
    head = repo.git.rev_parse("--verify", "--quiet", "HEAD^{commit}", with_exceptions=False)
    if ref is not None and _FULL_SHA.fullmatch(ref) and head == ref.lower():
        return "unchanged", head, ref  # a SHA cannot move: no need to reach the remote
    with _git_progress(progress, f"fetch {dest.name}") as bar:
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


def _url_key(url: str) -> str:
    if url.startswith("file://"):  # git takes file URLs with or without %-escapes
        url = unquote(url[len("file://") :])
    local = resolve_local_path(url, None)
    if local is not None:
        return str(local.resolve()).removesuffix("/.git")
    key = describe_url(url).rstrip("/").removesuffix(".git")
    scheme = _SCHEME.match(key)
    return key.lower() if not scheme else key[: scheme.end()].lower() + key[scheme.end() :]


_NETWORK = "check the network connection and the host name in repo.url"
_FAILURES = (  # what git says; the hint without a token; the hint with one
    (
        re.compile(
            r"authentication failed|could not read (username|password)|error: 40[13]"
            r"|terminal prompts disabled|permission denied",
            re.I,
        ),
        "the repository needs credentials: set repo.token_env to an environment variable "
        "holding a token (https), or use an ssh URL with a key",
        "check that the token in the variable named by repo.token_env is valid and may read "
        "this repository",
    ),
    (
        re.compile(
            r"could not resolve host|failed to connect|timed out|unreachable|refused|too slow",
            re.I,
        ),
        _NETWORK,
        _NETWORK,
    ),
    (
        re.compile(r"not found|does not appear to be|does not exist", re.I),
        "check repo.url; a private repository also looks missing without a token: "
        "set repo.token_env",
        "check repo.url",
    ),
)


def _git_error_type() -> type[GitCommandError]:
    from git import GitCommandError

    return GitCommandError


def _explain(
    exc: GitCommandError, display: str, dest: Path, has_token: bool, secrets: list[str]
) -> RepoError:
    """A RepoError saying what git could not do and what to try, with every secret removed."""
    stderr = str(exc.stderr or "").strip().removeprefix("stderr: '").removesuffix("'").strip()
    for secret in secrets:
        stderr = stderr.replace(secret, "***")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "Cloning into" not in ln]
    stderr = "\n".join(lines)
    reason = next((ln for ln in lines if ln.startswith(("fatal", "error"))), "")
    reason = reason or (lines[-1] if lines else f"git {exc.command[1:2]} failed")
    for pattern, hint, token_hint in _FAILURES:
        if pattern.search(stderr):
            hint = token_hint if has_token else hint
            break
    else:
        hint = f"look at the git output below; deleting {dest} starts over with a fresh clone"
    return RepoError(
        f"git could not sync {display} into {dest}: {reason}", hint=hint, details=stderr or None
    )


@contextlib.contextmanager
def _git_progress(factory: ProgressFactory, label: str) -> Iterator[Any]:
    """A GitPython RemoteProgress that opens one ``factory`` bar per stage of the transfer."""
    from git import GitCommandError, RemoteProgress

    rp = RemoteProgress
    stages = {
        rp.COUNTING: "counting objects", rp.COMPRESSING: "compressing objects",
        rp.RECEIVING: "receiving objects", rp.RESOLVING: "resolving deltas",
        rp.WRITING: "writing objects", rp.FINDING_SOURCES: "finding sources",
        rp.CHECKING_OUT: "checking out files",
    }  # fmt: skip

    class Bridge(RemoteProgress):
        bar: ProgressBar | None = None
        stage = -1
        done = 0

        def update(
            self, op_code: int, cur_count: Any, max_count: Any = None, message: str = ""
        ) -> None:
            stage = op_code & self.OP_MASK
            if stage != self.stage or self.bar is None:
                self.close()
                self.stage, self.done = stage, 0
                total = int(max_count) if max_count else None
                name = stages.get(stage, "working")
                self.bar = factory(f"{label}: {name}", total=total, unit="objects")
            count = int(cur_count or 0)
            if count > self.done:
                self.bar.advance(count - self.done)
                self.done = count
            if op_code & self.END:
                self.close()

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    bridge = Bridge()
    try:
        yield bridge
    except GitCommandError as exc:
        # With progress on, GitPython reads git's stderr itself: give the error what git said.
        exc.stderr = exc.stderr or "\n".join(bridge.other_lines + bridge.error_lines)
        raise
    finally:
        bridge.close()


def _copy_folder(src: Path, dest: Path, progress: ProgressFactory) -> tuple[str, Action]:
    """Copy new and changed files (by size and mtime) of ``src`` into ``dest``; delete nothing."""
    marker = dest / COPY_MARKER
    fix = f"delete or move {dest} and run again"
    if dest.exists() and not dest.is_dir():
        raise RepoError(f"{dest} is a file, not a folder to copy {src} into", hint=fix)
    if dest.is_dir() and any(dest.iterdir()):
        recorded = read_json(marker)
        if not isinstance(recorded, dict) or recorded.get("source") != str(src):
            what = (
                f"a copy of {recorded['source']}" if isinstance(recorded, dict) else "other files"
            )
            raise RepoError(f"{dest} already holds {what}, not a copy of {src}", hint=fix)
    try:
        # The marker goes first so that a copy interrupted half-way is recognised and resumed.
        atomic_write_json(marker, {"source": str(src)})
        digest, todo = hashlib.sha1(), []
        for rel, stat, link in _walk(src, skip=dest):
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\0{link}\n".encode())
            if not _same_file(dest / rel, stat, link):
                todo.append((rel, stat.st_size, link))
        bar = progress(f"copy {src.name}", total=sum(size for _, size, _ in todo), unit="B")
        for rel, size, link in todo:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or (link is not None and target.exists()):
                target.unlink()
            if link is not None:
                os.symlink(link, target)
            else:
                shutil.copy2(src / rel, target)
            bar.advance(size)
        bar.close()
    except OSError as exc:
        raise RepoError(f"could not copy {src} into {dest}: {exc}", hint=fix) from exc
    return digest.hexdigest(), "copied" if todo else "unchanged"


def _walk(src: Path, skip: Path) -> Iterator[tuple[Path, os.stat_result, str | None]]:
    """(relative path, lstat, link target or None) of every file and symlink under ``src``."""
    for root, dirs, files in os.walk(src):
        here = Path(root)
        links = [d for d in dirs if (here / d).is_symlink()]  # copied as links, not followed
        dirs[:] = sorted(d for d in dirs if d not in links and here / d != skip)
        for name in sorted(files + links):
            path = here / name
            if here == src and name == COPY_MARKER:
                continue
            stat = path.lstat()
            link = os.readlink(path) if path.is_symlink() else None
            yield path.relative_to(src), stat, link


def _same_file(target: Path, stat: os.stat_result, link: str | None) -> bool:
    try:
        have = target.lstat()
    except FileNotFoundError:
        return False
    if link is not None:
        return target.is_symlink() and os.readlink(target) == link
    return have.st_size == stat.st_size and have.st_mtime_ns == stat.st_mtime_ns
