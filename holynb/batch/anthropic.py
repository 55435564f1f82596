"""Anthropic's Message Batches (``POST {base}/messages/batches``) in ``BatchJob``'s terms.

A job's requests are kept as the OpenAI-shaped lines every job keeps (``holynb.batch.files``);
for Anthropic each part is sent as ``{"requests": [{"custom_id", "params"}]}``, the params
translated by the Messages wire format (no file upload). A ``message_batch`` object is read
into the fields ``BatchJob`` keeps for any batch: ``processing_status`` ``in_progress`` ->
``in_progress``, ``canceling`` -> ``cancelling``, ``ended`` -> ``cancelled`` (a cancel was
asked), ``expired`` (every request expired) or ``completed``; ``request_counts`` ->
completed (succeeded) and failed (errored, canceled, expired). Results (JSONL, any order) are
read by ``custom_id``: ``succeeded`` is an answer, ``errored`` the error it names, ``canceled``
and ``expired`` failed rows that say so (neither is billed). Limits: 100,000 requests and
256 MB per batch.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from holynb._wire.anthropic import AnthropicWire, to_messages_request
from holynb._wire.base import ERROR_TYPE_STATUS
from holynb.batch.results import Outcome
from holynb.errors import BatchError, status_error_class
from holynb.results import ChatResult, Usage

__all__ = [
    "CUSTOM_ID",
    "MAX_BYTES",
    "MAX_REQUESTS",
    "PATH",
    "as_batch",
    "create_request",
    "outcome",
]

PATH = "messages/batches"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 2**20
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_WIRE = AnthropicWire()
_NOT_RUN = {
    "canceled": "BatchCancelled: the batch was cancelled before this request ran",
    "expired": "BatchExpired: the batch expired before this request ran",
}


def create_request(lines: list[bytes]) -> dict[str, Any]:
    """The body of ``POST /messages/batches`` for a part's request lines (as kept in the
    manifest); BatchError for a custom_id Anthropic would refuse."""
    requests = []
    for raw in lines:
        line = orjson.loads(raw)
        cid = line["custom_id"]
        if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
            raise BatchError(
                f"custom_id {cid!r} is not valid for Anthropic (^[a-zA-Z0-9_-]{{1,64}}$)."
            )
        requests.append({"custom_id": cid, "params": to_messages_request(line["body"])})
    return {"requests": requests}


def as_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A ``message_batch`` object as the fields of an OpenAI batch object that ``BatchJob``
    reads (``id``, ``status``, ``request_counts``; ``output_file_id`` is the batch's own id
    once it has ended: its results are fetched by it)."""
    counts = batch.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}

    def count(name: str) -> int:
        value = counts.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    done, errored = count("succeeded"), count("errored")
    canceled, expired = count("canceled"), count("expired")
    total = count("processing") + done + errored + canceled + expired
    state = batch.get("processing_status")
    out: dict[str, Any] = {"id": batch.get("id")}
    if state == "ended":
        if batch.get("cancel_initiated_at"):
            out["status"] = "cancelled"
        elif expired and expired == total:
            out["status"] = "expired"
        else:
            out["status"] = "completed"
        out["output_file_id"] = batch.get("id")
    elif state == "canceling":
        out["status"] = "cancelling"
    elif state == "in_progress":
        out["status"] = "in_progress"
    else:
        out["status"] = state if isinstance(state, str) else None
    out["request_counts"] = {
        "total": total,
        "completed": done,
        "failed": errored + canceled + expired,
    }
    return out


def outcome(line: dict[str, Any], fallback_model: str, where: str = "a line") -> Outcome:
    """The Outcome of one results line ``{"custom_id", "result": {"type", ...}}``; raises a
    builtin error (TypeError, KeyError, ...) for a line not shaped so (that row's error)."""
    cid = line["custom_id"]
    result = line.get("result")
    if not isinstance(result, dict):
        raise TypeError(f"result is {type(result).__name__}, not an object")
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message")
        if not isinstance(message, dict):
            raise TypeError(f"result.message is {type(message).__name__}, not an object")
        text, model, reason, usage, answer_id = _WIRE.read_completion(message, {})
        answer = ChatResult(
            text=text,
            model=model or fallback_model,
            finish_reason=reason,
            usage=usage or Usage(estimated=True),
            latency_ms=0.0,
            request_id=answer_id if isinstance(answer_id, str) else None,
        )
        return Outcome(cid, result=answer, charged=True)
    if kind == "errored":
        error = result.get("error")
        inner = error.get("error") if isinstance(error, dict) else None
        detail = inner if isinstance(inner, dict) else error if isinstance(error, dict) else {}
        kind_name = detail.get("type")
        status = ERROR_TYPE_STATUS.get(kind_name, 400) if isinstance(kind_name, str) else 400
        message = detail.get("message")
        text = message[:2000] if isinstance(message, str) else "no message"
        name = status_error_class(status).__name__
        return Outcome(cid, error=f"{name}: {kind_name or 'error'}: {text}", charged=True)
    if kind in _NOT_RUN:
        return Outcome(cid, error=_NOT_RUN[kind])
    raise ValueError(f"result.type is {str(kind)[:40]!r}, not one Anthropic sends")
