"""Batch API input files: building the JSONL, checking every line, splitting it into parts.

A batch input file has one request per line, ``{"custom_id", "method": "POST", "url":
"/v1/chat/completions", "body": {...}}``, one model per file, at most 50,000 requests and
200 MB (OpenAI's limits; make them settings, they have changed over time).

>>> holynb.batch_jsonl(["Say hi", "Say bye"], "in.jsonl", model="gpt-4.1-mini")
>>> holynb.validate_batch_jsonl("in.jsonl")     # empty DataFrame: the file is fine
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from holynb.calls.body import request_body
from holynb.errors import ConfigurationError
from holynb.parameters import check_params
from holynb.prompts import prompt_error, read_prompts

if TYPE_CHECKING:
    import pandas as pd

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 2**20
PROBLEM_COLUMNS = ("line", "custom_id", "problem")
_CUSTOM_ID = re.compile(r"row-(0|[1-9][0-9]{0,9})")  # ASCII digits, as custom_id() writes


def custom_id(position: int) -> str:
    """The ``custom_id`` of the request for input row ``position`` (0-based)."""
    return f"row-{position}"


def position_of(custom_id_: str) -> int | None:
    """The input row a ``custom_id`` made by holynb stands for (``row-<n>``), or None."""
    found = _CUSTOM_ID.fullmatch(custom_id_)
    return int(found.group(1)) if found else None


def request_line(custom_id_: str, body: dict[str, Any]) -> dict[str, Any]:
    """One line of a batch input file."""
    return {"custom_id": custom_id_, "method": "POST", "url": ENDPOINT, "body": body}


def encode_lines(lines: Iterable[dict[str, Any]]) -> list[bytes]:
    """Each line as JSON bytes ending in a newline."""
    return [orjson.dumps(line) + b"\n" for line in lines]


def split_lines(
    encoded: Sequence[bytes],
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_BYTES_PER_FILE,
) -> list[list[int]]:
    """The positions of ``encoded`` grouped into files of at most ``max_requests`` lines and
    ``max_bytes`` bytes, in order."""
    if max_requests < 1 or max_bytes < 1:
        raise ConfigurationError("max_requests_per_file and max_bytes_per_file must be >= 1.")
    parts: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, line in enumerate(encoded):
        if len(line) > max_bytes:
            raise ConfigurationError(
                f"Request {i} alone is {len(line)} bytes, more than max_bytes_per_file="
                f"{max_bytes}: shorten it or raise the limit."
            )
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            parts.append(current)
            current, size = [], 0
        current.append(i)
        size += len(line)
    if current:
        parts.append(current)
    return parts


def batch_jsonl(
    prompts: Any,
    path: str | os.PathLike[str],
    *,
    model: str,
    template: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    **params: Any,
) -> Path:
    """Write a Batch API input file for ``prompts`` (custom_ids ``row-0``, ``row-1``, ...).

    ``prompts`` as for ``Session.map`` (read by ``holynb.prompts.read_prompts``: a bad input
    is refused before anything is written); extra keyword arguments go into every request body.

    >>> holynb.batch_jsonl(df, "reviews.jsonl", model="gpt-4.1-mini",
    ...                    template="Classify: {review}", max_tokens=20)
    """
    check_params(params, "batch_jsonl")
    parsed = read_prompts(prompts, template, what="batch_jsonl")
    lines = []
    for i, (label, prompt) in enumerate(zip(parsed.labels, parsed.prompts, strict=True)):
        try:
            body = request_body(
                prompt,
                model=model,
                system=system,
                temperature=temperature,
                max_tokens=max_tokens,
                params=params,
            )
        except (TypeError, ValueError) as err:
            raise prompt_error(label, err) from None
        lines.append(request_line(custom_id(i), body))
    target = Path(path)
    target.write_bytes(b"".join(encode_lines(lines)))
    return target


def line_problems(lines: Iterable[bytes | str]) -> list[tuple[int, str | None, str]]:
    """Every problem of a batch input file's lines: ``(line, custom_id, problem)``, 1-based."""
    found: list[tuple[int, str | None, str]] = []
    seen: dict[str, int] = {}
    file_model: tuple[int, str] | None = None
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            found.append((number, None, "empty line"))
            continue
        try:
            item = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            found.append((number, None, f"broken JSON ({exc})"))
            continue
        if not isinstance(item, dict):
            found.append((number, None, "not a JSON object"))
            continue
        cid = item.get("custom_id")
        shown = cid if isinstance(cid, str) else None

        def report(problem: str, number: int = number, shown: str | None = shown) -> None:
            found.append((number, shown, problem))

        if not isinstance(cid, str) or not cid:
            report("missing custom_id (a non-empty string)")
        elif cid in seen:
            report(f"duplicate custom_id (first used on line {seen[cid]})")
        else:
            seen[cid] = number
        if "method" not in item:
            report("missing method (use 'POST')")
        elif item["method"] != "POST":
            report(f"wrong method {item['method']!r} (use 'POST')")
        if "url" not in item:
            report(f"missing url (use {ENDPOINT!r})")
        elif item["url"] != ENDPOINT:
            report(f"wrong url {item['url']!r} (use {ENDPOINT!r})")
        body = item.get("body")
        if "body" not in item:
            report("missing body")
            continue
        if not isinstance(body, dict):
            report("wrong body: not a JSON object")
            continue
        model = body.get("model")
        if not isinstance(model, str) or not model:
            report("missing body.model")
        elif file_model is None:
            file_model = (number, model)
        elif model != file_model[1]:
            report(
                f"model {model!r} differs from the file's {file_model[1]!r} (line "
                f"{file_model[0]}): a batch file holds one model"
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            report("missing body.messages (a non-empty list)")
    return found


def validate_batch_jsonl(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every problem of a batch input file, one row each: ``line`` (1-based), ``custom_id``,
    ``problem``. An empty frame means the file is fine.

    >>> holynb.validate_batch_jsonl("in.jsonl")
       line custom_id                                     problem
    0     3     row-1  duplicate custom_id (first used on line 2)
    """
    import pandas as pd

    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    problems = line_problems(lines)
    if not lines:
        problems.append((0, None, "the file has no requests"))
    frame = pd.DataFrame(problems, columns=list(PROBLEM_COLUMNS))
    return frame.astype({"line": "int64"})
