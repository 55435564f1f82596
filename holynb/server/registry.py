"""The models a local server knows (``ModelRegistry``), what one is (``Model``), and running one.

Models are plain functions ``respond(messages, params) -> str`` (or async ones, awaited on the
server's loop) kept in a ``ModelRegistry``; one may raise ``wire.RequestError`` to refuse a
request with that status, as an API does:

>>> models = default_models()   # holynb.server.catalog
>>> models.register("local/upper", lambda messages, params: messages[-1]["content"].upper())

This module knows no model: the models live in their own modules (``models``, ``vision``,
``json_model``, ``python_model``) and ``catalog`` gathers them, so imports go one way.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from holynb.server.tokens import tokenize
from holynb.server.wire import RequestError, max_tokens

__all__ = ["Model", "ModelRegistry", "Respond", "generate"]

Respond = Callable[[list[dict[str, Any]], dict[str, Any]], str | Awaitable[str]]


@dataclass(frozen=True)
class Model:
    """One model the server answers for.

    ``latency_ms`` is added to the server's own latency before the first byte;
    ``tokens_per_second`` paces its streams (None: the server's setting). ``runs_code`` marks a
    model that executes what the request sends (``local/python``): the server refuses it unless
    started with ``python=True`` (``holynb serve --enable-python``).
    """

    name: str
    respond: Respond
    latency_ms: float = 0.0
    tokens_per_second: float | None = None
    owned_by: str = "holynb"
    runs_code: bool = False


class ModelRegistry:
    """The models a server knows, by name; safe to extend while the server runs.

    >>> registry = ModelRegistry()
    >>> registry.register("local/json", lambda messages, params: '{"ok": true}')
    Model(name='local/json', ...)
    """

    def __init__(self, models: list[Model] | None = None) -> None:
        self._models: dict[str, Model] = {m.name: m for m in models or ()}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        respond: Respond,
        *,
        latency_ms: float = 0.0,
        tokens_per_second: float | None = None,
        runs_code: bool | None = None,
    ) -> Model:
        """Add (or replace) the model ``name``, answering with ``respond(messages, params)``.

        ``runs_code`` (default: the ``runs_code`` attribute of ``respond``, else False) marks a
        model that executes code from the request; the server serves it only when enabled."""
        if not name or not isinstance(name, str):
            raise ValueError("A model needs a non-empty string name, e.g. 'local/mine'.")
        if not callable(respond):
            raise TypeError("respond must be a function (messages, params) -> str.")
        if runs_code is None:
            runs_code = bool(getattr(respond, "runs_code", False))
        model = Model(name, respond, latency_ms, tokens_per_second, runs_code=runs_code)
        with self._lock:
            self._models = {**self._models, name: model}  # copy-on-write: readers never lock
        return model

    def get(self, name: str) -> Model | None:
        """The model called ``name``, or None."""
        return self._models.get(name)

    def names(self) -> list[str]:
        """All model names, in registration order."""
        return list(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[Model]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)


async def generate(
    model: Model, messages: list[dict[str, Any]], body: dict[str, Any]
) -> tuple[list[str], str]:
    """Run ``model`` on a request: its answer's tokens, cut at the request's max_tokens, and the
    finish reason (``"stop"`` or ``"length"``). A model that refuses raises RequestError (as an
    API does, e.g. local/json-noformat); any other failure is a 500."""
    try:
        text = model.respond(messages, body)
        if inspect.isawaitable(text):  # async models (e.g. local/python) keep the loop free
            text = await text
        if not isinstance(text, str):
            raise TypeError(f"it returned {type(text).__name__}, not str")
    except RequestError:
        raise
    except Exception as exc:
        raise RequestError(
            500, f"The model {model.name!r} failed: {exc}", type="server_error"
        ) from None
    pieces = tokenize(text)
    limit = max_tokens(body)
    if limit is not None and len(pieces) > limit:
        return pieces[:limit], "length"
    return pieces, "stop"
