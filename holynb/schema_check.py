"""A small JSON Schema check, for when the ``jsonschema`` package is not installed.

It covers what people put in schemas for models: ``type`` (one or several), ``enum``,
``const``, ``required``, ``properties``, ``additionalProperties: false``, ``items``,
``minItems``/``maxItems``, ``minLength``/``maxLength``, ``minimum``/``maximum`` (and the
exclusive forms; NaN and infinities fail every bound and the type ``number``),
``anyOf``/``oneOf``/``allOf`` and local ``$ref`` (``#/$defs/...``).
Problems come back as ``"path: message"`` strings, the path dotted (``items[0].label``).

>>> check({"label": "great"}, {"properties": {"label": {"enum": ["good", "bad"]}}})
['label: "great" is not one of [\'good\', \'bad\']']
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["check"]


def check(value: Any, schema: dict[str, Any]) -> list[str]:
    """What is wrong with ``value`` against ``schema`` (empty: it fits)."""
    return _check(value, schema, schema, "")


_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and _finite(value)
    kind = _TYPES.get(name)
    return kind is None or isinstance(value, kind)


def _finite(value: int | float) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _check(value: Any, node: Any, root: dict[str, Any], path: str) -> list[str]:
    """Problems of ``value`` against ``node``, as ``path: message`` strings (a subset of JSON
    Schema: enough for the schemas people give models)."""
    if not isinstance(node, dict):
        return []
    node = _resolve(node, root)
    where = path or "(root)"
    types = node.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, t) for t in names):
            if isinstance(value, float) and not math.isfinite(value):
                return [f"{where}: {value} is not a finite number"]
            return [f"{where}: {json.dumps(value)[:60]} is not of type {' or '.join(names)}"]
    if "enum" in node and value not in node["enum"]:
        return [f"{where}: {json.dumps(value)[:60]} is not one of {node['enum']}"]
    if "const" in node and value != node["const"]:
        return [f"{where}: {json.dumps(value)[:60]} should be {json.dumps(node['const'])}"]
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if options and all(_check(value, o, root, path) for o in options):
            return [f"{where}: matches none of the {key} options"]
    problems: list[str] = []
    for option in node.get("allOf") or ():
        problems += _check(value, option, root, path)
    if isinstance(value, dict):
        props = node.get("properties") or {}
        for name in node.get("required") or ():
            if name not in value:
                problems.append(f"{path + '.' if path else ''}{name}: field required")
        for name, item in value.items():
            sub = f"{path}.{name}" if path else name
            if name in props:
                problems += _check(item, props[name], root, sub)
            elif node.get("additionalProperties") is False:
                problems.append(f"{sub}: extra field not allowed")
    if isinstance(value, list):
        for i, item in enumerate(value):
            problems += _check(item, node.get("items"), root, f"{path}[{i}]")
        if len(value) < node.get("minItems", 0):
            problems.append(f"{where}: fewer than {node['minItems']} items")
        if "maxItems" in node and len(value) > node["maxItems"]:
            problems.append(f"{where}: more than {node['maxItems']} items")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            problems.append(f"{where}: shorter than {node['minLength']} characters")
        if "maxLength" in node and len(value) > node["maxLength"]:
            problems.append(f"{where}: longer than {node['maxLength']} characters")
    if isinstance(value, int | float) and not isinstance(value, bool):
        bounds = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if not _finite(value) and any(key in node for key in bounds):
            problems.append(f"{where}: {value} is not a finite number, so it fails every bound")
            return problems
        for key, bad in (
            ("minimum", lambda v, b: v < b),
            ("maximum", lambda v, b: v > b),
            ("exclusiveMinimum", lambda v, b: v <= b),
            ("exclusiveMaximum", lambda v, b: v >= b),
        ):
            if key in node and bad(value, node[key]):
                problems.append(f"{where}: {value} breaks {key} {node[key]}")
    return problems
