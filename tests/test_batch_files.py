"""Batch input files: written with unique custom_ids, every bad line reported, split by limits."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

import holynb
from holynb.batch.files import encode_lines, request_line, split_lines


def good(i: int, model: str = "gpt-4.1-mini") -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]}
    return request_line(f"row-{i}", body)


def test_batch_jsonl_writes_a_file_that_validates(tmp_path):
    frame = pd.DataFrame({"review": ["great", "awful"]}, index=["a", "b"])
    path = holynb.batch_jsonl(
        frame, tmp_path / "in.jsonl", model="gpt-4.1-mini", template="Rate: {review}",
        system="Answer with one word.", max_tokens=5,
    )  # fmt: skip
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [x["custom_id"] for x in lines] == ["row-0", "row-1"]
    assert lines[1]["body"] == {
        "model": "gpt-4.1-mini",
        "messages": [
            {"role": "system", "content": "Answer with one word."},
            {"role": "user", "content": "Rate: awful"},
        ],
        "max_tokens": 5,
    }
    assert holynb.validate_batch_jsonl(path).empty


def test_validate_reports_every_bad_line(tmp_path):
    rows = [
        orjson.dumps(good(0)),  # 1: fine
        b'{"custom_id": "row-1", "method": ',  # 2: broken JSON
        orjson.dumps(good(0)),  # 3: duplicate custom_id
        orjson.dumps({**good(3), "method": "GET"}),  # 4: wrong method
        orjson.dumps({k: v for k, v in good(4).items() if k != "url"}),  # 5: missing url
        orjson.dumps({**good(5), "url": "/v1/embeddings"}),  # 6: wrong url
        orjson.dumps({k: v for k, v in good(6).items() if k != "body"}),  # 7: missing body
        orjson.dumps({**good(7), "body": "text"}),  # 8: wrong body
        orjson.dumps(good(8, model="gpt-4.1")),  # 9: another model
        orjson.dumps({k: v for k, v in good(9).items() if k != "method"}),  # 10: missing method
        orjson.dumps({**good(10), "custom_id": None}),  # 11: missing custom_id
        orjson.dumps(good(11)),  # 12: fine
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    problems = holynb.validate_batch_jsonl(path)
    assert list(problems.columns) == ["line", "custom_id", "problem"]
    found = {
        (r.line, None if pd.isna(r.custom_id) else r.custom_id, r.problem.split(" (")[0])
        for r in problems.itertuples()
    }
    assert found == {
        (2, None, "broken JSON"),
        (3, "row-0", "duplicate custom_id"),
        (4, "row-3", "wrong method 'GET'"),
        (5, "row-4", "missing url"),
        (6, "row-5", "wrong url '/v1/embeddings'"),
        (7, "row-6", "missing body"),
        (8, "row-7", "wrong body: not a JSON object"),
        (9, "row-8", "model 'gpt-4.1' differs from the file's 'gpt-4.1-mini'"),
        (10, "row-9", "missing method"),
        (11, None, "missing custom_id"),
    }


def test_split_respects_requests_and_bytes():
    encoded = encode_lines(good(i) for i in range(250))
    assert [len(p) for p in split_lines(encoded, max_requests=100)] == [100, 100, 50]
    size = len(encoded[0])
    parts = split_lines(encoded[:10], max_bytes=3 * size + 5)
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    assert [i for p in parts for i in p] == list(range(10))
    with pytest.raises(holynb.ConfigurationError, match="alone is"):
        split_lines(encoded[:1], max_bytes=size - 1)


def test_a_template_naming_a_missing_column_fails_before_sending(tmp_path):
    frame = pd.DataFrame({"review": ["great"]})
    path = tmp_path / "in.jsonl"
    with pytest.raises(holynb.ConfigurationError, match=r"'text', not a column.*'review'"):
        holynb.batch_jsonl(frame, path, model="gpt-4.1-mini", template="Classify: {text}")
    assert not path.exists()
