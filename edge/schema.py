"""Config files checked by pydantic models, every mistake told in one line: the file, the key
(dotted, list entries as [i]), what is wrong and what is allowed or how to fix it. The line's
config (edge.config) and export-engine's method configs both report through here; what is
allowed is read from the model's own JSON schema, so each bound is declared once, in its Field."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError


class ConfigError(ValueError):
    """A line config (or CLI) mistake, phrased for the person who wrote it: one line,
    naming the file, the key, the bad value and what is allowed."""


class Model(BaseModel):
    # Values as YAML typed them: no "8" for 8, no true for 1 or 1 for true, nothing infinite.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Section(Model):
    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: object) -> object:
        return {} if data is None else data  # a section with every key commented out means "all defaults"


_MISSING = object()
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_TEXT = {"boolean": "true or false", "string": "a string", "path": "a path", "array": "a non-empty list of mappings"}
_LAYOUT = "see configs/line3.yaml for the layout"
M = TypeVar("M", bound=BaseModel)


def fault(problem: str, key: str = "", got: object = _MISSING, fix: str = "") -> PydanticCustomError:
    """A mistake a validator finds, at ``key`` below the model raising it; ``{prefix}`` in the
    problem stands for that model's dotted path."""
    context: dict[str, Any] = {"key": key, "fix": fix}
    if got is not _MISSING:
        context["got"] = got
    return PydanticCustomError("config", problem, context)


def config_error(where: str, key: str, problem: str, fix: str = "", got: object = _MISSING) -> ConfigError:
    message = f"{where}: {key or 'top level'}: {problem}"
    if got is not _MISSING:
        message += f" (got {_repr.repr(got)})"
    if fix:
        message += f"; {fix}"
    # One line, whatever a YAML key or a parser message contained: logs and PLC screens show one line.
    return ConfigError(" ".join(message.splitlines()))


def validate(model: type[M], data: object, where: str, context: dict[str, Any] | None = None) -> M:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        first = min(e.errors(), key=lambda error: error["type"] != "extra_forbidden")  # a typo explains the rest
        raise _explain(model.model_json_schema(), first, where) from e


def _explain(schema: dict[str, Any], error: ErrorDetails, where: str) -> ConfigError:
    defs, got, ctx, kind = schema.get("$defs", {}), error["input"], error.get("ctx", {}), error["type"]
    node, parent, key, tag, parent_tag = schema, schema, "", "", ""
    for step in error["loc"]:
        node = _plain(node, defs)[0]
        if "description" in node and "properties" not in node:
            break  # a described mapping (names to values) is one key to the person who wrote it
        if step in node.get("discriminator", {}).get("mapping", {}):
            tag = f" for {node['discriminator']['propertyName']} {step!r}"
            node = {"$ref": node["discriminator"]["mapping"][step]}
            continue
        if isinstance(step, int) and "items" in node:
            child = node["items"]
        elif step in node.get("properties", {}) or kind == "extra_forbidden":
            child = node.get("properties", {}).get(step, {})
        elif isinstance(node.get("additionalProperties"), dict):
            child = node["additionalProperties"]
        else:
            break
        key = f"{key}[{step}]" if isinstance(step, int) else f"{key}.{step}".lstrip(".")
        parent, parent_tag, tag, node = node, tag, "", child
    if kind == "config":
        problem = error["msg"].replace("{prefix}", f"{key}." if key else "")
        return config_error(where, f"{key}.{ctx['key']}".strip("."), problem, ctx["fix"], ctx.get("got", _MISSING))
    if kind == "extra_forbidden":
        names = list(parent.get("properties", {}))
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], names, n=1)
        fix = f"did you mean {close[0]!r}?" if close else "allowed keys: " + ", ".join(names)
        return config_error(where, key, f"unknown key{parent_tag}", fix, got)
    if kind == "missing":
        return config_error(where, key, "required key is missing", f"add it: {_allowed(node, defs)}")
    if kind.startswith("union_tag") and isinstance(got, dict):
        key, union = f"{key}.{ctx['discriminator'][1:-1]}".lstrip("."), _plain(node, defs)[0]
        choices = "one of " + ctx.get("expected_tags", ", ".join(map(repr, union["discriminator"]["mapping"])))
        if kind == "union_tag_not_found":
            return config_error(where, key, "required key is missing", f"add it: {choices}")
        return config_error(where, key, f"must be {choices}", got=ctx["tag"])
    layout = _plain(node, defs)[0].get("type") in ("object", "array") or "oneOf" in _plain(node, defs)[0]
    return config_error(where, key, f"must be {_allowed(node, defs)}", _LAYOUT if layout else "", got)


def _plain(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema behind references and "or null", and whether null is allowed."""
    nullable = False
    while True:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        elif {"type": "null"} in node.get("anyOf", ()):
            nullable = True
            others = [n for n in node["anyOf"] if n != {"type": "null"}]
            # A field's description sits beside its anyOf, the constraints inside it.
            inner = others[0] if len(others) == 1 else {"anyOf": others}
            node = {**inner, **{k: v for k, v in node.items() if k == "description"}}
        else:
            return node, nullable


def _allowed(node: dict[str, Any], defs: dict[str, Any]) -> str:
    node, nullable = _plain(node, defs)
    kind = node.get("format") or node.get("type")
    if "description" in node and "properties" not in node:  # a model's description is its docstring
        text = node["description"]
    elif "enum" in node or "const" in node:
        text = "one of " + ", ".join(map(repr, node.get("enum", [node.get("const")])))
    elif "anyOf" in node:
        text = " or ".join(_allowed(n, defs) for n in node["anyOf"])
    elif kind in ("integer", "number"):
        text = ("an integer" if kind == "integer" else "a number") + _range(node)
    else:
        text = _TEXT.get(str(kind), "a mapping of keys")
    return text + (" or null" if nullable else "")


def _range(node: dict[str, Any]) -> str:
    def number(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else str(value)

    if "minimum" in node and "maximum" in node:
        return f" from {number(node['minimum'])} to {number(node['maximum'])}"
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    parts = [f"{op} {number(node[name])}" for name, op in bounds.items() if name in node]
    return " " + " and ".join(parts) if parts else ""
