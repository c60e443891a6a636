"""What git may be given and what may be shown, for the repo step.

Repo URLs and refs are checked before git sees them (no option injection, no command-running
transports), local paths are told from URLs, credentials reach git only through environment-only
git config (``GIT_CONFIG_COUNT``: never argv, never ``.git/config``), and git's errors are
explained with every secret removed.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from bootstrap.errors import RepoError
from bootstrap.values import is_scp_like, is_url, url_scheme

if TYPE_CHECKING:  # GitPython runs `git version` when imported: keep it out of import time
    from git.exc import GitCommandError

log = logging.getLogger(__name__)

_TRANSPORT = re.compile(r"^[A-Za-z0-9+.-]+::")  # ext::cmd, fd::, any remote helper
_SCHEMES = {"https", "http", "ssh", "git", "file", "git+ssh", "ssh+git"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_REF = re.compile(r"[\s~^:?*\[\\\x00-\x1f\x7f]|\.\.|@\{|//|/\.|\.lock(/|$)|^\.|[/.]$")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def describe_url(url: str) -> str:
    """``url`` safe to show: https://user:pw@host/x -> https://host/x; ssh keeps its user."""
    scheme = url_scheme(url)
    if not scheme:
        return url
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    keep = f"{user}@" if scheme in {"ssh", "git+ssh", "ssh+git"} and user else ""
    return parts._replace(netloc=keep + host).geturl()


def resolve_local_path(url: str, base_dir: Path | None = None) -> Path | None:
    """The folder ``url`` names when it is a local path (relative to ``base_dir``), else None."""
    if is_url(url) or is_scp_like(url) or _TRANSPORT.match(url):
        return None
    path = Path(url).expanduser()
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return Path(os.path.abspath(path))


def check_url(url: str) -> None:
    """Refuse URLs that make git run commands or read options, before git ever sees them."""
    why = None
    scheme = url_scheme(url)
    if not url.strip():
        why = "is empty"
    elif url.startswith("-"):
        why = "starts with '-', which git would read as an option"
    elif _CONTROL.search(url):
        why = "contains control characters"
    elif _TRANSPORT.match(url):
        why = "uses git's transport::address form, which can run commands"
    elif scheme and scheme not in _SCHEMES:
        why = f"uses the unsupported scheme {scheme!r}"
    elif (scheme or is_scp_like(url)) and not url.startswith("file:") and re.search(r"\s", url):
        why = "contains whitespace"
    elif scheme or is_scp_like(url):
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


def git_credentials(url: str, token: str | None) -> tuple[list[tuple[str, str]], list[str], str]:
    """Git config carrying ``token`` (or a URL's user:password), the secrets, the plain URL."""
    scheme = url_scheme(url) or ""
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


def git_env(auth: list[tuple[str, str]], *, allow_file: bool) -> dict[str, str]:
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


def url_key(url: str) -> str:
    if url.startswith("file://"):  # git takes file URLs with or without %-escapes
        url = unquote(url[len("file://") :])
    local = resolve_local_path(url, None)
    if local is not None:
        return str(local.resolve()).removesuffix("/.git")
    key = describe_url(url).rstrip("/").removesuffix(".git")
    scheme = url_scheme(key)
    return key.lower() if scheme is None else scheme + key[len(scheme) :]


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


def explain_git_error(
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
