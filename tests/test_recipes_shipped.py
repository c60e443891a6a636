"""Every recipe shipped in recipes/ loads, with and without its profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.recipe.load import load_recipe
from tests.conftest import RECIPES

SHIPPED = sorted(RECIPES.glob("*.yaml"))


def test_there_are_recipes() -> None:
    assert SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_recipe_loads(path: Path) -> None:
    recipe = load_recipe(path, environ={})
    assert recipe.name
    for profile in recipe.profiles:
        load_recipe(path, profile=profile, environ={})
    load_recipe(path, smoke=True, environ={})
