"""Map, compare, batch and batch_jsonl read prompts and build rows the same way (one parser, one
body builder, one frame builder): every prompt shape gives the same request bodies, or the same
refusal, on every path; and their result frames share columns and dtypes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

import holynb
from holynb.frames import RESULT_COLUMNS
from holynb.server import LocalServer
from holynb.server.batches import BatchSettings
from tests.helpers import session_for

PRICES = {"local/echo": {"input": 2.0, "output": 4.0}}
EXTRA = {"seed": 7}  # a provider's own field: merged into every body the same way
REVIEWS = pd.DataFrame({"review": ["great", "awful"]}, index=["r1", "r2"])

# (name, prompts, template): every shape the one prompt parser takes, and some it refuses
SHAPES: list[tuple[str, Any, str | None]] = [
    ("list of str", ["one", "two"], None),
    ("Series", pd.Series(["one", "two"], index=["a", "b"]), None),
    ("DataFrame + template", REVIEWS, "Classify: {review}"),
    ("records + template", [{"review": "great"}, {"review": "awful"}], "Classify: {review}"),
    (
        "message lists",
        [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]],
        None,
    ),
    ("dict", {"a": "one", "b": "two"}, None),
    ("one str", "just one prompt", None),
    ("DataFrame without template", REVIEWS, None),
    ("template naming no column", REVIEWS, "Classify: {text}"),
    ("a number among prompts", ["one", 2], None),
]


@pytest.fixture
def srv(
    local: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalServer]:
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "home"))
    local.batches.settings = BatchSettings(keep_inputs=True)
    yield local
    local.batches.settings = BatchSettings()


def outcome(run: Any) -> tuple[str, Any]:
    """("ok", value) or ("refused", the error's type and message)."""
    try:
        return "ok", run()
    except (TypeError, ValueError, holynb.HolynbError) as err:
        return "refused", (
            type(err).__name__,
            str(err).replace("batch_jsonl", "PATH").replace("batch", "PATH").replace("map", "PATH"),
        )


def sent_bodies(srv: LocalServer, since: int) -> list[dict[str, Any]]:
    return [
        e["body"]
        for e in srv.requests_log[since:]
        if e.get("path", "").endswith("/chat/completions")
    ]


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


@pytest.mark.parametrize(("name", "prompts", "template"), SHAPES, ids=[s[0] for s in SHAPES])
def test_map_batch_and_batch_jsonl_send_the_same_bodies_or_refuse_alike(
    srv, tmp_path, name, prompts, template
):
    s = session_for(srv, prices=PRICES)
    since = len(srv.requests_log)

    def run_map() -> list[dict[str, Any]]:
        frame = s.map(prompts, template=template, max_tokens=5, progress=False, extra_body=EXTRA)
        if not frame["ok"].all():  # a bad item fails its own row; batch refuses the whole job
            kind, _, message = frame.loc[~frame["ok"], "error"].iloc[0].partition(": ")
            raise {"TypeError": TypeError, "ValueError": ValueError}[kind](message)
        return [comparable(b) for b in sent_bodies(srv, since)]

    def run_batch_jsonl() -> list[dict[str, Any]]:
        path = holynb.batch_jsonl(
            prompts,
            tmp_path / "in.jsonl",
            model="local/echo",
            template=template,
            max_tokens=5,
            extra_body=EXTRA,
        )
        return [orjson.loads(line)["body"] for line in path.read_bytes().splitlines()]

    def run_batch() -> list[dict[str, Any]]:
        before = {b.id for b in srv.batches.all()}
        s.batch(prompts, template=template, max_tokens=5, extra_body=EXTRA)
        (created,) = [b for b in srv.batches.all() if b.id not in before]
        content = srv.batches.files.get(created.input_file_id).content
        return [orjson.loads(line)["body"] for line in content.splitlines()]

    mapped, jsonl, batched = outcome(run_map), outcome(run_batch_jsonl), outcome(run_batch)
    assert mapped[0] == jsonl[0] == batched[0], (name, mapped, jsonl, batched)
    if mapped[0] == "ok":
        assert mapped[1] == jsonl[1] == batched[1]
    else:
        assert mapped[1][0] == jsonl[1][0] == batched[1][0], (mapped, jsonl, batched)


def test_map_compare_and_batch_frames_share_columns_and_dtypes(srv):
    s = session_for(srv, prices=PRICES)
    mapped = s.map(["one", "two"], max_tokens=5, progress=False, extra_body=EXTRA)
    failed = s.map(["one"], model="local/no-such-model", progress=False)  # every row failed
    compared = s.compare(["one", "two"], models=["local/echo", "local/echo"], max_tokens=5)
    job = s.batch(["one", "two"], max_tokens=5)
    job.wait(progress=False)
    batched = job.results()
    frames = (mapped, failed, compared, batched)
    for frame in frames:
        assert set(RESULT_COLUMNS) <= set(frame.columns)
    for column in RESULT_COLUMNS:
        kinds = {f[column].dtype for f in frames}
        assert len(kinds) == 1, f"{column}: {kinds}"


PATHS = {
    "chat": lambda s: s.chat("hi", max_tokens=5),
    "stream": lambda s: "".join(s.stream("hi", max_tokens=5)),
    "map": lambda s: s.map(["hi", "yo"], max_tokens=5, progress=False),
    "compare": lambda s: s.compare(["hi"], models=["acme-unpriced", "acme-unpriced"], max_tokens=5),
    "batch": lambda s: s.batch(["hi", "yo"], max_tokens=5),
}


@pytest.mark.parametrize("path", PATHS)
def test_every_path_refuses_an_unknown_worst_case_under_a_budget_and_sends_nothing(srv, path):
    srv.register_model("acme-unpriced", lambda messages, params: "hello")
    s = session_for(srv, model="acme-unpriced", budget_usd=1.0)
    batches = len(srv.batches.all())
    try:
        result = PATHS[path](s)
    except holynb.BudgetExceededError as err:
        refusal = str(err)
    else:  # a bulk run: each row says why it was not sent
        assert isinstance(result, pd.DataFrame) and not result["ok"].any()
        assert result["error"].str.startswith("BudgetExceededError").all()
        refusal = result["error"].iloc[0]
    assert "prices={'acme-unpriced'" in refusal
    assert srv.stats.requests == 0 and len(srv.batches.all()) == batches
