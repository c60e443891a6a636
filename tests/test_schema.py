"""The shipped JSON Schema matches the models, and every shipped recipe points editors at it."""

from __future__ import annotations

from bootstrap.recipe.schema import SCHEMA_FILE, render
from tests.conftest import RECIPES


def test_shipped_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render(), (
        "bootstrap/recipe.schema.json is stale: run `python -m bootstrap.recipe.schema`"
    )


def test_schema_names_every_top_level_key() -> None:
    import json

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert set(schema["properties"]) == {
        "version",
        "name",
        "storage",
        "repo",
        "install",
        "data",
        "gpu",
        "run",
        "profiles",
    }
    assert "callable" in schema["$defs"]["RunSpec"]["properties"]  # the YAML name, not ours


def test_shipped_recipes_declare_the_schema() -> None:
    for path in RECIPES.glob("*.yaml"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path


def test_smoke_workflow_template_runs_every_recipe_with_smoke() -> None:
    import yaml

    workflow = yaml.safe_load((RECIPES / "smoke-workflow.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["smoke"]["steps"]
    script = next(s["run"] for s in steps if s.get("name", "").startswith("Run every recipe"))
    assert 'python -m bootstrap "$recipe" --smoke' in script
    assert "BOOTSTRAP_PERSIST" in workflow["jobs"]["smoke"]["env"]
