"""The one result-frame builder: the rows and columns of map, compare and batch results.

Every bulk result has the columns ``RESULT_COLUMNS`` in this order, with the same dtypes
(``ok`` and ``cache_hit`` bool, token counts and attempts int64, cost and latency float64,
text, error, finish reason and model ``str``).
A row is built by ``answer_row`` (an answer, maybe partial or not matching its schema) or
``failure_row`` (no answer); ``result_frame`` makes the frame.

>>> result_frame([answer_row("Say hi", result)]).dtypes["ok"]
dtype('bool')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from holynb.results import ChatResult

__all__ = [
    "DTYPES",
    "RESULT_COLUMNS",
    "answer_row",
    "failure_row",
    "result_frame",
    "shared_row",
]

RESULT_COLUMNS: tuple[str, ...] = (
    "prompt",
    "text",
    "ok",
    "error",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "attempts",
    "cache_hit",
    "duplicate_of",
)
"""The columns of every bulk result frame (map, compare, batch results), in this order.
``duplicate_of``: the label of the row whose answer this row shares (the same request asked
twice in one run is sent once), None when the row has its own."""

DTYPES: dict[str, str] = {
    "ok": "bool",
    "cache_hit": "bool",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "attempts": "int64",
    "cost_usd": "float64",
    "latency_ms": "float64",
}
"""The dtype of each typed column."""

TEXT_COLUMNS: frozenset[str] = frozenset({"text", "error", "finish_reason", "model"})
"""Columns of text (missing values NaN), typed ``str`` whatever the rows hold, so that frames of
different runs (all answered, all failed) have the same dtypes; empty frames keep ``object``."""

_OWN = object()  # "the result's own value"


def answer_row(
    prompt: Any,
    result: ChatResult,
    *,
    error: str | None = None,
    cost_usd: Any = _OWN,
    latency_ms: Any = _OWN,
    attempts: Any = _OWN,
) -> tuple[Any, ...]:
    """The row of an answer in ``RESULT_COLUMNS`` order: ``ok`` unless it was interrupted or
    ``error`` says what is wrong with it (a cut stream, a schema mismatch). ``cost_usd``,
    ``latency_ms`` and ``attempts`` replace the result's own where given (a batch's)."""
    u = result.usage
    return (
        prompt, result.text, error is None and not result.interrupted, error,
        result.finish_reason, result.model, u.prompt_tokens, u.completion_tokens,
        result.cost_usd if cost_usd is _OWN else cost_usd,
        result.latency_ms if latency_ms is _OWN else latency_ms,
        result.attempts if attempts is _OWN else attempts,
        result.cache_hit, None,
    )  # fmt: skip


def failure_row(
    prompt: Any,
    model: str,
    error: str,
    *,
    attempts: int = 0,
    latency_ms: float | None = 0.0,
    text: str | None = None,
) -> tuple[Any, ...]:
    """The row of a request without an answer (failed, refused, never sent): no tokens, no
    cost; ``text`` what arrived before it broke, if anything."""
    return (prompt, text, False, error, None, model, 0, 0, 0.0, latency_ms, attempts, False, None)


def shared_row(
    row: Sequence[Any], leader: Any, columns: Sequence[str] = RESULT_COLUMNS
) -> tuple[Any, ...]:
    """``row`` (the row of the request that was sent) for another row that asked the same:
    its answer, nothing sent for it (``attempts`` 0, ``cost_usd`` 0.0 or unknown as the
    first's), and ``duplicate_of`` the first row's label ``leader``."""
    out = list(row)
    cost = columns.index("cost_usd")
    out[cost] = None if out[cost] is None else 0.0
    out[columns.index("attempts")] = 0
    out[columns.index("duplicate_of")] = leader
    return tuple(out)


def result_frame(
    rows: Sequence[Sequence[Any]],
    index: pd.Index | None = None,
    columns: Sequence[str] = RESULT_COLUMNS,
) -> pd.DataFrame:
    """A result frame from rows in ``columns`` order (``RESULT_COLUMNS`` and any extra ones),
    with ``DTYPES``."""
    import pandas as pd

    data: dict[str, Any] = {c: [r[k] for r in rows] for k, c in enumerate(columns)}
    if "duplicate_of" in data:  # labels, kept as given (pandas would make [None, 0] floats)
        data["duplicate_of"] = _objects(data["duplicate_of"])
    frame = pd.DataFrame(data, index=index, columns=list(columns))
    for name in frame.columns:
        dtype = DTYPES.get(name, None if rows else object)  # empty text columns stay object
        if rows and name in TEXT_COLUMNS:
            dtype = "str"
        if dtype is not None:
            frame[name] = frame[name].astype(dtype)
    return frame


def _objects(values: Sequence[Any]) -> Any:
    import numpy as np

    out = np.empty(len(values), dtype=object)
    for k, v in enumerate(values):  # one by one: a tuple label stays one value
        out[k] = v
    return out
