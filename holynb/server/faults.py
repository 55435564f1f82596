"""Fault injection: the failures real APIs produce, on demand, for tests and demos.

A ``Fault`` is built by one of the functions below and queued on a running server; each chat
request takes the next queued entry (in order), and a request's ``x-holynb-fault`` header adds
faults for that request only:

>>> from holynb.server import LocalServer, faults
>>> server = LocalServer().start()
>>> server.faults.push(faults.status(429, retry_after=1))          # the next request gets a 429
>>> server.faults.push([faults.delay(0.5), faults.status(503)])    # both, on the one after
>>> server.faults.push("cut:5", times=3)                           # the compact string form

The compact form is ``name[:arg,...][;name...]``: arguments are positional (in the order of
the function's parameters) or ``key=value``, and ``;`` combines faults for one request.
Examples: ``"429:retry_after=1"``, ``"503"``, ``"drop"``, ``"cut:5"``, ``"error:2,message=boom"``,
``"stall:3,after_chunks=2"``, ``"delay:0.5;500"``. Values cannot contain ``,`` or ``;``;
``POST /_holynb/faults`` also takes objects such as ``{"kind": "status", "code": 429,
"headers": {...}, "times": 2}``.

Faults that only make sense for streams act on non-streamed requests as follows: ``cut_stream``
sends the headers and half the body then closes the connection, ``error_event`` answers 200 with
an ``{"error": ...}`` body, ``stall`` adds its pause before the answer, ``no_usage`` leaves usage
out, ``raw_body`` sends its body as it is; the others do nothing there. ``trickle`` acts on
non-streamed answers only.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

__all__ = [
    "Fault",
    "FaultQueue",
    "coalesce",
    "cut_stream",
    "delay",
    "drop",
    "error_event",
    "invalid_utf8",
    "keepalive_comments",
    "no_done",
    "no_usage",
    "parse",
    "raw_body",
    "reject_stream_options",
    "service_tier",
    "stall",
    "status",
    "trickle",
    "usage_in_finish_chunk",
]

_STREAM_ERROR = "The server had an error while processing your request. Please retry."

# kind -> its parameters: (name, type, default); the order is the positional order.
_SCHEMAS: dict[str, tuple[tuple[str, type, Any], ...]] = {
    "status": (
        ("code", int, 500),
        ("retry_after", float, None),
        ("retry_after_ms", int, None),
        ("retry_after_date", bool, False),
        ("should_retry", bool, None),
        ("body", object, None),
        ("message", str, None),
        ("headers", dict, None),
    ),
    "drop": (),
    "cut_stream": (("after_chunks", int, 3),),
    "error_event": (("after_chunks", int, 3), ("message", str, _STREAM_ERROR)),
    "no_done": (),
    "usage_in_finish_chunk": (),
    "no_usage": (("null", bool, False),),
    "reject_stream_options": (("status", int, 400),),
    "keepalive_comments": (),
    "stall": (("seconds", float, 1.0), ("after_chunks", int, 1)),
    "delay": (("seconds", float, 1.0),),
    "trickle": (("seconds", float, 0.5),),
    "invalid_utf8": (("after_chunks", int, 1),),
    "coalesce": (("tokens", int, 100),),
    "raw_body": (("body", str, ""),),
    "service_tier": (("tier", str, "default"),),
}
_ALIASES = {
    "cut": "cut_stream",
    "error": "error_event",
    "usage_in_finish": "usage_in_finish_chunk",
    "keepalive": "keepalive_comments",
    "no_stream_options": "reject_stream_options",
    "bad_utf8": "invalid_utf8",
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True, eq=True)
class Fault:
    """One failure to inject; ``fault["name"]`` reads a parameter (defaults filled in)."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    @property
    def spec(self) -> str:
        """The compact string form (parameters left at their defaults are omitted)."""
        defaults = {name: default for name, _, default in _SCHEMAS[self.kind]}
        args = [
            f"{k}={_render(v)}"
            for k, v in self.params.items()
            if v != defaults[k] and not (self.kind == "status" and k == "code")
        ]
        name = str(self.params["code"]) if self.kind == "status" else self.kind
        return name + (":" + ",".join(args) if args else "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form that ``POST /_holynb/faults`` accepts back."""
        return {"kind": self.kind, **{k: v for k, v in self.params.items() if v is not None}}

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"Fault({self.spec!r})"


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def _coerce(kind: str, name: str, typ: type, value: Any) -> Any:
    if value is None or typ is object:
        return value
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError
        if typ is dict:
            if not isinstance(value, Mapping):
                raise ValueError
            return {str(k): str(v) for k, v in value.items()}
        if isinstance(value, bool):
            raise ValueError
        if typ is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if typ is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Fault {kind!r}: {name}={value!r} is not a valid {typ.__name__}."
        ) from None


def make(kind: str, **given: Any) -> Fault:
    """A fault of ``kind`` (a name or an alias) with the given parameters, checked."""
    if kind.isdigit():
        kind, given = "status", {"code": kind, **given}
    kind = _ALIASES.get(kind, kind)
    schema = _SCHEMAS.get(kind)
    if schema is None:
        known = ", ".join(sorted(_SCHEMAS))
        raise ValueError(f"Unknown fault {kind!r}; known faults: {known} (or an HTTP status).")
    names = {name for name, _, _ in schema}
    unknown = set(given) - names
    if unknown:
        allowed = ", ".join(sorted(names)) or "none"
        raise ValueError(f"Fault {kind!r} has no parameter {sorted(unknown)}; it takes: {allowed}.")
    params = {
        name: _coerce(kind, name, typ, given.get(name, default)) for name, typ, default in schema
    }
    _check(kind, params)
    return Fault(kind, MappingProxyType(params))


def _check(kind: str, params: dict[str, Any]) -> None:
    if kind == "status":
        if not 400 <= params["code"] <= 599:
            raise ValueError(f"status() takes an error status (400-599), not {params['code']}.")
        if params["retry_after_date"] and params["retry_after"] is None:
            raise ValueError("retry_after_date=True needs retry_after (seconds from now).")
    if kind == "coalesce" and params["tokens"] < 1:
        raise ValueError("coalesce() takes at least 1 token a chunk.")
    if kind == "reject_stream_options" and not 400 <= params["status"] <= 599:
        raise ValueError("reject_stream_options() takes an error status such as 400 or 422.")
    for name in ("after_chunks", "seconds", "retry_after", "retry_after_ms"):
        if (params.get(name) or 0) < 0:
            raise ValueError(f"Fault {kind!r}: {name} cannot be negative.")


# -- the faults --------------------------------------------------------------------------------


def status(
    code: int,
    retry_after: float | None = None,
    retry_after_ms: int | None = None,
    retry_after_date: bool = False,
    should_retry: bool | None = None,
    body: str | bytes | dict[str, Any] | None = None,
    *,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Fault:
    """Answer with HTTP ``code`` and an OpenAI-style error body.

    ``retry_after`` sends ``Retry-After`` in seconds (or, with ``retry_after_date=True``, as an
    HTTP date that many seconds from now); ``retry_after_ms`` sends ``retry-after-ms``;
    ``should_retry`` sends ``x-should-retry: true|false``; ``body`` replaces the JSON body
    (a str starting with ``<`` is sent as HTML); ``headers`` adds any other headers.

    >>> status(429, retry_after=1)
    """
    return make(
        "status",
        code=code,
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
        retry_after_date=retry_after_date,
        should_retry=should_retry,
        body=body,
        message=message,
        headers=dict(headers) if headers is not None else None,
    )


def drop() -> Fault:
    """Close the TCP connection without sending any response."""
    return make("drop")


def cut_stream(after_chunks: int = 3) -> Fault:
    """Send ``after_chunks`` content chunks, then close the connection (no finish, no [DONE])."""
    return make("cut_stream", after_chunks=after_chunks)


def error_event(after_chunks: int = 3, message: str = _STREAM_ERROR) -> Fault:
    """Send ``after_chunks`` content chunks, then ``data: {"error": {...}}`` and end the stream."""
    return make("error_event", after_chunks=after_chunks, message=message)


def no_done() -> Fault:
    """End the stream cleanly but without ``data: [DONE]``."""
    return make("no_done")


def usage_in_finish_chunk() -> Fault:
    """Put usage on the chunk with ``finish_reason`` (always) instead of a separate chunk."""
    return make("usage_in_finish_chunk")


def no_usage(null: bool = False) -> Fault:
    """Never send usage, even when asked; with ``null=True`` send ``"usage": null`` instead."""
    return make("no_usage", null=null)


def reject_stream_options(status: int = 400) -> Fault:
    """Reject a request carrying ``stream_options`` with ``status`` (Groq 400, Mistral 422)."""
    return make("reject_stream_options", status=status)


def keepalive_comments() -> Fault:
    """Put a ``: keep-alive`` SSE comment before every event of the stream."""
    return make("keepalive_comments")


def stall(seconds: float = 1.0, after_chunks: int = 1) -> Fault:
    """Send ``after_chunks`` content chunks, then nothing for ``seconds``, then the rest."""
    return make("stall", seconds=seconds, after_chunks=after_chunks)


def delay(seconds: float = 1.0) -> Fault:
    """Wait ``seconds`` before answering at all (before any other fault or the answer)."""
    return make("delay", seconds=seconds)


def trickle(seconds: float = 0.5) -> Fault:
    """Send a non-streamed answer one byte every ``seconds``: never silent long enough for a
    read timeout, so only a total timeout stops it."""
    return make("trickle", seconds=seconds)


def invalid_utf8(after_chunks: int = 1) -> Fault:
    """After ``after_chunks`` content chunks, send one more whose text ``"café "`` is encoded
    as Latin-1 (a lone ``0xE9`` byte), which is not valid UTF-8, as a broken relay does."""
    return make("invalid_utf8", after_chunks=after_chunks)


def coalesce(tokens: int = 100) -> Fault:
    """Stream ``tokens`` tokens in each content chunk instead of one (``cut``, ``error`` and
    ``stall`` then count these bigger chunks)."""
    return make("coalesce", tokens=tokens)


def raw_body(body: str) -> Fault:
    """Answer 200 with ``body`` sent as it is: JSON for a plain request, an event stream for a
    streamed one (e.g. ``'{"choices": ["x"]}'`` or ``"data: null\\n\\n"``)."""
    return make("raw_body", body=body)


def service_tier(tier: str = "default") -> Fault:
    """Answer as if served on ``tier`` whatever the request asked (e.g. a flex request that
    the provider served on the default tier)."""
    return make("service_tier", tier=tier)


# -- parsing -----------------------------------------------------------------------------------


def parse(spec: str) -> tuple[Fault, ...]:
    """The faults of a compact string such as ``"429:retry_after=1"`` or ``"delay:0.5;drop"``."""
    out = []
    for part in spec.split(";"):
        part = part.strip()
        if not part:
            continue
        name, _, argstr = part.partition(":")
        name = name.strip().lower()
        args = [a.strip() for a in argstr.split(",") if a.strip()]
        if name.isdigit():
            name, args = "status", [name, *args]
        kind = _ALIASES.get(name, name)
        if kind not in _SCHEMAS:
            make(kind)  # raises, naming the known faults
        order = [param for param, _, _ in _SCHEMAS[kind]]
        given: dict[str, Any] = {}
        for i, arg in enumerate(args):
            key, eq, value = arg.partition("=")
            if eq:
                given[key.strip()] = value.strip()
            elif i < len(order):
                given[order[i]] = arg
            else:
                raise ValueError(f"Fault {kind!r} takes at most {len(order)} arguments: {spec!r}")
        out.append(make(kind, **given))
    if not out:
        raise ValueError("An empty fault spec: try '429:retry_after=1', 'drop' or 'cut:5'.")
    return tuple(out)


def from_json(item: Any) -> tuple[tuple[Fault, ...], int | None]:
    """One entry of ``POST /_holynb/faults``: its faults and how many requests it applies to.

    Accepted: ``"spec"``, ``{"fault": "spec", "times": n}`` or ``{"kind": ..., params...,
    "times": n}``; ``"times": null`` means every request until the queue is cleared.
    """
    if isinstance(item, str):
        return parse(item), 1
    if not isinstance(item, dict):
        raise ValueError(f"A fault is a string or an object, not {type(item).__name__}.")
    item = dict(item)
    times = item.pop("times", 1)
    if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
        raise ValueError("'times' must be a positive integer or null.")
    if "fault" in item:
        spec = item.pop("fault")
        if item or not isinstance(spec, str):
            raise ValueError('Use {"fault": "<spec>", "times": n} with nothing else.')
        return parse(spec), times
    if "kind" not in item:
        raise ValueError('A fault object needs "kind" (or "fault" with a compact spec).')
    kind = str(item.pop("kind"))
    return (make(kind, **item),), times


# -- the queue ---------------------------------------------------------------------------------

FaultLike = Fault | str


class FaultQueue:
    """Faults waiting for the next chat requests, in order; safe to use from any thread.

    ``push(fault, times=n)`` affects the next ``n`` requests (``times=None``: every request
    until ``clear()``); a list pushed at once applies all its faults to the same request.
    """

    def __init__(self) -> None:
        self._entries: deque[list[Any]] = deque()  # [faults, remaining or None]
        self._lock = threading.Lock()

    def push(self, fault: FaultLike | Iterable[FaultLike], times: int | None = 1) -> None:
        """Queue ``fault`` (a Fault, a compact string, or a list of them) for ``times`` requests."""
        if times is not None and (isinstance(times, bool) or times < 1):
            raise ValueError("times must be at least 1 (or None for every request).")
        faults = _as_faults(fault)
        with self._lock:
            self._entries.append([faults, times])

    def take(self) -> tuple[Fault, ...]:
        """The faults for the request arriving now (empty when nothing is queued)."""
        if not self._entries:
            return ()
        with self._lock:
            if not self._entries:
                return ()
            entry = self._entries[0]
            if entry[1] is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    self._entries.popleft()
            return entry[0]

    def clear(self) -> None:
        """Forget every queued fault."""
        with self._lock:
            self._entries.clear()

    def pending(self) -> list[dict[str, Any]]:
        """What is still queued: ``[{"faults": [...specs], "times": n}, ...]``."""
        with self._lock:
            return [{"faults": [f.spec for f in fs], "times": n} for fs, n in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"FaultQueue({self.pending()!r})"


def _as_faults(fault: FaultLike | Iterable[FaultLike]) -> tuple[Fault, ...]:
    if isinstance(fault, Fault):
        return (fault,)
    if isinstance(fault, str):
        return parse(fault)
    out: list[Fault] = []
    for item in fault:
        out.extend(_as_faults(item))
    if not out:
        raise ValueError("Nothing to push: give a Fault, a spec string, or a list of them.")
    return tuple(out)
