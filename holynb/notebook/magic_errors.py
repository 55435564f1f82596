"""Errors as a ``%%llm`` / ``%%interpret`` cell shows them: plain words and magic-sized hints.

holynb's errors carry a ``hint`` written for Python callers (``err.partial``,
``Session.models()``). In a cell the user writes options, not Python, so ``for_magic`` returns
a copy of the error whose ``message`` names no library class (``TransferEncodingError: 400,
message: ...`` becomes "the connection closed mid-answer") and whose ``hint`` names what the
cell can do (``-o VAR``, ``%llm models``, ``%llm config model=...``, ``--max-tokens``). The
error the Python API raises is not changed.
"""

from __future__ import annotations

import copy

from holynb.errors import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    JSONExtractionError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamError,
    plain_message,
)

__all__ = ["for_magic", "magic_hint"]

_MODELS = (
    "%llm models lists the models; -m NAME picks one for a cell, %llm config model=NAME for all"
)

# (error class, hint), most specific first: the first isinstance match wins
_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (
        StreamError,
        "What arrived is shown above; run the cell again for a complete answer "
        "(with -o VAR the partial answer is kept in VAR).",
    ),
    (
        APITimeoutError,
        "Run the cell again, or ask for less with --max-tokens N (e.g. --max-tokens 300).",
    ),
    (
        APIConnectionError,
        "%llm config shows the base URL (%llm config base_url=... changes it); check that the "
        "server there is up (holynb serve runs one on this machine).",
    ),
    (NotFoundError, f"Check the model name: {_MODELS}."),
    (BadRequestError, f"Check the options (--max-tokens, -t) and the model name: {_MODELS}."),
    (
        AuthenticationError,
        "Set HOLYSHEEP_API_KEY in the environment Jupyter starts from, and check with "
        "%llm config that the base URL is the provider the key belongs to.",
    ),
    (PermissionDeniedError, f"Your key may not use this model: {_MODELS}."),
    (RateLimitError, "Wait a moment and run the cell again, or pick another model with -m NAME."),
    (ServerError, "Run the cell again later, or pick another model with -m NAME."),
    (
        APIResponseError,
        "The endpoint is not fully OpenAI-compatible for this call: check the base URL "
        "(%llm config) and the model (%llm models).",
    ),
    (
        BudgetExceededError,
        "%llm config budget=AMOUNT raises the limit; --max-tokens N lowers what a call may cost.",
    ),
    (
        JSONExtractionError,
        "The answer is in _llm (and in VAR with -o VAR); ask for JSON only, e.g. end the prompt "
        "with 'Answer with JSON only.'",
    ),
)


def magic_hint(error: BaseException) -> str | None:
    """The hint a magic cell shows for ``error``: what the cell's user can do next."""
    if isinstance(error, BudgetExceededError) and error.hint is None:
        return None  # a budget that cannot price the call: its message says what to do
    for cls, hint in _HINTS:
        if isinstance(error, cls):
            return hint
    own = getattr(error, "hint", None)
    return own if isinstance(own, str) else None


def for_magic(error: BaseException) -> BaseException:
    """A copy of ``error`` with a plain ``message`` and a magic ``hint`` (the original, which
    the Python API raised, keeps its own)."""
    shown = copy.copy(error)
    message = getattr(error, "message", None)
    if not isinstance(message, str):
        message = str(error).split("\nHint:")[0]
    shown.message = plain_message(message)  # type: ignore[attr-defined]
    shown.hint = magic_hint(error)  # type: ignore[attr-defined]
    return shown
