"""Batch API output and error lines joined back onto the input rows, shaped like ``map``'s frame.

Output lines come in any order: ``{"custom_id", "response": {"status_code", "request_id",
"body"}, "error"}``. Each input row gets the outcome of the last part that carried it (a
resubmitted row's new answer replaces its old failure); a row no file mentions is reported as
missing, with the reason its part gives (expired, cancelled, failed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson

from holynb._wire import UNREADABLE
from holynb._wire.openai import OpenAIWire
from holynb.errors import status_error_class
from holynb.frames import RESULT_COLUMNS, answer_row, failure_row, result_frame
from holynb.results import ChatResult, Usage

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from holynb.batch.manifest import Manifest, Part
    from holynb.structured import AnswerSchema

ReadLine: TypeAlias = (
    "Callable[[dict[str, Any], str], Outcome]"  # one line's Outcome (a format's reader)
)
# Session.map's columns (holynb.bulk), and the line each row came from.
BATCH_COLUMNS: tuple[str, ...] = (*RESULT_COLUMNS, "custom_id")
_NOT_RUN = {"batch_expired": "BatchExpired", "batch_cancelled": "BatchCancelled"}
_WIRE = OpenAIWire()  # an output line's body is a chat completion, read as chat reads it
_CUSTOM_ID_IN_LINE = re.compile(rb'"custom_id"\s*:\s*"(row-[0-9]{1,10})"')


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one request: an answer, or an error as ``"Class: message"``."""

    custom_id: str
    result: ChatResult | None = None
    error: str | None = None
    charged: bool = False  # the provider ran it (a ledger row is due)
    unreadable: bool = False  # its line could not be read (what it cost is unknown)


def read_outcomes(
    data: bytes, fallback_model: str, name: str, read: ReadLine | None = None
) -> tuple[list[Outcome], int]:
    """The Outcome of every line of an output or error file (``name`` says which, in
    errors), and how many lines could not be tied to any request. A line that cannot be read
    fails only its own request (when its ``custom_id`` can still be found), with an error
    saying which line was unreadable; it never stops the others."""
    found: list[Outcome] = []
    lost = 0
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"line {number} of {name}"
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            cid = _custom_id_in(raw)
            if cid is None:
                lost += 1
            else:
                found.append(_unreadable(cid, where, f"broken JSON ({exc})"))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            lost += 1
            continue
        found.append(outcome(item, fallback_model, where, read))
    return found, lost


def outcome(
    line: dict[str, Any], fallback_model: str, where: str = "a line", read: ReadLine | None = None
) -> Outcome:
    """The Outcome of one output or error line (read by ``read``: OpenAI's lines by default,
    ``holynb.batch.anthropic.outcome`` for Message Batches' results); a line not shaped as
    they are is that request's error (``APIResponseError: ... unreadable ...``)."""
    try:
        return (read or _outcome)(line, fallback_model)
    except UNREADABLE as exc:
        return _unreadable(line["custom_id"], where, f"{type(exc).__name__}: {exc}")


def _unreadable(cid: str, where: str, why: str) -> Outcome:
    return Outcome(
        cid,
        error=f"APIResponseError: {where} is unreadable ({why[:200]}); the provider may have "
        "charged for it. job.resubmit_failed() asks again.",
        charged=True,
        unreadable=True,
    )


def _custom_id_in(raw: bytes) -> str | None:
    found = _CUSTOM_ID_IN_LINE.search(raw)
    return found.group(1).decode() if found else None


def _outcome(line: dict[str, Any], fallback_model: str) -> Outcome:
    cid = line["custom_id"]
    response = line.get("response") or None
    if response is not None and not isinstance(response, dict):
        raise TypeError(f"response is {type(response).__name__}, not an object")
    if response is not None and response.get("status_code") == 200:
        body = response.get("body")
        if not isinstance(body, dict):
            raise TypeError(f"response.body is {type(body).__name__}, not an object")
        text, model, reason, usage, answer_id = _WIRE.read_completion(body, {})
        request_id = response.get("request_id")
        result = ChatResult(
            text=text,
            model=model or fallback_model,
            finish_reason=reason,
            usage=usage or Usage(estimated=True),
            latency_ms=0.0,
            request_id=request_id if isinstance(request_id, str) else answer_id,
        )
        return Outcome(cid, result=result, charged=True)
    if response is not None:
        status = response.get("status_code")
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError(f"response.status_code is {type(status).__name__}, not a number")
        body = response.get("body") or {}
        error = body.get("error") if isinstance(body, dict) else body
        message = error.get("message") if isinstance(error, dict) else error
        name = status_error_class(status).__name__ if status >= 400 else "APIError"
        return Outcome(
            cid, error=f"{name}: HTTP {status}: {_text(message) or 'no message'}", charged=True
        )
    error = line.get("error") or {}
    if not isinstance(error, dict):
        raise TypeError(f"error is {type(error).__name__}, not an object")
    code, message = error.get("code"), error.get("message")
    if code is not None and not isinstance(code, str):
        raise TypeError(f"error.code is {type(code).__name__}, not a string")
    name = _NOT_RUN.get(code or "", "BatchError")
    return Outcome(cid, error=f"{name}: {_text(message) or code or 'no details'}")


def _text(value: Any) -> str:
    """A provider's message as short text (it may be any JSON value)."""
    if value is None or isinstance(value, str):
        return (value or "")[:2000]
    return orjson.dumps(value).decode()[:2000]


def missing(part: Part, unreadable: int = 0) -> str:
    """The error of a row that a final part returned no line for (``unreadable``: lines of
    its files that could not be tied to any request)."""
    if not part.created:
        return "BatchNotCreated: " + ("; ".join(part.errors[:1]) or "the batch was never created")
    if unreadable:
        return (
            f"APIResponseError: no readable line for it; {unreadable} line(s) of the files of "
            f"batch {part.batch_id} were unreadable. job.resubmit_failed() asks again."
        )
    reasons = {
        "expired": "BatchExpired: the batch expired before this request ran",
        "cancelled": "BatchCancelled: the batch was cancelled before this request ran",
        "failed": "BatchFailed: the provider refused the batch file: "
        + ("; ".join(part.errors[:3]) or "no reason given"),
    }
    return reasons.get(part.status, f"Missing: batch {part.batch_id} returned no line for it")


def frame(
    manifest: Manifest,
    outcomes: dict[int, Outcome | str],
    attempts: dict[int, int],
    costs: dict[int, float | None],
    schema: AnswerSchema | None = None,
) -> pd.DataFrame:
    """The results frame: one row per input row, in input order, with the input's index, built
    by ``frames.result_frame`` like map's. With ``schema``, its fields become columns, and an
    answer that does not fit is that row's error (``SchemaValidationError: ...``; its text and
    cost stay: the provider answered and charged)."""
    import pandas as pd

    from holynb.batch.files import custom_id

    rows: list[tuple[Any, ...]] = []
    for pos, prompt in enumerate(manifest.texts):
        got = outcomes.get(pos, "Pending: this request was never sent; job.resubmit_failed()")
        result = got.result if isinstance(got, Outcome) else None
        error = got if isinstance(got, str) else got.error
        tried = attempts.get(pos, 0)
        if result is None:
            row = failure_row(
                prompt, manifest.model, error or "NoAnswer", attempts=tried, latency_ms=None
            )
        else:
            wrong = schema.mismatch(result.text) if schema is not None else None
            mismatch = None if wrong is None else f"SchemaValidationError: {wrong}"
            row = answer_row(prompt, result, error=mismatch, cost_usd=costs.get(pos),
                             latency_ms=None, attempts=tried)  # fmt: skip
        rows.append((*row, custom_id(pos)))
    index = pd.Index(manifest.index, name=manifest.index_name)
    out = result_frame(rows, index, BATCH_COLUMNS)
    return schema.add_columns(out) if schema is not None else out
