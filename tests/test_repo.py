"""The repo step on real git repositories made in tmp_path, and a real smart-HTTP git server."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bootstrap.errors import RepoError
from bootstrap.repo.checkout import sync_repo
from bootstrap.repo.foldercopy import COPY_MARKER
from bootstrap.repo.gitsafety import describe_url, resolve_local_path
from tests.conftest import git

HOSTILE = 'my repo\'s "x" $(touch pwned)'


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    # The code under test runs git with our environment: keep the user's config out of it.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_COUNT", raising=False)


@dataclass
class Origin:
    path: Path
    commits: dict[str, str] = field(default_factory=dict)

    def commit(self, name: str, text: str) -> str:
        (self.path / name).write_text(text)
        git("add", name, cwd=self.path)
        git("commit", "-q", "-m", f"{name}: {text}", cwd=self.path)
        return git("rev-parse", "HEAD", cwd=self.path).strip()


def make_origin(path: Path) -> Origin:
    """main: one, two (HEAD) · dev: three on top of one · tag v1 (annotated) at one."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    origin = Origin(path)
    origin.commits["one"] = origin.commit("a.txt", "one")
    git("tag", "-a", "v1", "-m", "first", cwd=path)
    git("checkout", "-q", "-b", "dev", cwd=path)
    origin.commits["three"] = origin.commit("b.txt", "three")
    git("checkout", "-q", "main", cwd=path)
    origin.commits["two"] = origin.commit("a.txt", "two")
    return origin


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    return make_origin(tmp_path / "origin")


def head_of(path: Path) -> str:
    return git("rev-parse", "HEAD", cwd=path).strip()


def test_clone_default_head(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "clone"
    result = sync_repo(str(origin.path), dest)
    assert (result.action, result.ref, result.commit) == ("cloned", "main", origin.commits["two"])
    assert head_of(dest) == origin.commits["two"]
    assert (dest / "a.txt").read_text() == "two"
    assert result.dest == dest and result.url_display == str(origin.path)
    assert not list(tmp_path.glob(".clone*")), "the partial clone folder is left behind"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("dev", "three"), ("v1", "one"), ("FULL", "one"), ("SHORT", "three"), ("refs/tags/v1", "one")],
)
def test_clone_at_ref(origin: Origin, tmp_path: Path, ref: str, expected: str) -> None:
    sha = origin.commits[expected]
    ref = {"FULL": sha, "SHORT": sha[:8]}.get(ref, ref)
    result = sync_repo(origin.path.as_uri(), tmp_path / "clone", ref=ref)
    assert result.commit == sha and head_of(tmp_path / "clone") == sha
    assert result.ref == ref


def test_rerun_unchanged_leaves_the_tree_alone(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "clone"
    sync_repo(str(origin.path), dest)
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir() if p.is_file()}
    (dest / "out.log").write_text("written by the training")
    result = sync_repo(str(origin.path), dest)
    assert (result.action, result.commit) == ("unchanged", origin.commits["two"])
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir() if p.name in before} == before
    assert (dest / "out.log").read_text() == "written by the training"


def test_moved_branch_is_updated(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "clone"
    sync_repo(str(origin.path), dest, ref="main")
    new = origin.commit("a.txt", "four")
    result = sync_repo(str(origin.path), dest, ref="main")
    assert (result.action, result.commit) == ("updated", new)
    assert (dest / "a.txt").read_text() == "four"

    # A force-push and a deleted branch on the remote: fetched and pruned, no surprises.
    git("reset", "-q", "--hard", origin.commits["one"], cwd=origin.path)
    rewritten = origin.commit("a.txt", "five")
    git("branch", "-q", "-D", "dev", cwd=origin.path)
    result = sync_repo(str(origin.path), dest, ref="main")
    assert (result.action, result.commit) == ("updated", rewritten)
    with pytest.raises(RepoError, match="branches: main;"):
        sync_repo(str(origin.path), dest, ref="dev")


def test_pinned_sha_needs_no_remote_on_rerun(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "clone"
    sha = origin.commits["one"]
    url = origin.path.as_uri()
    sync_repo(url, dest, ref=sha)
    origin.path.rename(tmp_path / "gone")  # any fetch would now fail
    assert sync_repo(url, dest, ref=sha).action == "unchanged"
    with pytest.raises(RepoError):
        sync_repo(url, dest, ref="main")


def test_local_changes_are_never_overwritten(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "clone"
    sync_repo(str(origin.path), dest)
    (dest / "a.txt").write_text("my edit")
    assert sync_repo(str(origin.path), dest).action == "unchanged"  # nothing to move: fine
    origin.commit("a.txt", "four")
    with pytest.raises(RepoError, match="changes to tracked files") as caught:
        sync_repo(str(origin.path), dest)
    assert "stash" in (caught.value.hint or "")
    assert (dest / "a.txt").read_text() == "my edit"


def test_hostile_folder_names(tmp_path: Path) -> None:
    origin = make_origin(tmp_path / HOSTILE)
    dest = tmp_path / f"dest {HOSTILE}"
    assert sync_repo(str(origin.path), dest).action == "cloned"
    assert git("config", "--get", "remote.origin.url", cwd=dest).strip() == str(origin.path)
    assert sync_repo(str(origin.path), dest).action == "unchanged"  # same URL recognised
    origin.commit("a.txt", "four")
    assert sync_repo(str(origin.path), dest).action == "updated"
    uri_dest = tmp_path / f"uri {HOSTILE}"
    for url in (origin.path.as_uri(), f"file://{origin.path}"):  # escaped, then raw
        assert sync_repo(url, uri_dest).action in {"cloned", "unchanged"}
    assert not list(tmp_path.rglob("pwned"))


def test_an_empty_remote_is_explained(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    git("init", "-q", "--bare", cwd=tmp_path / "empty")
    with pytest.raises(RepoError, match="no default branch"):
        sync_repo(str(tmp_path / "empty"), tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".dest*"))


def test_relative_path_is_relative_to_base_dir(origin: Origin, tmp_path: Path) -> None:
    result = sync_repo("origin", tmp_path / "clone", base_dir=tmp_path)
    assert result.commit == origin.commits["two"]
    assert resolve_local_path("../x", tmp_path / "a") == tmp_path / "x"
    assert resolve_local_path("git@github.com:me/r.git", tmp_path) is None
    assert resolve_local_path("file:///tmp/r", tmp_path) is None


def test_plain_folder_is_copied_and_recopied(tmp_path: Path) -> None:
    src = tmp_path / f"src {HOSTILE}"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print(1)\n")
    (src / "pkg" / "m.py").write_text("x = 1\n")
    (src / "link.py").symlink_to("train.py")
    dest = tmp_path / f"dest {HOSTILE}"
    first = sync_repo(str(src), dest)
    assert first.action == "copied" and (dest / COPY_MARKER).exists()
    assert (dest / "pkg" / "m.py").read_text() == "x = 1\n"
    assert os.readlink(dest / "link.py") == "train.py"
    assert sync_repo(str(src), dest).action == "unchanged"

    (dest / "checkpoint.pt").write_text("made by the training")
    (src / "pkg" / "m.py").write_text("x = 22\n")
    (src / "new.py").write_text("new\n")
    second = sync_repo(str(src), dest)
    assert second.action == "copied" and second.commit != first.commit
    assert (dest / "pkg" / "m.py").read_text() == "x = 22\n"
    assert (dest / "new.py").exists() and (dest / "checkpoint.pt").exists()
    assert not list(tmp_path.rglob("pwned"))


def test_copy_skips_a_dest_inside_the_source(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("pass\n")
    dest = tmp_path / "scratch" / "repos" / "run"
    assert sync_repo(".", dest, base_dir=tmp_path).action == "copied"
    assert (dest / "train.py").exists() and not (dest / "scratch").exists()


def test_plain_folder_with_ref_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(RepoError, match="plain folder"):
        sync_repo(str(tmp_path / "src"), tmp_path / "dest", ref="main")


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% {pwned}",
        "ext::touch {pwned}",
        "fd::17",
        "-uhelp",
        "--upload-pack=touch {pwned}",
        "ssh://-oProxyCommand=touch%20{pwned}/x",
        "-oProxyCommand=x@host:repo",
        "gopher://host/repo",
        "https://host/a b",
        "https://host/a\nb",
    ],
)
def test_hostile_urls_are_refused(tmp_path: Path, url: str) -> None:
    pwned = tmp_path / "pwned"
    with pytest.raises(RepoError, match="repo.url"):
        sync_repo(url.format(pwned=pwned), tmp_path / "dest")
    assert not pwned.exists() and not (tmp_path / "dest").exists()


@pytest.mark.parametrize(
    "ref",
    [
        "-uhelp",
        "--upload-pack=touch pwned",
        "a..b",
        "a b",
        "x\n",
        "HEAD@{1}",
        "main~1",
        "x.lock",
        "a:b",
        "",
        "/main",
        "main/",
        ".hidden",
    ],
)
def test_hostile_refs_are_refused(origin: Origin, tmp_path: Path, ref: str) -> None:
    with pytest.raises(RepoError, match="repo.ref"):
        sync_repo(str(origin.path), tmp_path / "dest", ref=ref)
    assert not (tmp_path / "dest").exists() and not (tmp_path / "pwned").exists()


def test_unknown_ref_names_what_exists(origin: Origin, tmp_path: Path) -> None:
    with pytest.raises(RepoError) as caught:
        sync_repo(str(origin.path), tmp_path / "dest", ref="nope")
    message = caught.value.message
    assert "'nope' not found" in message and str(origin.path) in message
    assert "branches: dev, main" in message and "tags: v1" in message
    assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".dest*"))


def test_an_occupied_dest_is_refused(origin: Origin, tmp_path: Path) -> None:
    other = make_origin(tmp_path / "other")
    dest = tmp_path / "dest"
    sync_repo(str(other.path), dest)
    with pytest.raises(RepoError, match="is a clone of") as caught:
        sync_repo(str(origin.path), dest)
    assert str(dest) in caught.value.message and "delete" in (caught.value.hint or "")

    stuff = tmp_path / "stuff"
    stuff.mkdir()
    (stuff / "notes.txt").write_text("mine")
    with pytest.raises(RepoError, match="not empty"):
        sync_repo(str(origin.path), stuff)
    assert (stuff / "notes.txt").read_text() == "mine"
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(RepoError, match="holds other files, not a copy of"):
        sync_repo(str(plain), stuff)
    copied = tmp_path / "copied"
    sync_repo(str(plain), copied)
    with pytest.raises(RepoError, match="holds a copy of a plain folder"):
        sync_repo(str(origin.path), copied)
    assert (stuff / "notes.txt").read_text() == "mine"


def test_a_leftover_partial_clone_is_cleared(origin: Origin, tmp_path: Path) -> None:
    partial = tmp_path / ".dest.cloning"
    (partial / ".git").mkdir(parents=True)
    assert sync_repo(str(origin.path), tmp_path / "dest").action == "cloned"
    assert not partial.exists()


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="does not exist") as caught:
        sync_repo("code", tmp_path / "dest", base_dir=tmp_path)
    assert str(tmp_path / "code") in caught.value.message


def test_unreachable_url_fails_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(RepoError) as caught:
        sync_repo((tmp_path / "nothing.git").as_uri(), tmp_path / "dest")
    assert "repo.url" in (caught.value.hint or "")
    assert not (tmp_path / "dest").exists()


def test_submodules(origin: Origin, tmp_path: Path) -> None:
    sub = make_origin(tmp_path / "sub")
    git(
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "-q",
        "add",
        str(sub.path),
        "lib",
        cwd=origin.path,
    )
    git("commit", "-q", "-m", "add lib", cwd=origin.path)
    dest = tmp_path / "clone"
    sync_repo(str(origin.path), dest, submodules=True)
    assert (dest / "lib" / "a.txt").read_text() == "two"
    assert sync_repo(str(origin.path), dest, submodules=True).action == "unchanged"


def test_progress_bars_are_opened_and_closed(origin: Origin, tmp_path: Path) -> None:
    opened: list[Bar] = []

    @dataclass
    class Bar:
        description: str
        total: int | None
        unit: str
        done: int = 0
        closed: bool = False

        def advance(self, amount: int) -> None:
            self.done += amount

        def set_total(self, total: int | None) -> None:
            self.total = total

        def set_description(self, text: str) -> None:
            self.description = text

        def close(self) -> None:
            self.closed = True

    def factory(description: str, total: int | None = None, unit: str = "B") -> Bar:
        opened.append(Bar(description, total, unit))
        return opened[-1]

    # file:// makes git use its pack protocol (and report progress) instead of copying files.
    sync_repo(origin.path.as_uri(), tmp_path / "clone", progress=factory)
    assert opened and all(bar.closed for bar in opened)
    receiving = [bar for bar in opened if "receiving objects" in bar.description]
    assert receiving and receiving[0].unit == "objects" and receiving[0].done > 0


def test_describe_url_strips_credentials() -> None:
    assert describe_url("https://user:pw@host/x.git") == "https://host/x.git"
    assert describe_url("https://tok@host:8443/x") == "https://host:8443/x"
    assert describe_url("ssh://git@host/x") == "ssh://git@host/x"
    assert describe_url("ssh://git:pw@host/x") == "ssh://git@host/x"
    assert describe_url("git@github.com:me/x.git") == "git@github.com:me/x.git"
    assert describe_url("/a/b c") == "/a/b c"


# --- a private repository over real smart HTTP ------------------------------------------------

TOKEN = "ghp_S3cretT0kenNeverShown"


@dataclass
class Server:
    url: str
    requests: list[str]


@pytest.fixture
def private_http(tmp_path: Path) -> Iterator[Server]:
    """`git http-backend` behind a tiny HTTP server that wants Basic x-access-token:TOKEN."""
    root = tmp_path / "served"
    make_origin(root / "private")
    git("clone", "-q", "--bare", str(root / "private"), str(root / "private.git"), cwd=tmp_path)
    wanted = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.serve()

        def do_POST(self) -> None:
            self.serve()

        def serve(self) -> None:
            requests.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != wanted:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {
                "PATH": os.environ["PATH"],
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": self.command,
                "CONTENT_LENGTH": str(len(body)),
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CONFIG_NOSYSTEM": "1",
            }
            out = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=True
            ).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode().splitlines():
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                else:
                    headers.append((key, value.strip()))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.server_port}/private.git", requests)
    finally:
        server.shutdown()
        server.server_close()


def assert_no_secret(*texts: str) -> None:
    encoded = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    for text in texts:
        assert TOKEN not in text and encoded not in text


def test_token_reaches_the_server_but_nothing_else(
    private_http: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # GitPython logs every command line at debug level
    trace = tmp_path / "trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))  # records the argv of every git process
    dest = tmp_path / "clone"
    result = sync_repo(private_http.url, dest, token=TOKEN)
    assert result.action == "cloned" and (dest / "a.txt").read_text() == "two"
    config = (dest / ".git" / "config").read_text()
    assert f"url = {private_http.url}\n" in config
    result = sync_repo(private_http.url, dest, token=TOKEN, ref="dev")  # fetch with the token
    assert result.action == "updated"
    assert "run_command" in trace.read_text() or "built-in" in trace.read_text()
    assert_no_secret(config, trace.read_text(), repr(result), caplog.text)
    assert "Popen" in caplog.text or "git" in caplog.text
    assert private_http.requests and all(private_http.requests)


def test_credentials_in_the_url_stay_out_of_git_config(
    private_http: Server, tmp_path: Path
) -> None:
    url = private_http.url.replace("http://", f"http://x-access-token:{TOKEN}@")
    dest = tmp_path / "clone"
    result = sync_repo(url, dest)
    assert result.url_display == private_http.url
    assert_no_secret((dest / ".git" / "config").read_text())


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_auth_failure_is_fast_and_scrubbed(
    private_http: Server, tmp_path: Path, token: str | None
) -> None:
    with pytest.raises(RepoError) as caught:
        sync_repo(private_http.url, tmp_path / "clone", token=token)
    error = caught.value
    assert_no_secret(str(error), error.details or "")
    assert "token" in (error.hint or "")
    if token:
        assert token not in str(error) + (error.details or "")
    assert not (tmp_path / "clone").exists()


def test_token_over_plain_http_to_another_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="plain http") as caught:
        sync_repo("http://example.com/me/r.git", tmp_path / "clone", token=TOKEN)
    assert_no_secret(str(caught.value))
