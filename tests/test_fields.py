"""bootstrap.recipe.fields and .modelkit: every problem collected, wording, schema."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bootstrap.recipe.fields import Bool, Int, Invalid, Issue, ListOf, OneOf, Optional, Str, Text
from bootstrap.recipe.modelkit import Model, ModelOf, as_data, model_schema, spec


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner(Model):
    flag: bool = spec(Bool(), False)


def _positive_sum(model: Outer) -> None:
    if sum(model.sizes) <= 0:
        raise ValueError("sizes must add up to more than 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer(Model):
    """An example model."""

    rules = (_positive_sum,)

    name: str = spec(Str())
    kind: str = spec(OneOf("a", "b", "c"), "a")
    sizes: tuple[int, ...] = spec(ListOf(Int(minimum=0)), (1,))
    label: str | None = spec(Optional(Text()), None, key="label-text")
    inner: Inner = spec(ModelOf(Inner), factory=Inner)


def test_every_problem_is_collected_with_its_path() -> None:
    data = {"kind": "d", "sizes": [1, -2, "3"], "inner": {"flag": "yes"}, "extra": 1}
    with pytest.raises(Invalid) as caught:
        Outer.from_mapping(data)
    assert caught.value.issues == [
        Issue(("name",), "missing"),
        Issue(("kind",), "invalid", "expected 'a', 'b' or 'c', got 'd'"),
        Issue(("sizes", 1), "invalid", "must be at least 0, got -2"),
        Issue(("sizes", 2), "invalid", "expected an integer, got '3'"),
        Issue(("inner", "flag"), "invalid", "expected true or false, got 'yes'"),
        Issue(("extra",), "unknown"),
    ]


def test_conversions_yaml_keys_rules_and_data() -> None:
    outer = Outer.from_mapping({"name": "x", "sizes": [0, 2], "label-text": 3})
    assert (outer.sizes, outer.label, outer.inner) == ((0, 2), "3", Inner(flag=False))
    assert Outer.yaml_keys() == ["name", "kind", "sizes", "label-text", "inner"]
    assert as_data(outer) == {
        "name": "x", "kind": "a", "sizes": [0, 2], "label-text": "3", "inner": {"flag": False}
    }  # fmt: skip
    with pytest.raises(Invalid, match="sizes must add up to more than 0"):
        Outer.from_mapping({"name": "x", "sizes": [0]})
    with pytest.raises(Invalid) as caught:
        Outer.from_mapping({"name": 5})
    assert caught.value.issues[0].message == "expected a string, got 5; quote it"


def test_schema_of_a_model_and_the_models_it_holds() -> None:
    defs: dict[str, Any] = {}
    schema = model_schema(Outer, defs)
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    assert schema["description"] == "An example model."
    assert schema["properties"]["kind"] == {
        "enum": ["a", "b", "c"], "type": "string", "title": "Kind", "default": "a"
    }  # fmt: skip
    assert schema["properties"]["inner"] == {"$ref": "#/$defs/Inner"}
    assert "description" not in defs["Inner"]  # dataclass's own signature docstring is not one
