"""The recipe's JSON Schema, generated from the models, for editors.

Shipped as ``bootstrap/recipe.schema.json``; a recipe that starts with

    # yaml-language-server: $schema=<path or URL of recipe.schema.json>

gets completion and validation in VS Code (YAML extension) and other editors. Regenerate with
``python -m bootstrap.recipe.schema`` after changing the models; a test checks the file is current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bootstrap.recipe.modelkit import model_schema
from bootstrap.recipe.models import Recipe

# Beside the package root, where recipes already point their editors (../bootstrap/...).
SCHEMA_FILE = Path(__file__).parent.parent / "recipe.schema.json"


def recipe_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    schema = {**model_schema(Recipe, defs), "$defs": defs}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "colab-bootstrap recipe (version 1)",
        "description": "From a training repo to a supervised, resumable run on Colab.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def render() -> str:
    return json.dumps(recipe_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    SCHEMA_FILE.write_text(render(), encoding="utf-8")
    sys.stderr.write(f"wrote {SCHEMA_FILE}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
