"""Every error holynb raises, in one place.

    HolynbError
    ├── ConfigurationError            bad or missing settings (e.g. no API key)
    │   ├── MissingAPIKeyError
    │   └── StoreError                a holynb file (cache, checkpoint, log) is damaged or refused
    ├── APIError                      something went wrong talking to the API
    │   ├── APIConnectionError        could not connect, or the connection dropped
    │   │   └── APITimeoutError       connect or read timeout
    │   ├── APIStatusError            the API answered with an HTTP error status
    │   │   ├── BadRequestError       400, 422: the request itself is wrong; not retried
    │   │   ├── AuthenticationError   401: key missing, wrong, or for another endpoint
    │   │   ├── PermissionDeniedError 403
    │   │   ├── NotFoundError         404: wrong model name or base URL
    │   │   │   └── BatchNotSupportedError  the endpoint has no /files or /batches
    │   │   ├── ConflictError         409 (retried)
    │   │   ├── RateLimitError        429 (retried, honouring Retry-After)
    │   │   └── ServerError           5xx (retried)
    │   ├── StreamError               the stream broke after HTTP 200 (error event, cut)
    │   └── APIResponseError          the endpoint answered 200 with a body holynb cannot read
    ├── BatchError                    a Batch API job cannot do that yet (unknown id, running)
    ├── BudgetExceededError           the session's budget would be exceeded
    ├── ImageError                    an image cannot be read, converted or sent (too big)
    ├── JSONExtractionError           no JSON could be recovered from a model's reply
    ├── PromptError                   a %%llm prompt refers to something that does not exist
    └── SchemaValidationError         the answer did not match ``schema=``, even after a repair
    KeyboardInterrupt
    └── MapInterrupted                a map was interrupted; ``.frame`` holds the finished rows
    HolynbWarning (a UserWarning)     shown as one short line, without file path or source line
    ├── StreamWarning                 a stream's text had to be repaired (invalid UTF-8)
    └── StoreWarning                  an answer could not be read from or kept in a file
    (also UnknownPriceWarning, BudgetWarning, LogWriteWarning in their modules)

Every APIError carries ``status`` (or None), ``request_id``, ``body`` (a short excerpt) and
``partial`` (the ChatResult received before a stream broke, if any). Messages end with a hint
saying what to do next. The API key never appears in any of them: the client redacts it.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from holynb.results import ChatResult

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchError",
    "BatchNotSupportedError",
    "BudgetExceededError",
    "ConfigurationError",
    "ConflictError",
    "HolynbError",
    "HolynbWarning",
    "ImageError",
    "JSONExtractionError",
    "MapInterrupted",
    "MissingAPIKeyError",
    "NotFoundError",
    "PermissionDeniedError",
    "PromptError",
    "RateLimitError",
    "SchemaValidationError",
    "ServerError",
    "StoreError",
    "StoreWarning",
    "StreamError",
    "StreamWarning",
    "plain_message",
    "status_error_class",
]


class HolynbError(Exception):
    """Base class of every error holynb raises."""


class ConfigurationError(HolynbError, ValueError):
    """A setting is missing or invalid; the message names the setting and how to fix it."""


class MissingAPIKeyError(ConfigurationError):
    """No API key was given and none is in the environment."""


class StoreError(ConfigurationError):
    """A holynb file (the response cache, a checkpoint, the ledger log) cannot be used: it is
    damaged, or it holds something holynb never writes there (a trigger, a view, another
    table), which may have been planted to change answers. The message names the file and
    what to do (delete it, or give another path); the file is left as it is."""


class BatchError(HolynbError):
    """A Batch API job cannot do what was asked: an unknown job id, a job still running, a
    wait that timed out. The message says what to do; the provider's batch is not touched."""


class BudgetExceededError(HolynbError):
    """The session's ``budget_usd`` is spent; the call was not sent (``sent`` is False).
    ``message`` says why and ``hint`` what to do; ``str(err)`` is both."""

    sent = False  # nothing reached the API: no cost, no "so far"

    def __init__(
        self,
        message: str,
        *,
        spent_usd: float = 0.0,
        limit_usd: float = 0.0,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"{message} {hint}" if hint else message)
        self.message = message
        self.hint = hint
        self.spent_usd = spent_usd
        self.limit_usd = limit_usd


class ImageError(HolynbError, ValueError):
    """An image for a prompt cannot be used: unreadable, not an image, over the size limit, or
    Pillow is needed and missing. Nothing was sent. ``name`` is the file (or source) it is about,
    ``size_bytes`` its size when known."""

    def __init__(self, message: str, *, name: str = "", size_bytes: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.size_bytes = size_bytes


class JSONExtractionError(HolynbError, ValueError):
    """No JSON object or array could be recovered from a reply; ``raw`` holds the reply."""

    def __init__(self, message: str, *, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw


class PromptError(HolynbError, ValueError):
    """A ``%%llm`` prompt refers to a variable, cell, output or error that does not exist, or
    has a brace that is not a reference; the message says what to write instead."""


class SchemaValidationError(HolynbError, ValueError):
    """The answer did not match ``schema=``, even after one repair round-trip.

    ``raw`` holds the last reply's text, ``errors`` what did not match, and ``result`` the
    last ChatResult (its usage and cost cover every round trip; the ledger has each call).
    """

    def __init__(
        self, message: str, *, raw: str = "", errors: str = "", result: ChatResult | None = None
    ) -> None:
        super().__init__(message)
        self.message = message.split("\nHint:")[0]
        self.raw = raw
        self.errors = errors
        self.result = result

    @property
    def partial(self) -> ChatResult | None:
        """The last result (as ``APIError.partial``: what arrived and was paid for)."""
        return self.result


class MapInterrupted(KeyboardInterrupt):
    """``Session.map`` was interrupted (the kernel's Interrupt, Ctrl-C): the requests in flight
    were cancelled; ``frame`` holds every row finished before (also kept in the checkpoint)."""

    def __init__(self, message: str, *, frame: Any = None) -> None:
        super().__init__(message)
        self.frame = frame

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of the whole traceback: the user's own frames only
        return user_traceback(self)


def user_traceback(err: BaseException) -> list[str]:
    """``err``'s traceback as IPython formats it, without holynb's own frames (what the user
    asked for when they interrupt is a short message, not holynb's source)."""
    import types

    from IPython.core.getipython import get_ipython

    frames = []
    tb = err.__traceback__
    while tb is not None:
        if not str(tb.tb_frame.f_globals.get("__name__", "")).startswith("holynb."):
            frames.append(tb)
        tb = tb.tb_next
    kept = None
    for old in reversed(frames):
        kept = types.TracebackType(kept, old.tb_frame, old.tb_lasti, old.tb_lineno)
    shell = get_ipython()
    if shell is None:
        import traceback

        return traceback.format_exception(type(err), err, kept)
    lines: list[str] = shell.InteractiveTB.structured_traceback(type(err), err, kept)
    return lines


class APIError(HolynbError):
    """A call to the API failed. ``hint`` says what to do next."""

    hint = "Check the base URL and your network, then try again."

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        body: str | None = None,
        hint: str | None = None,
        partial: ChatResult | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        if hint is not None:
            self.hint = hint
        self.message = message
        self.status = status
        self.request_id = request_id
        self.body = body
        self.partial = partial
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        text = " ".join(parts)
        if self.body:
            text += f"\nResponse: {self.body}"
        if self.hint:
            text += f"\nHint: {self.hint}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[APIError], message: str, state: dict[str, Any]) -> APIError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class APIConnectionError(APIError):
    """Could not reach the API, or the connection dropped before an answer."""

    hint = "Check that the base URL is right and the server is up (holynb serve runs one locally)."


class APITimeoutError(APIConnectionError):
    """The API did not answer (or stopped sending) within the timeout."""

    hint = "Raise timeout= (e.g. Session(timeout=120)) or ask for fewer tokens."


class StreamError(APIError):
    """A stream broke after it had started: an error event or a cut connection.

    ``partial`` holds what had arrived; the request is not re-sent, since part of the answer
    was already shown.
    """

    hint = "The partial answer is in err.partial; run the call again for a complete answer."


class APIResponseError(APIError):
    """The endpoint answered 200 with a body holynb cannot read (e.g. ``"choices": ["x"]``,
    ``data: null``, a usage count that is not a number). Not retried: the call may have been
    paid for. ``partial`` holds any text that could be read; ``body`` an excerpt."""

    hint = (
        "The endpoint is not fully OpenAI-compatible for this call: check the base URL and "
        "model, or report the body above to the provider."
    )


class HolynbWarning(UserWarning):
    """Base class of holynb's warnings; shown as one short line (``show_short``), without the
    file path and source line Python adds to other warnings."""


class StoreWarning(HolynbWarning):
    """An answer stored in a cache or checkpoint file could not be read (not JSON, a field of
    the wrong type, one missing): it is treated as not stored and asked again; or an answer
    just received could not be kept there (the file is damaged or locked): it is returned all
    the same. Shown once per file."""


class StreamWarning(HolynbWarning):
    """A stream carried something holynb had to repair to keep the answer (bytes that are not
    valid UTF-8, replaced by U+FFFD); the result's ``warning`` and the ledger's ``error`` say so.
    """


class APIStatusError(APIError):
    """The API answered with an HTTP error status."""


class BadRequestError(APIStatusError):
    """400/422: the API rejected the request itself; sending it again will not help."""

    hint = "Check the model name and parameters (max_tokens, temperature, messages)."


class AuthenticationError(APIStatusError):
    """401: the API key is missing, wrong, or belongs to another endpoint."""

    hint = (
        "Check HOLYSHEEP_API_KEY (or HOLYNB_API_KEY) and that HOLYNB_BASE_URL points to the "
        "provider the key belongs to."
    )


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but may not use this model or endpoint."""

    hint = "Your key may not have access to this model; try another model or check your plan."


class NotFoundError(APIStatusError):
    """404: the model or the endpoint does not exist at this base URL."""

    hint = "Check the model name (Session.models() lists them) and that the base URL ends in /v1."


class BatchNotSupportedError(NotFoundError):
    """The endpoint has no Batch API (``/files`` or ``/batches`` answered 404)."""

    hint = "Use s.map(prompts, checkpoint='run.sqlite'): concurrent, and it resumes after a crash."


class ConflictError(APIStatusError):
    """409: the API reported a conflict; it was retried."""


class RateLimitError(APIStatusError):
    """429: too many requests or tokens; retried after Retry-After while retries last."""

    hint = "Lower concurrency=, set rpm=/tpm= on the Session, or raise max_retries=."


class ServerError(APIStatusError):
    """5xx: the API failed on its side; retried while retries last."""

    hint = "The provider had a problem; try again later or another model."


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def short_warning(message: Warning | str, category: type[Warning]) -> str:
    """One line for a holynb warning: ``"BudgetWarning: $0.0073 spent, 93% of ..."``."""
    text = " ".join(str(message).split()).removeprefix("holynb: ")
    return f"{category.__name__}: {text}\n"


def show_short() -> None:
    """Make ``warnings`` format holynb's warnings (``HolynbWarning``) as one short line; every
    other warning keeps the format it had. Done once, when holynb is imported."""
    previous = warnings.formatwarning
    if getattr(previous, "_holynb", False):
        return

    def formatwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        if isinstance(category, type) and issubclass(category, HolynbWarning):
            return short_warning(message, category)
        return previous(message, category, filename, lineno, line)

    formatwarning._holynb = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


def status_error_class(status: int) -> type[APIStatusError]:
    """The error class for an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return APIStatusError


# -- plain words ----------------------------------------------------------------------------

# what a transport library's exception means, in the user's words
_PLAIN: tuple[tuple[str, str], ...] = (
    (r"TransferEncodingError|ClientPayloadError|RemoteProtocolError|IncompleteRead"
     r"|ContentLengthError|ReadError", "the connection closed mid-answer"),
    (r"ServerDisconnectedError|ConnectionResetError|ConnectionAbortedError|BrokenPipeError",
     "the server closed the connection"),
    (r"ConnectionRefusedError|ClientConnectorError|ConnectError|ClientOSError",
     "nothing answered there (connection refused)"),
    (r"TimeoutError|ReadTimeout|ConnectTimeout|PoolTimeout|WriteTimeout|ServerTimeoutError",
     "it took too long"),
    (r"gaierror|ClientConnectorDNSError|NameResolutionError", "the host name was not found"),
    (r"SSLError|ClientSSLError|ClientConnectorCertificateError|SSLCertVerificationError",
     "the secure connection (TLS) failed"),
)  # fmt: skip
# "Name: details" where Name is an exception class (ends in Error, Exception, Timeout, ...)
_CLASS_DETAIL = re.compile(
    r"\b(?:[a-z]+\.)*(?P<name>[A-Z]?[A-Za-z]*(?:Error|Exception|Timeout|Read|gaierror))"
    r"(?::[^\n]*)?\.?(?:\n\s+[^\n]*)*",
)
_BROKE = re.compile(r"^The stream broke after (\d+) chunks?: .*$", re.DOTALL)


def _plain_reason(name: str) -> str:
    for pattern, words in _PLAIN:
        if re.fullmatch(pattern, name):
            return words
    return "the connection failed"


def plain_message(message: str) -> str:
    """``message`` without transport-library jargon.

    >>> plain_message("The stream broke after 5 chunks: Could not talk to http://h/v1: "
    ...               "TransferEncodingError: 400, message: Not enough data")
    'The connection closed mid-answer, after 5 chunks.'
    """
    broke = _BROKE.match(message)
    if broke:
        reason = "the connection closed mid-answer"
        found = _CLASS_DETAIL.search(message)
        if found and _plain_reason(found["name"]) not in ("the connection failed", reason):
            reason = _plain_reason(found["name"])
        n = int(broke[1])
        return f"{reason[0].upper()}{reason[1:]}, after {n} chunk{'' if n == 1 else 's'}."
    if message.startswith("No answer from "):
        return message.split(" (", 1)[0].rstrip(".") + "."
    if message.startswith("Could not talk to "):
        found = _CLASS_DETAIL.search(message)
        if found:
            head = message[: found.start()].rstrip(" (:")
            return f"{head}: {_plain_reason(found['name'])}."
    return message
