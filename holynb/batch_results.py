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

from holynb.errors import status_error_class
from holynb.results import ChatResult, Usage

if TYPE_CHECKING:
    import pandas as pd

    from holynb.batch_manifest import Manifest, Part

# The columns of Session.map's frame (DESIGN.md, "Next wave"); batch results add custom_id.
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
)
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
) -> pd.DataFrame:
    """The results frame: one row per input row, in input order, with the input's index."""
    import pandas as pd

    from holynb.batch_files import custom_id

    columns: dict[str, list[Any]] = {c: [] for c in BATCH_COLUMNS}
    for pos, prompt in enumerate(manifest.texts):
        got = outcomes.get(pos, "Pending: this request was never sent; job.resubmit_failed()")
        result = got.result if isinstance(got, Outcome) else None
        error = got if isinstance(got, str) else got.error
        usage = result.usage if result is not None else Usage()
        row = {
            "prompt": prompt,
            "text": result.text if result is not None else None,
            "ok": result is not None,
            "error": None if result is not None else error,
            "finish_reason": result.finish_reason if result is not None else None,
            "model": result.model if result is not None else manifest.model,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": costs.get(pos) if result is not None else 0.0,
            "latency_ms": None,
            "attempts": attempts.get(pos, 0),
            "cache_hit": False,
            "custom_id": custom_id(pos),
        }
        for name, value in row.items():
            columns[name].append(value)
    index = pd.Index(manifest.index, name=manifest.index_name)
    out = pd.DataFrame(columns, index=index, columns=list(BATCH_COLUMNS))
    return out.astype({"latency_ms": "float64"})
