"""Models made of checked fields: ``Model``, ``spec``, ``ModelOf``, their schema and data.

A model is a frozen, keyword-only dataclass whose fields are declared with ``spec(check, ...)``
(checks: ``fields``). ``Model.from_mapping(data)`` checks a mapping as YAML gives it
against those fields, then the model's cross-key ``rules``, and returns the model or raises
``Invalid`` with every issue found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from bootstrap.recipe.fields import Check, Invalid, Issue, KeyPath, describe

M = TypeVar("M", bound="Model")
_REQUIRED: Any = dataclasses.MISSING


def spec(
    check: Check, default: Any = _REQUIRED, *, key: str | None = None, factory: Any = None
) -> Any:
    """A model field: its check, its default (none: required), and its YAML key if not its name."""
    meta = {"check": check, "key": key}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Model:
    """Base of the recipe's models; subclasses are ``@dataclasses.dataclass(frozen=True,
    kw_only=True)`` with ``spec`` fields. ``rules`` run on a built model (cross-key checks);
    a ValueError they raise is an issue at the model's own path; an ``Invalid`` carries its
    issues at paths relative to the model (the key each problem is about)."""

    rules: ClassVar[tuple[Callable[[Any], None], ...]] = ()

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The YAML keys, in declaration order."""
        return [f.metadata.get("key") or f.name for f in _checked(cls)]

    @classmethod
    def from_mapping(cls: type[M], data: Any) -> M:
        issues: list[Issue] = []
        model = ModelOf(cls)(data, (), issues)
        if issues:
            raise Invalid(issues)
        return model  # type: ignore[no-any-return]


def _checked(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "check" in f.metadata]


class ModelOf(Check):
    """A nested model: a mapping with exactly the model's keys."""

    def __init__(self, cls: type[Model]):
        self.cls = cls

    def __call__(self, value: Any, path: KeyPath, issues: list[Issue]) -> Any:
        if not isinstance(value, dict):
            self.fail(issues, path, f"expected a mapping, got {describe(value)}")
            return value
        before, values = len(issues), {}
        for field in _checked(self.cls):
            key = field.metadata.get("key") or field.name
            if key in value:
                values[field.name] = field.metadata["check"](value[key], (*path, key), issues)
            elif field.default is _REQUIRED and field.default_factory is _REQUIRED:
                issues.append(Issue((*path, key), "missing"))
        known = set(self.cls.yaml_keys())
        issues += [Issue((*path, key), "unknown") for key in value if key not in known]
        if len(issues) > before:
            return value
        model = self.cls(**values)
        for rule in self.cls.rules:
            try:
                rule(model)
            except Invalid as exc:  # issues at keys of the model, each where it belongs
                issues += [Issue((*path, *i.path), i.kind, i.message) for i in exc.issues]
                return value
            except ValueError as exc:
                self.fail(issues, path, str(exc))
                return value
        return model

    def schema(self) -> dict[str, Any]:
        return {"$ref": f"#/$defs/{self.cls.__name__}"}


def model_schema(cls: type[Model], defs: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of a model; the schemas of models it holds are added to ``defs``."""
    properties, required = {}, []
    for field in _checked(cls):
        key = field.metadata.get("key") or field.name
        check: Check = field.metadata["check"]
        _collect_models(check, defs)
        prop = check.schema()
        if "$ref" not in prop:
            prop["title"] = key.replace("_", " ").title()
        if field.default is not _REQUIRED:
            prop["default"] = _json(field.default)
        elif field.default_factory is _REQUIRED:
            required.append(key)
        properties[key] = prop
    out = {"additionalProperties": False, "properties": properties, "title": cls.__name__}
    out["type"] = "object"
    doc = cls.__doc__ or ""
    if doc and not doc.startswith(f"{cls.__name__}("):  # not the signature dataclass writes
        out["description"] = " ".join(doc.split())
    return {**out, "required": required} if required else out


def _collect_models(check: Check, defs: dict[str, Any]) -> None:
    if isinstance(check, ModelOf):
        if check.cls.__name__ not in defs:
            defs[check.cls.__name__] = {}  # placeholder first: a model may hold itself
            defs[check.cls.__name__] = model_schema(check.cls, defs)
        return
    for attr in ("inner", "item", "value"):
        inner = getattr(check, attr, None)
        if isinstance(inner, Check):
            _collect_models(inner, defs)


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


def as_data(model: Model) -> dict[str, Any]:
    """The model as plain YAML-ready data, by YAML key (tuples become lists)."""
    return {
        f.metadata.get("key") or f.name: _plain(getattr(model, f.name))
        for f in _checked(type(model))
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Model):
        return as_data(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
