"""One rule for URLs, SHA-256 digests and byte counts, and the steps that share it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.data.stage import stage_data
from bootstrap.errors import DataError, RecipeError
from bootstrap.host import Host
from bootstrap.plan import resolve_plan
from bootstrap.recipe.load import load_recipe
from bootstrap.values import format_bytes, is_http_url, is_scp_like, is_url, sha256_digest
from tests.conftest import write_recipe

LAPTOP = Host(
    on_colab=False, content_dir=Path("/nonexistent"), drive_mounted=False, gpu_names=(), boot_time=0
)


@pytest.mark.parametrize(
    ("text", "url", "http"),
    [
        ("https://example.com/d.tar", True, True),
        ("HTTPS://example.com/d.tar", True, True),
        ("http://127.0.0.1:8000/d.zip", True, True),
        ("s3://bucket/d.tar", True, False),
        ("file:///data/d.tar", True, False),
        ("git+ssh://git@host/r.git", True, False),
        ("/data/d.tar", False, False),
        ("data/http://x", False, False),
        ("C:\\data\\d.tar", False, False),
        ("git@github.com:me/repo.git", False, False),
    ],
)
def test_what_is_a_url(text: str, url: bool, http: bool) -> None:
    assert (is_url(text), is_http_url(text)) == (url, http)


def test_scp_like_is_git_ssh_not_a_path() -> None:
    assert is_scp_like("git@github.com:me/repo.git")
    assert not is_scp_like("./code") and not is_scp_like("/abs/path")


def test_sha256_digest_takes_case_and_prefix_and_names_the_bad_value() -> None:
    digest = "ab" * 32
    assert sha256_digest(digest.upper()) == digest
    assert sha256_digest(f"  sha256:{digest} ") == digest
    assert sha256_digest(f"SHA256:{digest}") == digest
    with pytest.raises(ValueError, match=r"64 hexadecimal characters .* got 'xyz'"):
        sha256_digest("xyz")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        sha256_digest("ab" * 31 + "zz")


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 bytes"), (999, "999 bytes"), (1000, "1.0 kB"), (1536, "1.5 kB"),
     (2_500_000, "2.5 MB"), (3 * 10**9, "3.0 GB"), (4 * 10**12, "4.0 TB")],
)  # fmt: skip
def test_format_bytes_uses_powers_of_1000(count: int, text: str) -> None:
    assert format_bytes(count) == text


def test_recipe_and_stager_accept_the_same_digests(tmp_path: Path) -> None:
    # Both ask sha256_digest: a prefixed digest the stager takes is a valid recipe value too.
    digest = "cd" * 32
    recipe = write_recipe(
        tmp_path / "r.yaml",
        f"name: x\nrepo: {{url: ./code}}\ndata: [{{source: a.tar, sha256: 'sha256:{digest}'}}]\n"
        "run: {script: t.py}\n",
    )
    assert load_recipe(recipe, environ={}).data[0].sha256 == digest
    bad = recipe.read_text().replace(digest, "cd" * 31)
    with pytest.raises(RecipeError, match=r"data\[0\]\.sha256: expected 64 hexadecimal"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", bad), environ={})


@pytest.mark.parametrize("source", ["HTTPS://example.com/d.tar", "s3://bucket/d.tar"])
def test_plan_keeps_every_url_a_url(tmp_path: Path, source: str) -> None:
    # The plan once kept only lower-case http(s) as URLs and made anything else a path under
    # the recipe's folder, so the stager's "unsupported scheme" check could never fire.
    recipe = write_recipe(
        tmp_path / "r.yaml",
        f"name: x\nrepo: {{url: ./code}}\ndata: [{{source: '{source}'}}]\nrun: {{script: t.py}}\n",
    )
    plan = resolve_plan(load_recipe(recipe, environ={}), LAPTOP, persist="/p", scratch="/s")
    assert plan.data[0].source == source and plan.data[0].is_url


def test_an_unsupported_scheme_reaches_the_stager_as_such(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        "name: x\nrepo: {url: ./code}\ndata: [{source: 's3://bucket/d.tar'}]\n"
        "run: {script: t.py}\n",
    )
    plan = resolve_plan(load_recipe(recipe, environ={}), LAPTOP, persist="/p", scratch="/s")
    item = plan.data[0]
    with pytest.raises(DataError, match="unsupported scheme"):
        stage_data(item.source, tmp_path / "dest", state_dir=tmp_path / "state")
