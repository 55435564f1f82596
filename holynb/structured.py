"""Structured answers: ``schema=`` (a pydantic model or a JSON schema) on a chat call.

>>> class Sentiment(pydantic.BaseModel):
...     label: Literal["positive", "negative", "neutral"]
...     confidence: float
>>> r = session.chat("Classify: I loved it", schema=Sentiment)
>>> r.parsed                      # Sentiment(label='positive', confidence=0.93)

How a call goes:

1. ``response_format={"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``
   is sent, unless this endpoint and model already refused it. A refusal (HTTP 400/422 whose
   message names ``response_format`` or ``json_schema``) is remembered per (endpoint, model) for
   the session, and the call is sent again with the schema in the system prompt instead;
   concurrent calls wait for the first one's verdict rather than all being refused. A refusal
   of this particular schema (e.g. one strict mode cannot express) falls back for this call
   only.
2. The reply is read with :func:`holynb.jsonx.answer_json` (the whole reply is the JSON, less
   whitespace, ``<think>`` blocks and one code fence; broken JSON there is repaired; an object
   inside prose, two JSON blocks, a duplicate key or NaN/Infinity is a mismatch) and
   validated: pydantic for a model class; for a dict schema ``jsonschema`` when it is
   installed, else a small built-in check (types, enum, const, required, properties,
   additionalProperties, items, anyOf/oneOf/allOf, $ref, bounds and lengths).
3. If it does not match, the model is asked once more, with its reply and what was wrong.
4. Still wrong: :class:`SchemaValidationError` with the raw text and the result.

The returned ChatResult's ``parsed`` holds the validated answer (a model instance, or the
decoded JSON for a dict schema); its usage, cost, latency and attempts cover every round trip.
Every request, refused ones included, is a row of the ledger.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from holynb.errors import BadRequestError, HolynbError, SchemaValidationError

if TYPE_CHECKING:
    import pandas as pd

    from holynb.chat_stream import AsyncChatStream
    from holynb.results import ChatResult
    from holynb.session import Prompt, Session

__all__ = [
    "AnswerSchema",
    "FormatSupport",
    "SchemaValidationError",
    "achat_structured",
    "astream_structured",
]

_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_ERRORS = 5
_INSTRUCTIONS = (
    "Answer with one JSON object that conforms to the JSON schema below, and nothing else "
    "(no prose, no code fence).\n```json\n{schema}\n```"
)
_REPAIR = (
    "Your answer does not match the JSON schema: {errors}\n"
    "Answer again with only the corrected JSON object."
)
_HINT = (
    "Hint: loosen the schema, raise max_tokens if the answer was cut, or try a stronger model; "
    "the last reply is in err.raw and its figures in err.result."
)


class _Mismatch(Exception):
    """The reply is not JSON, or not JSON that fits the schema; the message says why."""


@dataclass(frozen=True)
class AnswerSchema:
    """What ``schema=`` asks for: the JSON schema to send and how to validate a reply.

    >>> AnswerSchema.of(Sentiment).response_format()["json_schema"]["name"]
    'Sentiment'
    """

    name: str
    schema: dict[str, Any]
    strict: bool
    model: Any = None  # the pydantic model class, when one was given

    @classmethod
    def of(cls, schema: Any) -> AnswerSchema:
        """From a pydantic model class, a JSON schema dict, or an OpenAI-style
        ``{"name": ..., "schema": {...}}`` wrapper. Raises TypeError for anything else."""
        if isinstance(schema, AnswerSchema):
            return schema
        if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
            return _from_model(schema)  # building a model's schema takes ~2 ms: once per model
        if isinstance(schema, Mapping):
            return _from_json(json.dumps(schema, default=str))  # key order kept: it is meaningful
        raise TypeError(
            "schema= takes a pydantic model class (class Answer(pydantic.BaseModel): ...) or a "
            f"JSON schema dict such as {{'type': 'object', 'properties': {{...}}}}, not "
            f"{type(schema).__name__}."
        )

    def response_format(self) -> dict[str, Any]:
        """The ``response_format`` request parameter for this schema."""
        inner = {"name": self.name, "schema": self.schema, "strict": self.strict}
        return {"type": "json_schema", "json_schema": inner}

    def instructions(self) -> str:
        """The system-prompt text that asks for this schema (for endpoints without
        ``response_format``)."""
        return _INSTRUCTIONS.format(schema=json.dumps(self.schema, indent=1))

    @property
    def fields(self) -> list[str]:
        """The top-level property names (the columns ``map`` adds)."""
        props = self.schema.get("properties")
        return list(props) if isinstance(props, Mapping) else []

    def parse(self, text: str) -> Any:
        """The validated answer in ``text``; raises ``_Mismatch`` saying what is wrong."""
        value = _decode(text)
        if self.model is not None:
            return _validate_pydantic(self.model, value)
        _validate_dict(self.schema, value)
        return value

    def mismatch(self, text: str) -> str | None:
        """What is wrong with ``text`` as an answer to this schema, or None when it fits."""
        try:
            self.parse(text)
        except _Mismatch as err:
            return str(err)
        return None

    def columns(self, parsed: Any) -> dict[str, Any]:
        """``parsed`` as a flat dict of its top-level fields, for a DataFrame row."""
        if hasattr(parsed, "model_dump"):
            return dict(parsed.model_dump(mode="json"))
        if isinstance(parsed, Mapping) and self.fields:
            return dict(parsed)
        return {"parsed": parsed}

    def add_columns(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (map's columns) with one column per field of the answer, filled from each
        ok row's ``text`` (empty on failed rows). A field named like a map column gets an
        ``answer_`` prefix (``answer_text``); a schema without properties gives ``parsed``."""
        names = self.fields or ["parsed"]
        values: dict[str, list[Any]] = {name: [] for name in names}
        for ok, text in zip(frame["ok"], frame["text"], strict=True):
            row: dict[str, Any] = {}
            if ok and isinstance(text, str):
                try:
                    row = self.columns(self.parse(text))
                except _Mismatch:  # not for rows of this run: they were validated
                    row = {}
            for name in names:
                values[name].append(row.get(name))
        frame = frame.copy()
        for name in names:
            frame[f"answer_{name}" if name in frame.columns else name] = values[name]
        return frame


@functools.lru_cache(maxsize=128)
def _from_model(model: type) -> AnswerSchema:
    sent, strict = _strict_schema(model.model_json_schema())  # type: ignore[attr-defined]
    return AnswerSchema(_clean_name(model.__name__), sent, strict, model)


@functools.lru_cache(maxsize=128)
def _from_json(text: str) -> AnswerSchema:
    raw = json.loads(text)
    name = raw.get("title")
    if isinstance(raw.get("schema"), Mapping) and "type" not in raw:
        name = raw.get("name") or raw["schema"].get("title")
        raw = dict(raw["schema"])
    sent, strict = _strict_schema(raw)
    return AnswerSchema(_clean_name(str(name or "answer")), sent, strict)


def _clean_name(name: str) -> str:
    return _NAME.sub("_", name)[:64] or "answer"


def _strict_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A copy with ``additionalProperties: false`` on every object that does not say otherwise,
    and whether it qualifies for strict mode (every property required, none open)."""
    out = copy.deepcopy(schema)
    strict = True

    def visit(node: Any) -> None:
        nonlocal strict
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                node.setdefault("additionalProperties", False)
                props = node.get("properties") or {}
                if node["additionalProperties"] is not False or set(props) - set(
                    node.get("required") or ()
                ):
                    strict = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(out)
    return out, strict


def _decode(text: str) -> Any:
    from holynb.jsonx import answer_json

    try:
        return answer_json(text)
    except HolynbError as err:
        raise _Mismatch(str(err)) from None


def _validate_pydantic(model: Any, value: Any) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(value)
    except ValidationError as err:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in err.errors()[:_MAX_ERRORS]
        ]
        raise _Mismatch("; ".join(problems)) from None


def _validate_dict(schema: dict[str, Any], value: Any) -> None:
    try:
        import jsonschema
    except ImportError:
        from holynb.schema_check import check

        problems = check(value, schema)
    else:
        cls = jsonschema.validators.validator_for(schema)
        errors = sorted(cls(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
        problems = [f"{e.json_path.removeprefix('$.') or '(root)'}: {e.message}" for e in errors]
    if problems:
        raise _Mismatch("; ".join(problems[:_MAX_ERRORS]))


# -- what each endpoint accepts ----------------------------------------------------------------


@dataclass
class FormatSupport:
    """Which (endpoint, model) pairs accept ``response_format`` ``json_schema``: True, False,
    or absent (not asked yet). One per Session."""

    known: dict[tuple[str, str], bool] = field(default_factory=dict)
    _locks: dict[tuple[int, str, str], asyncio.Lock] = field(default_factory=dict, repr=False)

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        """The lock the first request to ``key`` holds while it finds out (per event loop)."""
        return self._locks.setdefault((id(asyncio.get_running_loop()), *key), asyncio.Lock())


_UNSUPPORTED = (
    "not supported", "unsupported", "unrecognized", "unknown", "not permitted", "not allowed",
    "extra inputs", "extra_forbidden",
)  # fmt: skip


def _refusal(err: BadRequestError) -> str | None:
    """Why a 400/422 refused the request: ``"unsupported"`` (this endpoint and model do not
    take json_schema: remembered), ``"schema"`` (they do, but not this schema, e.g. one strict
    mode cannot express: this call falls back) or None (about something else: raised)."""
    text = f"{err.message} {err.body or ''}".lower()
    if "response_format" not in text and "json_schema" not in text:
        return None
    return "unsupported" if any(word in text for word in _UNSUPPORTED) else "schema"


# -- the call ----------------------------------------------------------------------------------


def _with_instructions(messages: list[dict[str, Any]], spec: AnswerSchema) -> list[dict[str, Any]]:
    text = spec.instructions()
    first = messages[0]
    if first.get("role") in ("system", "developer") and isinstance(first.get("content"), str):
        return [{**first, "content": f"{first['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def combine(results: list[ChatResult], parsed: Any = None) -> ChatResult:
    """The last result, with usage, cost, latency and attempts summed over ``results`` (the
    round trips of one structured answer) and ``parsed`` set."""
    from holynb.results import Usage

    last = results[-1]
    if len(results) == 1:
        return replace(last, parsed=parsed)
    usages = [r.usage for r in results]
    costs = [r.cost_usd for r in results]
    return replace(
        last,
        usage=Usage(
            prompt_tokens=sum(u.prompt_tokens for u in usages),
            completion_tokens=sum(u.completion_tokens for u in usages),
            cached_tokens=sum(u.cached_tokens for u in usages),
            reasoning_tokens=sum(u.reasoning_tokens for u in usages),
            estimated=any(u.estimated for u in usages),
        ),
        cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c),
        latency_ms=sum(r.latency_ms for r in results),
        ttft_ms=results[0].ttft_ms,
        attempts=sum(r.attempts for r in results),
        parsed=parsed,
    )


async def achat_structured(
    session: Session,
    prompt: Prompt,
    schema: Any,
    *,
    model: str | None = None,
    system: str | None = None,
    tag: str | None = None,
    kind: str = "chat",
    **params: Any,
) -> ChatResult:
    """Ask for an answer that fits ``schema``; see the module docstring. ``params`` go into
    the request body (``temperature``, ``max_tokens``, ...). Raises SchemaValidationError."""
    from holynb.session import build_messages

    if "response_format" in params:
        raise TypeError("Give schema= or response_format=, not both: schema= sets it for you.")
    spec = AnswerSchema.of(schema)
    messages = build_messages(prompt, system)
    model = model or session.model
    results: list[ChatResult] = []
    reply = await _ask(session, spec, messages, model, tag, kind, params, results)
    try:
        parsed = spec.parse(reply.text)
    except _Mismatch as first:
        asked = [*messages, {"role": "assistant", "content": reply.text}]
        asked.append({"role": "user", "content": _REPAIR.format(errors=first)})
        reply = await _ask(session, spec, asked, model, tag, kind, params, results)
        try:
            parsed = spec.parse(reply.text)
        except _Mismatch as second:
            result = combine(results)
            session.last_result = result
            cut = " (the reply was cut at max_tokens)" if reply.finish_reason == "length" else ""
            raise SchemaValidationError(
                f"{model}'s answer does not match the schema {spec.name!r} after one repair "
                f"round-trip{cut}: {second}\n{_HINT}",
                raw=reply.text,
                errors=str(second),
                result=result,
            ) from None
    result = combine(results, parsed)
    session.last_result = result
    return result


async def _ask(
    session: Session,
    spec: AnswerSchema,
    messages: list[dict[str, Any]],
    model: str,
    tag: str | None,
    kind: str,
    params: dict[str, Any],
    results: list[ChatResult],
) -> ChatResult:
    support = session._format_support
    key = (session.base_url, model)

    async def send(accepted: bool | None) -> ChatResult:
        try:
            return await _send(session, spec, messages, model, tag, kind, params, accepted)
        except BadRequestError as err:
            why = _refusal(err) if accepted is not False else None
            if why is None:
                raise
            if why == "unsupported":
                support.known[key] = False
            return await _send(session, spec, messages, model, tag, kind, params, False)

    reply = None
    if key not in support.known:
        async with support.lock(key):  # the first request finds out; the others wait for it
            if key not in support.known:
                reply = await send(None)
                support.known.setdefault(key, True)
    if reply is None:
        reply = await send(support.known[key])
    results.append(reply)
    return reply


async def _send(
    session: Session,
    spec: AnswerSchema,
    messages: list[dict[str, Any]],
    model: str,
    tag: str | None,
    kind: str,
    params: dict[str, Any],
    accepted: bool | None,
) -> ChatResult:
    if accepted is False:
        return await session.achat(
            _with_instructions(messages, spec), model=model, tag=tag, kind=kind, **params
        )
    return await session.achat(
        messages,
        model=model,
        tag=tag,
        kind=kind,
        response_format=spec.response_format(),
        **params,
    )


async def astream_structured(
    session: Session,
    prompt: Prompt,
    schema: Any,
    outer: AsyncChatStream,
    *,
    model: str | None = None,
    system: str | None = None,
    tag: str | None = None,
    kind: str = "stream",
    **params: Any,
) -> AsyncIterator[str]:
    """Stream an answer that should fit ``schema``; when it ends, ``outer.result.parsed``
    holds it validated. No repair round-trip (the text was already shown): a mismatch raises
    SchemaValidationError at the end of the stream. A refused ``response_format`` is retried
    with instructions and remembered, as for ``chat``."""
    from holynb.session import build_messages

    if "response_format" in params:
        raise TypeError("Give schema= or response_format=, not both: schema= sets it for you.")
    spec = AnswerSchema.of(schema)
    messages = build_messages(prompt, system)
    model = model or session.model
    key = (session.base_url, model)
    accepted = session._format_support.known.get(key)
    while True:
        if accepted is False:
            asked, extra = _with_instructions(messages, spec), params
        else:
            asked, extra = messages, {**params, "response_format": spec.response_format()}
        sent = False
        inner = session.astream(asked, model=model, tag=tag, kind=kind, **extra)
        try:
            async for text in inner:
                sent = True
                yield text
        except BadRequestError as err:
            why = _refusal(err)
            if sent or accepted is False or why is None:
                raise
            if why == "unsupported":
                session._format_support.known[key] = False
            accepted = False
            continue
        if accepted is None:
            session._format_support.known[key] = True
        break
    result = outer.result = inner.result
    if result is None:
        return
    try:
        parsed = spec.parse(result.text)
    except _Mismatch as err:
        raise SchemaValidationError(
            f"{model}'s streamed answer does not match the schema {spec.name!r}: {err}\n{_HINT}",
            raw=result.text,
            errors=str(err),
            result=result,
        ) from None
    outer.result = session.last_result = replace(result, parsed=parsed)
