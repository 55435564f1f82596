"""Structured answers (``schema=``) end to end against the local server's local/json models:
response_format json_schema, the fallback to instructions, validation, the repair round-trip."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Literal

import pydantic
import pytest

import holynb
from holynb.schema_check import check
from holynb.server import LocalServer, faults
from holynb.server.json_model import sample
from holynb.structured import AnswerSchema
from tests.helpers import session_for


class Sentiment(pydantic.BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


SENTIMENT_SCHEMA: dict[str, Any] = {
    "title": "Sentiment",
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
}


@pytest.fixture
def session(local: LocalServer) -> Iterator[holynb.Session]:
    s = session_for(local, model="local/json", log_path="")
    yield s
    s.close()


def _chat_log(server: LocalServer) -> list[dict[str, Any]]:
    return [e for e in server.requests_log if e["path"] == "/v1/chat/completions"]


# -- the answer --------------------------------------------------------------------------------


def test_a_pydantic_model_gives_a_validated_instance(session: holynb.Session) -> None:
    r = session.chat("Classify this review: a negative experience.", schema=Sentiment)
    assert r.parsed == Sentiment(label="negative", confidence=0.5)
    assert r.text == '{"label": "negative", "confidence": 0.5}'


def test_the_request_carries_a_strict_json_schema(
    session: holynb.Session, local: LocalServer
) -> None:
    session.chat("Classify: fine", schema=Sentiment)
    body = _chat_log(local)[0]["body"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Sentiment" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert body["messages"] == [{"role": "user", "content": "Classify: fine"}]


def test_a_json_schema_dict_gives_a_dict(session: holynb.Session) -> None:
    r = session.chat("Classify: I stay neutral", schema=SENTIMENT_SCHEMA)
    assert r.parsed == {"label": "neutral", "confidence": 0.5}


async def test_achat_takes_a_schema_too(session: holynb.Session) -> None:
    r = await session.achat("Classify: positive!", schema=Sentiment)
    assert r.parsed.label == "positive"
    await session.aclose()


def test_sampling_parameters_reach_the_request(session: holynb.Session, local: LocalServer) -> None:
    session.chat("x", schema=Sentiment, temperature=0.2, max_tokens=50, seed=3)
    body = _chat_log(local)[0]["body"]
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.2, 50, 3)


# -- repair ------------------------------------------------------------------------------------


def test_a_wrong_answer_is_repaired_with_one_round_trip(
    session: holynb.Session, local: LocalServer
) -> None:
    r = session.chat("holynb: invalid. Classify: neutral", schema=Sentiment)
    assert r.parsed == Sentiment(label="neutral", confidence=0.5)
    log = _chat_log(local)
    assert len(log) == 2
    repair = log[1]["body"]["messages"]
    assert repair[1] == {"role": "assistant", "content": '{"label": 12345, "confidence": 0.5}'}
    assert repair[2]["role"] == "user" and "label" in repair[2]["content"]
    first, second = (row for _, row in session.ledger.iterrows())
    assert first.ok and second.ok
    assert r.usage.prompt_tokens == first.prompt_tokens + second.prompt_tokens
    assert r.attempts == 2


def test_still_wrong_after_the_repair_raises_with_the_raw_text(
    session: holynb.Session, local: LocalServer
) -> None:
    with pytest.raises(holynb.SchemaValidationError) as info:
        session.chat("holynb: invalid-always. Classify: meh", schema=Sentiment)
    err = info.value
    assert err.raw == '{"label": 12345, "confidence": 0.5}'
    assert "label" in err.errors and "Hint:" in str(err)
    assert err.result is not None and err.result.usage.completion_tokens > 0
    assert len(_chat_log(local)) == 2
    assert len(session.ledger) == 2  # both calls were paid for and recorded


def test_prose_instead_of_json_is_a_mismatch_too() -> None:
    with pytest.raises(Exception, match="not JSON"):
        AnswerSchema.of(Sentiment).parse("I think it is positive.")


# -- answers that only look right ----------------------------------------------------------------

PARROT = "local/parrot-first"  # answers the first user message as it is, ignoring the schema


@pytest.fixture
def parrot(local: LocalServer) -> Iterator[holynb.Session]:
    def first_user_message(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
        return next(m["content"] for m in messages if m.get("role") == "user")

    local.register_model(PARROT, first_user_message)
    s = session_for(local, model=PARROT, log_path="")
    yield s
    s.close()


def _refused(s: holynb.Session, reply: str, schema: Any = SENTIMENT_SCHEMA) -> str:
    with pytest.raises(holynb.SchemaValidationError) as info:
        s.chat(reply, schema=schema)
    assert info.value.raw == reply  # the row keeps the text it was given
    return info.value.errors


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("schema", [SENTIMENT_SCHEMA, Sentiment], ids=["dict", "pydantic"])
def test_non_finite_numbers_are_not_json_numbers(
    parrot: holynb.Session, local: LocalServer, number: str, schema: Any
) -> None:
    errors = _refused(parrot, f'{{"label": "positive", "confidence": {number}}}', schema)
    assert "not a finite JSON number" in errors
    assert len(_chat_log(local)) == 2  # asked once more, with what was wrong


def test_the_builtin_check_refuses_non_finite_numbers() -> None:
    schema = AnswerSchema.of(SENTIMENT_SCHEMA).schema
    for bad in (float("nan"), float("inf"), float("-inf")):
        problems = check({"label": "positive", "confidence": bad}, schema)
        assert problems and "finite" in problems[0]
    assert check({"n": float("nan")}, {"properties": {"n": {"type": "integer"}}})
    assert check({"n": float("nan")}, {"properties": {"n": {"maximum": 3}}})


def test_duplicate_keys_are_a_validation_error(parrot: holynb.Session) -> None:
    reply = '{"label": "negative", "confidence": 0.2, "label": "positive"}'
    assert "duplicate key 'label'" in _refused(parrot, reply)
    nested = '{"items": [{"label": "x", "label": "y"}]}'
    assert "duplicate key 'label'" in _refused(parrot, nested, {"type": "object"})


@pytest.mark.parametrize(
    "reply",
    [
        'I refuse to classify this. Example: {"label": "positive", "confidence": 0.9}',
        'Sorry, I cannot help with that.\n\n{"label": "positive", "confidence": 0.9}',
        '{"label": "positive", "confidence": 0.9} is what a positive answer would look like, '
        "but I will not answer.",
    ],
)
def test_an_object_inside_prose_is_not_an_answer(parrot: holynb.Session, reply: str) -> None:
    assert "inside prose" in _refused(parrot, reply)


@pytest.mark.parametrize(
    "reply",
    [
        '  \n{"label": "positive", "confidence": 0.9}\n',
        '```json\n{"label": "positive", "confidence": 0.9}\n```',
        'Here is the JSON you asked for:\n\n```json\n{"label": "positive", "confidence": 0.9}\n```',
        '<think>maybe {"label": "negative", "confidence": 0.1}?</think>\n'
        '{"label": "positive", "confidence": 0.9}',
        '{"label": "positive", "confidence": 0.9,}',  # repaired, as before
    ],
    ids=["whitespace", "fence", "fence-with-lead-in", "think", "trailing-comma"],
)
def test_a_reply_that_is_json_once_stripped_is_an_answer(
    parrot: holynb.Session, local: LocalServer, reply: str
) -> None:
    assert parrot.chat(reply, schema=SENTIMENT_SCHEMA).parsed == {
        "label": "positive",
        "confidence": 0.9,
    }
    assert len(_chat_log(local)) == 1


def test_two_fenced_objects_are_ambiguous(parrot: holynb.Session) -> None:
    reply = (
        'For example:\n```json\n{"label": "negative", "confidence": 0.1}\n```\nMy answer:\n'
        '```json\n{"label": "positive", "confidence": 0.9}\n```'
    )
    assert "2 JSON blocks" in _refused(parrot, reply)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ('{"label": "negative", "label": "positive",}', "duplicate key 'label'"),
        ('{"items": [{"k": 1, "k": 2}],}', "duplicate key 'k'"),
        ('{"label": "positive", "confidence": NaN,}', "not a finite JSON number"),
        ('{"label": "positive", "confidence": -inf,}', "not a finite JSON number"),
        ('{"label": "positive", "confidence": 1e999,}', "not a finite JSON number"),
    ],
)
def test_broken_json_is_not_repaired_into_an_answer_it_does_not_say(
    reply: str, problem: str
) -> None:
    # json-repair would keep the last key and turn NaN into the string "NaN" (which pydantic
    # reads back as a float): the repair must not hide what the strict reading refuses.
    assert problem in (AnswerSchema.of({"type": "object"}).mismatch(reply) or "")


def test_the_same_key_in_two_objects_and_nan_in_a_string_are_fine() -> None:
    spec = AnswerSchema.of({"type": "object", "additionalProperties": True})
    assert spec.mismatch('{"a": {"k": 1}, "b": {"k": 2}, "note": "NaN, Infinity"}') is None
    assert spec.mismatch('{"a": {"k": 1}, "b": {"k": 2}, "note": "NaN, Infinity",}') is None


def test_map_fails_each_row_that_only_looks_like_an_answer(parrot: holynb.Session) -> None:
    replies = [
        '{"label": "neutral", "confidence": 0.5}',
        '{"label": "positive", "confidence": NaN}',
        '{"label": "negative", "confidence": 0.2, "label": "positive"}',
        'I refuse. Example: {"label": "positive", "confidence": 0.9}',
    ]
    df = parrot.map(replies, schema=SENTIMENT_SCHEMA, progress=False)
    assert df["ok"].tolist() == [True, False, False, False]
    assert df.loc[0, "label"] == "neutral" and df.loc[1:, "label"].isna().all()
    assert df["text"].tolist() == replies  # each failed row keeps its text
    assert "not a finite JSON number" in df.loc[1, "error"]
    assert "duplicate key 'label'" in df.loc[2, "error"]
    assert "inside prose" in df.loc[3, "error"]


# -- endpoints without json_schema -------------------------------------------------------------


def test_a_refused_response_format_falls_back_to_instructions(
    session: holynb.Session, local: LocalServer
) -> None:
    r = session.chat("Classify: negative", schema=Sentiment, model="local/json-noformat")
    assert r.parsed == Sentiment(label="negative", confidence=0.5)
    first, second = (e["body"] for e in _chat_log(local))
    assert "response_format" in first and "response_format" not in second
    assert second["messages"][0]["role"] == "system"
    assert '"confidence"' in second["messages"][0]["content"]
    assert "```json" in r.text  # the answer came wrapped in prose and recovered


def test_the_refusal_is_remembered_per_endpoint_and_model(
    session: holynb.Session, local: LocalServer
) -> None:
    session.chat("a", schema=Sentiment, model="local/json-noformat")
    session.chat("b", schema=Sentiment, model="local/json-noformat")
    session.chat("c", schema=Sentiment, model="local/json")
    sent = [("response_format" in e["body"], e["status"]) for e in _chat_log(local)]
    assert sent == [(True, 400), (False, 200), (False, 200), (True, 200)]


def test_concurrent_calls_wait_for_the_first_verdict(
    session: holynb.Session, local: LocalServer
) -> None:
    async def many() -> list[holynb.ChatResult]:
        calls = [
            session.achat(f"item {i}", schema=Sentiment, model="local/json-noformat")
            for i in range(6)
        ]
        try:
            return await asyncio.gather(*calls)
        finally:
            await session.aclose()

    results = asyncio.run(many())
    assert all(r.parsed is not None for r in results)
    assert [e["status"] for e in _chat_log(local)].count(400) == 1


def test_the_users_system_prompt_is_kept_in_the_fallback(
    session: holynb.Session, local: LocalServer
) -> None:
    session.chat("x", schema=Sentiment, model="local/json-noformat", system="Be terse.")
    system = _chat_log(local)[1]["body"]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be terse.\n\n")


def test_a_refused_schema_falls_back_for_that_call_only(
    session: holynb.Session, local: LocalServer
) -> None:
    message = "Invalid schema for response_format 'Sentiment': 'required' is required."
    local.faults.push(faults.status(400, message=message))
    assert session.chat("a", schema=Sentiment).parsed is not None
    session.chat("b", schema=Sentiment)
    sent = [("response_format" in e["body"], e["status"]) for e in _chat_log(local)]
    assert sent == [(True, 400), (False, 200), (True, 200)]


def test_another_bad_request_is_raised_not_remembered(
    session: holynb.Session, local: LocalServer
) -> None:
    local.faults.push(faults.status(400, message="temperature is out of range"))
    with pytest.raises(holynb.BadRequestError):
        session.chat("x", schema=Sentiment)
    assert session.caller.probe.known == {}


def test_schema_and_response_format_together_are_refused(session: holynb.Session) -> None:
    with pytest.raises(TypeError, match="not both"):
        session.chat("x", schema=Sentiment, response_format={"type": "json_object"})


def test_a_schema_of_the_wrong_kind_is_refused(session: holynb.Session) -> None:
    with pytest.raises(TypeError, match="pydantic model class"):
        session.chat("x", schema="label, confidence")


# -- the schema sent ---------------------------------------------------------------------------


def test_optional_fields_turn_strict_mode_off() -> None:
    class Loose(pydantic.BaseModel):
        label: str
        note: str | None = None

    assert AnswerSchema.of(Loose).strict is False
    assert AnswerSchema.of(Sentiment).strict is True


def test_an_openai_style_wrapper_is_accepted() -> None:
    spec = AnswerSchema.of({"name": "my answer!", "schema": SENTIMENT_SCHEMA})
    assert spec.name == "my_answer_" and spec.fields == ["label", "confidence"]


# -- validation without jsonschema -------------------------------------------------------------

CASES: list[tuple[Any, bool]] = [
    ({"label": "positive", "confidence": 0.9}, True),
    ({"label": "great", "confidence": 0.9}, False),
    ({"label": "positive"}, False),
    ({"label": "positive", "confidence": "high"}, False),
    ({"label": "positive", "confidence": 1.5}, False),
    ({"label": "positive", "confidence": 1, "extra": 1}, False),
    (["positive"], False),
]


@pytest.mark.parametrize(("value", "valid"), CASES)
def test_the_builtin_check_agrees_with_jsonschema(value: Any, valid: bool) -> None:
    import jsonschema

    schema = AnswerSchema.of(SENTIMENT_SCHEMA).schema
    assert jsonschema.Draft202012Validator(schema).is_valid(value) is valid
    assert (not check(value, schema)) is valid


def test_the_builtin_check_follows_refs_and_arrays() -> None:
    schema = Sentiment.model_json_schema()
    wrapper = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/S"}}},
        "$defs": {"S": schema},
    }
    ok = {"items": [{"label": "neutral", "confidence": 0.1}]}
    bad = {"items": [{"label": "nope", "confidence": 0.1}]}
    assert check(ok, wrapper) == []
    assert check(bad, wrapper)[0].startswith("items[0].label")


# -- the local server's json models ------------------------------------------------------------


def test_sample_fits_the_schema_it_was_built_from() -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"anyOf": [{"type": "null"}, {"const": "x"}]},
            "ok": {"type": "boolean"},
        },
    }
    value = sample(schema, "some words here")
    jsonschema.validate(value, schema)
    assert value == {"n": 5, "tags": ["some words here"] * 2, "kind": "x", "ok": True}


def test_local_json_checks_the_response_format_like_openai(local: LocalServer) -> None:
    import openai

    key = getattr(local, "api_key", None)  # a Secret when the server requires its token
    key = key.get() if hasattr(key, "get") else "anything"
    client = openai.OpenAI(base_url=local.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError, match=r"json_schema\.name"):
        client.chat.completions.create(
            model="local/json",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"schema": {}}},  # type: ignore[typeddict-item]
        )
    with pytest.raises(openai.BadRequestError, match="not supported with this model"):
        client.chat.completions.create(
            model="local/json-noformat",
            messages=[{"role": "user", "content": "hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": SENTIMENT_SCHEMA},
            },
        )


# -- streams -----------------------------------------------------------------------------------


def test_a_stream_is_validated_when_it_ends(session: holynb.Session) -> None:
    text = "".join(session.stream("Classify: positive", schema=Sentiment))
    assert text == '{"label": "positive", "confidence": 0.5}'
    assert session.last_result is not None
    assert session.last_result.parsed == Sentiment(label="positive", confidence=0.5)


def test_a_stream_falls_back_to_instructions_once(
    session: holynb.Session, local: LocalServer
) -> None:
    for _ in range(2):
        "".join(session.stream("Classify: neutral", schema=Sentiment, model="local/json-noformat"))
        assert session.last_result is not None and session.last_result.parsed.label == "neutral"
    log = _chat_log(local)
    # (the client also retries a refused stream once without stream_options: two 400s)
    assert [e["status"] for e in log][-2:] == [200, 200]
    assert {e["status"] for e in log[:-2]} == {400}
    assert not any("response_format" in e["body"] for e in log[-2:])


def test_a_stream_that_breaks_the_schema_raises_at_the_end(session: holynb.Session) -> None:
    seen: list[str] = []
    with pytest.raises(holynb.SchemaValidationError):
        for text in session.stream("holynb: invalid x", schema=Sentiment):
            seen.append(text)
    assert "".join(seen) == '{"label": 12345, "confidence": 0.5}'


def test_without_jsonschema_the_builtin_check_validates_dict_schemas(
    session: holynb.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema -> ImportError
    assert session.chat("Classify: neutral", schema=SENTIMENT_SCHEMA).parsed["label"] == "neutral"
    with pytest.raises(holynb.SchemaValidationError) as info:
        session.chat("holynb: invalid-always", schema=SENTIMENT_SCHEMA)
    assert info.value.errors == "label: 12345 is not of type string"


# -- stored answers are validated again on the way out -----------------------------------------

REVIEWS = ["Classify: a positive experience.", "Classify: a negative experience."]


class Verdict(pydantic.BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


def _stricter_verdict() -> type[pydantic.BaseModel]:
    """``Verdict`` with a new validator: the same JSON schema (so the same key), and answers
    labelled negative no longer pass."""

    class Verdict(pydantic.BaseModel):
        label: Literal["positive", "negative", "neutral"]
        confidence: float

        @pydantic.field_validator("label")
        @classmethod
        def not_negative(cls, value: str) -> str:
            if value == "negative":
                raise ValueError("negative verdicts need a second opinion")
            return value

    return Verdict


def test_a_checkpointed_schema_row_that_no_longer_validates_is_asked_again(
    local: LocalServer, tmp_path: Any
) -> None:
    ckpt = tmp_path / "run.sqlite"
    stricter = _stricter_verdict()
    assert stricter.model_json_schema() == Verdict.model_json_schema()
    with session_for(local, model="local/json", log_path="") as s:
        first = s.map(REVIEWS, schema=Verdict, checkpoint=ckpt, progress=False)
        assert first["ok"].all() and list(first["label"]) == ["positive", "negative"]
        sent = len(_chat_log(local))
        df = s.map(REVIEWS, schema=stricter, checkpoint=ckpt, progress=False)
    assert list(df["cache_hit"]) == [True, False]  # the positive row still validates
    assert len(_chat_log(local)) > sent  # the negative one was asked again
    assert list(df["ok"]) == [True, False] and df["label"].iloc[0] == "positive"
    assert "second opinion" in df["error"].iloc[1]
