"""The OpenAI chat-completions wire format: request checks, answers, stream chunks and errors.

Requests are checked the way the OpenAI API checks them (unknown arguments and wrong types are
a 400 naming the parameter); answers and chunks are rendered byte for byte in OpenAI's shape.
A stream's chunks share one prefix and suffix rendered once, so a chunk costs one small
``orjson.dumps`` of its text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

SYSTEM_FINGERPRINT = "fp_holynb"

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
_NUMBER = (int, float)
# Every chat-completions argument the OpenAI API accepts, with the JSON type it must have
# (None: any). Anything else is refused, as OpenAI does.
_PARAMS: dict[str, tuple[type, ...] | None] = {
    "model": (str,),
    "messages": (list,),
    "stream": (bool,),
    "stream_options": (dict,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "n": (int,),
    "stop": (str, list),
    "seed": (int,),
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "logit_bias": (dict,),
    "logprobs": (bool,),
    "top_logprobs": (int,),
    "user": (str,),
    "response_format": (dict,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "functions": (list,),
    "function_call": (str, dict),
    "metadata": (dict,),
    "store": (bool,),
    "service_tier": (str,),
    "reasoning_effort": (str,),
    "modalities": (list,),
    "audio": (dict,),
    "prediction": (dict,),
    "verbosity": (str,),
    "prompt_cache_key": (str,),
    "safety_identifier": (str,),
    "web_search_options": (dict,),
}
_TYPE_NAMES = {
    str: "a string",
    list: "an array",
    dict: "an object",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
}


class RequestError(Exception):
    """A request the API refuses; rendered as an OpenAI error body with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> bytes:
        """The JSON error body."""
        return error_body(self.message, self.type, self.code, self.param)


def error_body(
    message: str, type: str, code: str | int | None = None, param: str | None = None
) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}`` as bytes."""
    error = {"message": message, "type": type, "param": param, "code": code}
    return orjson.dumps({"error": error})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number" if isinstance(value, float) else "an integer"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _invalid_type(param: str, expected: tuple[type, ...], value: Any) -> RequestError:
    names = [_TYPE_NAMES[t] for t in expected if not (t is int and float in expected)]
    wanted = " or ".join(names)
    return RequestError(
        400,
        f"Invalid type for '{param}': expected {wanted}, but got {_json_type(value)} instead.",
        code="invalid_type",
        param=param,
    )


def missing_parameter(param: str) -> RequestError:
    """OpenAI's 400 for a required parameter that is absent."""
    return RequestError(
        400,
        f"Missing required parameter: '{param}'.",
        code="missing_required_parameter",
        param=param,
    )


def invalid_value(value: Any, supported: Iterable[str], param: str) -> RequestError:
    """OpenAI's 400 for a value outside the supported ones."""
    listed = ", ".join(f"'{v}'" for v in supported)
    return RequestError(
        400,
        f"Invalid value: {value!r}. Supported values are: {listed}.",
        code="invalid_value",
        param=param,
    )


def _has_type(value: Any, expected: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in expected
    return isinstance(value, expected)


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    """The request body as a dict, or a RequestError saying what is wrong with it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError(
            400,
            "We could not parse the JSON body of your request. The body must be a JSON object "
            "(see https://platform.openai.com/docs/api-reference/chat/create).",
        ) from None
    if not isinstance(body, dict):
        raise RequestError(400, f"The request body must be a JSON object, not {_json_type(body)}.")
    for key, value in body.items():
        if key not in _PARAMS:
            raise RequestError(400, f"Unrecognized request argument supplied: {key}")
        expected = _PARAMS[key]
        if value is not None and expected is not None and not _has_type(value, expected):
            raise _invalid_type(key, expected, value)
    if not body.get("model"):
        raise RequestError(400, "you must provide a model parameter", param="model")
    if "messages" not in body or body["messages"] is None:
        raise missing_parameter("messages")
    _check_messages(body["messages"])
    _check_limits(body)
    return body


def _check_messages(messages: list[Any]) -> None:
    if not messages:
        raise RequestError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            code="empty_array",
            param="messages",
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid_type(where, (dict,), message)
        role = message.get("role")
        if role is None:
            raise missing_parameter(f"{where}.role")
        if role not in _ROLES:
            raise invalid_value(role, _ROLES, f"{where}.role")
        if "content" not in message and role in ("system", "developer", "user", "tool"):
            raise missing_parameter(f"{where}.content")
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _invalid_type(f"{where}.content", (str, list), content)
        for j, part in enumerate(content):
            _check_part(part, f"{where}.content[{j}]")


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise _invalid_type(where, (dict,), part)
    kind = part.get("type")
    if kind not in _PART_TYPES:
        raise invalid_value(kind, _PART_TYPES, f"{where}.type")
    if kind == "text" and not isinstance(part.get("text"), str):
        raise _invalid_type(f"{where}.text", (str,), part.get("text"))
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str):
            raise missing_parameter(f"{where}.image_url.url")


def _check_limits(body: dict[str, Any]) -> None:
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and value < 1:
            raise RequestError(
                400,
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
                f"{value} instead.",
                code="integer_below_min_value",
                param=name,
            )
    if body.get("n") not in (None, 1):
        raise RequestError(400, "The local server supports only n=1.", param="n")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise RequestError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    options = body.get("stream_options") or {}
    if "include_usage" in options and not isinstance(options["include_usage"], bool):
        raise _invalid_type("stream_options.include_usage", (bool,), options["include_usage"])


def max_tokens(body: dict[str, Any]) -> int | None:
    """The completion limit the request asked for (``max_completion_tokens`` wins)."""
    value = body.get("max_completion_tokens")
    return value if value is not None else body.get("max_tokens")


# -- answers -----------------------------------------------------------------------------------


def usage(prompt: int, completion: int) -> dict[str, Any]:
    """An OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def completion_body(
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    usage_obj: dict[str, Any] | None,
    with_usage: bool = True,
    service_tier: str | None = None,
) -> bytes:
    """A whole ``chat.completion`` answer; ``with_usage=False`` leaves the usage key out."""
    answer: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if service_tier is not None:
        answer["service_tier"] = service_tier
    if with_usage:
        answer["usage"] = usage_obj
    return orjson.dumps(answer)


class ChunkRenderer:
    """The SSE events of one stream, in OpenAI's ``chat.completion.chunk`` shape.

    With ``usage_null=True`` (the request asked for usage) every chunk carries
    ``"usage": null`` until the usage chunk, as OpenAI sends them.
    """

    DONE = b"data: [DONE]\n\n"
    COMMENT = b": keep-alive\n\n"

    def __init__(
        self,
        completion_id: str,
        created: int,
        model: str,
        usage_null: bool,
        service_tier: str | None = None,
    ) -> None:
        head: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if service_tier is not None:
            head["service_tier"] = service_tier
        self._head = head
        self._usage_null = usage_null
        # {"id":...,"system_fingerprint":"fp_holynb","choices":[{"index":0,"delta":{"content":
        self._prefix = (
            b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":{"content":'
        )
        tail = b',"usage":null}' if usage_null else b"}"
        self._suffix = b'},"logprobs":null,"finish_reason":null}]' + tail + b"\n\n"

    def content(self, text: str) -> bytes:
        """One content chunk."""
        return self._prefix + orjson.dumps(text) + self._suffix

    def _event(self, choices: list[Any], usage_obj: Any = None, with_usage: bool = False) -> bytes:
        chunk = {**self._head, "choices": choices}
        if with_usage or self._usage_null:
            chunk["usage"] = usage_obj
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def role(self) -> bytes:
        """The first chunk: the assistant role with empty content."""
        delta = {"role": "assistant", "content": ""}
        return self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def finish(self, reason: str, usage_obj: dict[str, Any] | None = None) -> bytes:
        """The chunk carrying ``finish_reason`` (and usage, when given)."""
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        return self._event([choice], usage_obj, with_usage=usage_obj is not None)

    def usage(self, usage_obj: dict[str, Any] | None) -> bytes:
        """The usage chunk, with ``choices: []``."""
        return self._event([], usage_obj, with_usage=True)

    @staticmethod
    def error(message: str, type: str = "server_error", code: str | None = None) -> bytes:
        """An error event, as servers send it after HTTP 200."""
        return b"data: " + error_body(message, type, code) + b"\n\n"
