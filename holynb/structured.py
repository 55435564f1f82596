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

import copy
import functools
import json
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from holynb.calls.call import Call
from holynb.calls.probe import JSON_SCHEMA, refusal_of
from holynb.errors import BadRequestError, HolynbError, SchemaValidationError
from holynb.prompts import Prompt, build_messages

if TYPE_CHECKING:
    import pandas as pd

    from holynb.calls.call import CallCache
    from holynb.calls.caller import Caller, Flow
    from holynb.chat_stream import AsyncChatStream
    from holynb.results import ChatResult


__all__ = [
    "AnswerSchema",
    "SchemaValidationError",
    "answer_flow",
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


def answer_flow(
    caller: Caller,
    prompt: Prompt,
    schema: Any,
    *,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    tag: str | None = None,
    kind: str = "chat",
    cache: CallCache = None,
    params: dict[str, Any] | None = None,
) -> Flow[ChatResult]:
    """The flow of one structured answer (``Caller.run`` drives it): ask with
    ``response_format`` json_schema (the schema in the prompt where the endpoint refuses
    it), validate, ask once more with what was wrong; raises SchemaValidationError."""
    params = dict(params or {})
    if "response_format" in params:
        raise TypeError("Give schema= or response_format=, not both: schema= sets it for you.")
    spec = AnswerSchema.of(schema)
    messages = build_messages(prompt, system)
    model = model or caller.settings.model

    def call_for(asked: list[dict[str, Any]]) -> Call:
        with_format = {**params, "response_format": spec.response_format()}
        body = caller.body(asked, model, None, temperature, max_tokens, with_format)
        plain = caller.body(_with_instructions(asked, spec), model, None, temperature,
                            max_tokens, params)  # fmt: skip
        fallback = Call(body=plain, kind=kind, tag=tag, cache=cache)
        return Call(body=body, kind=kind, tag=tag, cache=cache, probe=JSON_SCHEMA,
                    fallback=fallback)  # fmt: skip

    return _answer_flow(caller, spec, messages, model, call_for)


def _answer_flow(
    caller: Caller,
    spec: AnswerSchema,
    messages: list[dict[str, Any]],
    model: str,
    call_for: Any,
) -> Flow[ChatResult]:
    results: list[ChatResult] = []
    reply = yield call_for(messages)
    results.append(reply)
    try:
        parsed = spec.parse(reply.text)
    except _Mismatch as first:
        asked = [*messages, {"role": "assistant", "content": reply.text}]
        asked.append({"role": "user", "content": _REPAIR.format(errors=first)})
        reply = yield call_for(asked)
        results.append(reply)
        try:
            parsed = spec.parse(reply.text)
        except _Mismatch as second:
            result = combine(results)
            caller.meter.last_result = result
            cut = " (the reply was cut at max_tokens)" if reply.finish_reason == "length" else ""
            raise SchemaValidationError(
                f"{model}'s answer does not match the schema {spec.name!r} after one repair "
                f"round-trip{cut}: {second}\n{_HINT}",
                raw=reply.text,
                errors=str(second),
                result=result,
            ) from None
    result = combine(results, parsed)
    caller.meter.last_result = result
    return result


async def astream_structured(
    caller: Caller,
    prompt: Prompt,
    schema: Any,
    outer: AsyncChatStream,
    *,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    tag: str | None = None,
    kind: str = "stream",
    cache: CallCache = None,
    params: dict[str, Any] | None = None,
) -> AsyncGenerator[str, None]:
    """Stream an answer that should fit ``schema``; when it ends, ``outer.result.parsed``
    holds it validated. No repair round-trip (the text was already shown): a mismatch raises
    SchemaValidationError at the end of the stream. A refused ``response_format`` is retried
    with instructions and remembered, as for ``chat``."""
    params = dict(params or {})
    if "response_format" in params:
        raise TypeError("Give schema= or response_format=, not both: schema= sets it for you.")
    spec = AnswerSchema.of(schema)
    messages = build_messages(prompt, system)
    model = model or caller.settings.model
    probe, url = caller.probe, caller.base_url
    accepted = probe.verdict(JSON_SCHEMA, url, model)
    while True:
        if accepted is False:
            asked, extra = _with_instructions(messages, spec), params
        else:
            asked, extra = messages, {**params, "response_format": spec.response_format()}
        body = caller.body(asked, model, None, temperature, max_tokens, extra)
        sent = False
        try:
            async for text in caller.stream(
                Call(body=body, kind=kind, tag=tag, cache=cache), outer
            ):
                sent = True
                yield text
        except BadRequestError as err:
            why = refusal_of(err, JSON_SCHEMA)
            if sent or accepted is False or why is None:
                raise
            if why == "unsupported":
                probe.learn(JSON_SCHEMA, url, model, False)
            accepted = False
            continue
        if accepted is None:
            probe.learn(JSON_SCHEMA, url, model, True)
        break
    result = outer.result
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
    outer.result = caller.meter.last_result = replace(result, parsed=parsed)
