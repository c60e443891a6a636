"""Security checks on a whole run: a planted token never leaks; recipe text never hits a shell."""

from __future__ import annotations

import base64
import contextlib
import time
from pathlib import Path

from tests.conftest import Sandbox, read_until, write_recipe
from tests.test_repo import TOKEN, Server, private_http  # noqa: F401  (a fixture)

ENCODED = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


def _cmdlines() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # processes come and go while we look
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def test_token_never_reaches_logs_state_config_or_argv(
    sandbox: Sandbox,
    tmp_path: Path,
    private_http: Server,  # noqa: F811
) -> None:
    trace = tmp_path / "git-trace.log"
    recipe = write_recipe(
        tmp_path / "private.yaml",
        f"name: private\nrepo: {{url: '{private_http.url}', token_env: MY_TOKEN}}\n"
        "install: {requirements: []}\n"
        # a child that lives long enough for the process list to be read
        "run: {module: timeit, args: ['-n', '1', '-r', '1', 'import time; time.sleep(2)']}\n",
    )
    proc = sandbox.popen(recipe, "--verbose", env={"MY_TOKEN": TOKEN, "GIT_TRACE": str(trace)})
    seen_argv: list[str] = []
    try:
        out = read_until(proc, "▸ train")
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            seen_argv += _cmdlines()
            time.sleep(0.05)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = out + rest
    assert proc.returncode == 0, output
    assert any("timeit" in line for line in seen_argv)  # we did see the training's argv
    assert any(ENCODED in header for header in private_http.requests[1:])  # the token was used

    places = {"console": output, "argv": "\n".join(seen_argv), "git trace": trace.read_text()}
    for path in (sandbox.persist / "runs" / "private").rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_text(errors="replace")
    clone = sandbox.scratch / "repos" / "private"
    places[".git/config"] = (clone / ".git" / "config").read_text()
    for where, text in places.items():
        assert TOKEN not in text and ENCODED not in text, f"token leaked into {where}"
    assert any(
        p.name.startswith("bootstrap-") for p in (sandbox.persist / "runs/private/logs").iterdir()
    )


def test_recipe_text_never_reaches_a_shell(sandbox: Sandbox, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "show.py").write_text("import sys, json; print(json.dumps(sys.argv[1:]))\n")
    marker = tmp_path / "pwned"
    hostile = [f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker}", "a b", "'q'\"q\""]
    args = ", ".join("'" + a.replace("'", "''") + "'" for a in hostile)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        "name: shell\nrepo: {url: repo}\ninstall: {requirements: []}\n"
        f"run: {{script: show.py, args: [{args}], env: {{X: '$(touch {marker})'}}}}\n",
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stderr
    import json

    printed = json.loads(result.stdout.strip().splitlines()[0])
    assert printed == hostile  # every argument arrived as written, one argv entry each
    assert not marker.exists()
