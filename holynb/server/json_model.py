"""Offline models for structured answers: ``local/json`` and ``local/json-noformat``.

``local/json`` honours ``response_format`` ``json_schema`` the way structured outputs do: it
answers bare JSON built from the schema, deterministically: ``const`` as it is; an ``enum``
picks the value the first user message mentions first (else the first value); numbers 0.5 and
integers 1 (moved inside ``minimum``/``maximum``); booleans true; strings the first words of
the first user message; arrays ``minItems`` items (at least one); objects every property;
``anyOf``/``oneOf`` the first option that is not null; ``$ref`` resolved in the schema.
``json_object`` or no ``response_format``: it follows a JSON schema found in a fenced block of
the system prompt (prose around a fence, as chat models do), else answers ``{"text": ...}``
(``json_object``) or like ``local/echo``.

``local/json-noformat`` is an older model: it refuses ``json_schema`` with HTTP 400
(``Invalid parameter: 'response_format' of type 'json_schema' is not supported with this
model.``), as OpenAI does, and otherwise answers like ``local/json``.

Markers in the first user message steer both, for tests and tutorials:

- ``holynb: invalid``: the first answer breaks the schema (its first field has a wrong value);
  asked again (the conversation holds its earlier reply), it answers correctly;
- ``holynb: invalid-always``: every answer breaks the schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

from holynb.server.models import echo
from holynb.server.registry import ModelRegistry
from holynb.server.tokens import content_text
from holynb.server.wire import RequestError

__all__ = ["json_model", "noformat_model", "register_json_models", "sample"]

_MARKER = re.compile(r"holynb:\s*(invalid-always|invalid)\b")
_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WORDS = 8


def _first_user_text(messages: list[dict[str, Any]]) -> str:
    for m in messages:
        if m.get("role") == "user":
            return " ".join(content_text(m.get("content")).split())
    return ""


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _pick_enum(values: list[Any], text: str) -> Any:
    lowered = text.lower()
    found = [
        (m.start(), v)
        for v in values
        if isinstance(v, str) and v and (m := re.search(rf"\b{re.escape(v.lower())}\b", lowered))
    ]
    return min(found, key=lambda f: f[0])[1] if found else values[0]


def _bounded(value: float, node: dict[str, Any]) -> float:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    if low is not None and high is not None and not low <= value <= high:
        return (low + high) / 2
    if low is not None and value <= low:
        return low + 1 if "exclusiveMinimum" in node else low
    if high is not None and value >= high:
        return high - 1 if "exclusiveMaximum" in node else high
    return value


def sample(schema: Any, text: str, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value that fits ``schema``, built deterministically from ``text`` (see the module
    docstring for the rules)."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    root = schema if root is None else root
    node = _resolve(schema, root)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return _pick_enum(list(node["enum"]), text)
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in node.get(key) or () if isinstance(o, dict)]
        if options:
            usable = [o for o in options if _resolve(o, root).get("type") != "null"]
            return sample((usable or options)[0], text, root, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in node else "array" if "items" in node else "string"
    if kind == "object":
        props = node.get("properties") or {}
        return {name: sample(sub, text, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, int(node.get("minItems", 1)))
        return [sample(node.get("items") or {}, text, root, depth + 1) for _ in range(count)]
    if kind == "number":
        return float(_bounded(0.5, node))
    if kind == "integer":
        return int(_bounded(1, node))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    words = " ".join(text.split()[:_WORDS]) or "text"
    words = words.ljust(int(node.get("minLength", 0)), ".")
    return words[: node["maxLength"]] if "maxLength" in node else words


def _broken(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with its first field replaced by a value of the wrong kind."""
    if not isinstance(value, dict) or not value:
        return "not what the schema asks for"
    name = next(iter(value))
    wrong = 12345 if isinstance(value[name], str) else "???"
    return {**value, name: wrong}


def _schema_in_system(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    for m in messages:
        if m.get("role") not in ("system", "developer"):
            continue
        for block in _FENCE.findall(content_text(m.get("content"))):
            try:
                found = json.loads(block)
            except ValueError:
                continue
            if isinstance(found, dict) and ("type" in found or "properties" in found):
                return found
    return None


def _format(params: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The response_format type and, for json_schema, the schema; checked as OpenAI does."""
    rf = params.get("response_format")
    if rf is None:
        return None, None
    kind = rf.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise RequestError(
            400,
            f"Invalid value: {kind!r}. Supported values are: 'text', 'json_object' and "
            "'json_schema'.",
            code="invalid_value",
            param="response_format.type",
        )
    if kind != "json_schema":
        return kind, None
    inner = rf.get("json_schema")
    if not isinstance(inner, dict) or not isinstance(inner.get("name"), str):
        raise RequestError(
            400,
            "Missing required parameter: 'response_format.json_schema.name'.",
            code="missing_required_parameter",
            param="response_format.json_schema.name",
        )
    if not _NAME.match(inner["name"]):
        raise RequestError(
            400,
            "Invalid 'response_format.json_schema.name': only letters, digits, '_' and '-', "
            "at most 64 characters.",
            code="invalid_value",
            param="response_format.json_schema.name",
        )
    schema = inner.get("schema")
    if not isinstance(schema, dict):
        raise RequestError(
            400,
            "Invalid 'response_format.json_schema.schema': expected an object.",
            code="invalid_type",
            param="response_format.json_schema.schema",
        )
    return kind, schema


def _answer(messages: list[dict[str, Any]], schema: dict[str, Any], fenced: bool) -> str:
    text = _first_user_text(messages)
    marker = _MARKER.search(text)
    clean = _MARKER.sub("", text)
    value = sample(schema, clean)
    answered_before = any(m.get("role") == "assistant" for m in messages)
    if marker and (marker.group(1) == "invalid-always" or not answered_before):
        value = _broken(value, schema)
    body = json.dumps(value)
    if fenced:
        return f"Here is the JSON you asked for:\n\n```json\n{body}\n```\n"
    return body


def json_model(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """``local/json``: structured outputs (see the module docstring)."""
    kind, schema = _format(params)
    if schema is not None:
        return _answer(messages, schema, fenced=False)
    prompted = _schema_in_system(messages)
    if prompted is not None:
        return _answer(messages, prompted, fenced=kind != "json_object")
    if kind == "json_object":
        return json.dumps({"text": echo(messages, params)})
    return echo(messages, params)


def noformat_model(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """``local/json-noformat``: refuses ``json_schema``; otherwise like ``local/json``."""
    kind, _ = _format(params)
    if kind == "json_schema":
        raise RequestError(
            400,
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported with "
            "this model.",
            code=None,
            param="response_format",
        )
    return json_model(messages, params)


def register_json_models(registry: ModelRegistry) -> None:
    """Add ``local/json`` and ``local/json-noformat`` to ``registry``."""
    registry.register("local/json", json_model)
    registry.register("local/json-noformat", noformat_model)
