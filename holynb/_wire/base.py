"""What every wire format shares: the Wire protocol, what its readers return and raise, and
how a provider's error type maps to an HTTP status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from holynb.results import Usage

# What a wire's readers raise for an answer not shaped as its format's answers are (the chat
# client makes it an APIResponseError; a batch output line becomes that row's error).
UNREADABLE: tuple[type[Exception], ...] = (
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    TypeError,
    ValueError,
)

# (error, text, finish_reason, usage, model) of one stream event; see Wire.read_chunk
Chunk = tuple[Any, "str | None", "str | None", "Usage | None", "str | None"]
# (text, model, finish_reason, usage, id) of a whole answer; see Wire.read_completion
Completion = tuple[str, str, "str | None", "Usage | None", "str | None"]


# What an error object's ``type`` means as an HTTP status. Both formats name their errors so
# (Anthropic's documented types; OpenAI's invalid_request_error, server_error, ...), and an
# error sent after HTTP 200 (a stream's error event) gets the retry rule and error class of
# the status it stands for.
ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "insufficient_quota": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_status(error: Any) -> int | None:
    """The HTTP status an error object sent inside a 200 answer stands for: its numeric
    ``code`` or ``status`` (relays send ``"code": "500"``), else what its ``type`` means
    (``ERROR_TYPE_STATUS``); None when it says neither.

    >>> error_status({"type": "overloaded_error", "message": "Overloaded"})
    529
    """
    if not isinstance(error, dict):
        return None
    for name in ("code", "status"):
        value = error.get(name)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    kind = error.get("type")
    return ERROR_TYPE_STATUS.get(kind) if isinstance(kind, str) else None


class Wire(Protocol):
    """One API's wire format (see the module docstring)."""

    name: str
    stream_has_end_event: bool  # a stream is complete only after its end event, not a reason

    def url(self, base_url: str) -> str:
        """Where chat requests go for an endpoint whose base URL is ``base_url``."""
        ...

    def root(self, base_url: str) -> str:
        """The base URL other endpoints (``models``) hang under."""
        ...

    def auth_headers(self, key: str, bearer: bool | None) -> dict[str, str]:
        """The headers carrying ``key``; ``bearer`` True adds ``Authorization: Bearer``."""
        ...

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request body to send, from holynb's OpenAI-shaped ``body``."""
        ...

    def error_in(self, payload: Any) -> Any:
        """The error object of a 200 answer that reports one, else None (also for a body that
        is not an object: ``read_completion`` then refuses it)."""
        ...

    def read_completion(self, payload: Any, body: dict[str, Any]) -> Completion:
        """``(text, model, finish_reason, usage, id)`` of a whole answer; a builtin error
        (TypeError, AttributeError, ...) when it is not shaped as this format's answers are."""
        ...

    def salvage_text(self, payload: Any) -> str:
        """The text of an answer ``read_completion`` could not read, when it can be found."""
        ...

    def read_chunk(self, event: Any, usage: Usage | None) -> Chunk:
        """``(error, text, finish_reason, usage, model)`` of one stream event; ``usage`` is the
        usage read so far. Raises a builtin error (TypeError, ...) on a misshapen event."""
        ...

    def is_end(self, event: Any) -> bool:
        """Whether ``event`` ends the stream (Anthropic's ``message_stop``)."""
        ...
