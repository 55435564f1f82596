"""Batch API output and error lines joined back onto the input rows, shaped like ``map``'s frame.

Output lines come in any order: ``{"custom_id", "response": {"status_code", "request_id",
"body"}, "error"}``. Each input row gets the outcome of the last part that carried it (a
resubmitted row's new answer replaces its old failure); a row no file mentions is reported as
missing, with the reason its part gives (expired, cancelled, failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from holynb.bulk import RESULT_COLUMNS, result_frame
from holynb.errors import status_error_class
from holynb.results import ChatResult, Usage

if TYPE_CHECKING:
    import pandas as pd

    from holynb.batch_manifest import Manifest, Part
    from holynb.structured import AnswerSchema

# Session.map's columns (holynb.bulk), and the line each row came from.
BATCH_COLUMNS: tuple[str, ...] = (*RESULT_COLUMNS, "custom_id")
_NOT_RUN = {"batch_expired": "BatchExpired", "batch_cancelled": "BatchCancelled"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one request: an answer, or an error as ``"Class: message"``."""

    custom_id: str
    result: ChatResult | None = None
    error: str | None = None
    charged: bool = False  # the provider ran it (a ledger row is due)


def read_lines(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; undecodable lines are skipped."""
    found = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
            found.append(item)
    return found


def outcome(line: dict[str, Any], fallback_model: str) -> Outcome:
    """The Outcome of one output or error line."""
    cid = line["custom_id"]
    response = line.get("response") or None
    if isinstance(response, dict) and response.get("status_code") == 200:
        body = response.get("body") or {}
        choice = (body.get("choices") or [{}])[0] or {}
        message = choice.get("message") or {}
        result = ChatResult(
            text=message.get("content") or "",
            model=body.get("model") or fallback_model,
            finish_reason=choice.get("finish_reason"),
            usage=Usage.from_api(body.get("usage")) or Usage(estimated=True),
            latency_ms=0.0,
            request_id=response.get("request_id") or body.get("id"),
        )
        return Outcome(cid, result=result, charged=True)
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        error = (response.get("body") or {}).get("error")
        message = error.get("message") if isinstance(error, dict) else str(error or "")
        name = status_error_class(status).__name__ if status >= 400 else "APIError"
        return Outcome(cid, error=f"{name}: HTTP {status}: {message or 'no message'}", charged=True)
    error = line.get("error") or {}
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else str(error)
    name = _NOT_RUN.get(code or "", "BatchError")
    return Outcome(cid, error=f"{name}: {message or code or 'no details'}")


def missing(part: Part) -> str:
    """The error of a row that a final part returned no line for."""
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
    by ``bulk.result_frame`` like map's. With ``schema``, its fields become columns, and an
    answer that does not fit is that row's error (``SchemaValidationError: ...``; its text and
    cost stay: the provider answered and charged)."""
    import pandas as pd

    from holynb.batch_files import custom_id

    rows: list[tuple[Any, ...]] = []
    for pos, prompt in enumerate(manifest.texts):
        got = outcomes.get(pos, "Pending: this request was never sent; job.resubmit_failed()")
        result = got.result if isinstance(got, Outcome) else None
        error = got if isinstance(got, str) else got.error
        if result is None:
            rows.append(
                (prompt, None, False, error, None, manifest.model, 0, 0, 0.0, None,
                 attempts.get(pos, 0), False, custom_id(pos))
            )  # fmt: skip
            continue
        wrong = schema.mismatch(result.text) if schema is not None else None
        u = result.usage
        rows.append(
            (prompt, result.text, wrong is None,
             None if wrong is None else f"SchemaValidationError: {wrong}",
             result.finish_reason, result.model, u.prompt_tokens, u.completion_tokens,
             costs.get(pos), None, attempts.get(pos, 0), False, custom_id(pos))
        )  # fmt: skip
    index = pd.Index(manifest.index, name=manifest.index_name)
    out = result_frame(rows, index, BATCH_COLUMNS)
    return schema.add_columns(out) if schema is not None else out
