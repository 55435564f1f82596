"""Anthropic's Message Batches: the local server's /v1/messages/batches (driven by the official
anthropic SDK) and holynb's BatchJob on Session(api="anthropic")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pandas as pd
import pytest

import holynb
from holynb.server import LocalServer
from holynb.server.batches import BatchSettings
from tests.helpers import session_for

PRICED = {"local/echo": {"input": 2.0, "output": 8.0}}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def srv(local: LocalServer, home: Path) -> Iterator[LocalServer]:
    local.batches.settings = BatchSettings()
    yield local
    local.batches.settings = BatchSettings()


@pytest.fixture
def sdk(srv: LocalServer) -> Iterator[anthropic.Anthropic]:
    root = srv.base_url.removesuffix("/v1")
    with anthropic.Anthropic(base_url=root, api_key=srv.api_key.get(), max_retries=0) as c:
        yield c


def claude(srv: LocalServer, **kwargs) -> holynb.Session:
    return session_for(srv, api="anthropic", prices=PRICED, **kwargs)


def message_batch(job: holynb.BatchJob) -> holynb.BatchJob:
    """``job``, checked to be made of Anthropic Message Batches (not OpenAI batches)."""
    assert job.batch_ids and all(b.startswith("msgbatch_") for b in job.batch_ids)
    return job


def _params(text: str) -> dict:
    return {
        "model": "local/echo",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": text}],
    }


def _ended(sdk: anthropic.Anthropic, batch_id: str) -> object:
    for _ in range(200):
        batch = sdk.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.02)
    raise AssertionError("the batch did not end")


# -- the local server, through the official SDK -------------------------------------------------


def test_sdk_creates_retrieves_lists_and_reads_results(sdk):
    batch = sdk.messages.batches.create(
        requests=[
            {"custom_id": "a-1", "params": _params("one")},
            {"custom_id": "b_2", "params": _params("two")},
        ]
    )
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    ended = _ended(sdk, batch.id)
    assert ended.request_counts.succeeded == 2 and ended.results_url
    assert batch.id in [b.id for b in sdk.messages.batches.list(limit=50)]
    results = {r.custom_id: r.result for r in sdk.messages.batches.results(batch.id)}
    assert results["a-1"].type == "succeeded"
    assert results["a-1"].message.content[0].text.startswith("You said: one")
    assert results["b_2"].message.usage.output_tokens > 0


def test_sdk_cancel_ends_with_canceled_results(sdk, srv):
    srv.batches.settings.seconds_per_request = 0.05
    batch = sdk.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": _params(str(i))} for i in range(20)]
    )
    canceling = sdk.messages.batches.cancel(batch.id)
    assert canceling.processing_status in ("canceling", "ended")
    ended = _ended(sdk, batch.id)
    assert ended.request_counts.canceled > 0 and ended.cancel_initiated_at is not None
    kinds = {r.result.type for r in sdk.messages.batches.results(batch.id)}
    assert "canceled" in kinds


def test_server_refuses_bad_custom_ids(sdk):
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        sdk.messages.batches.create(requests=[{"custom_id": "row 1!", "params": _params("x")}])


def test_server_reports_errored_and_expired_requests(sdk, srv):
    srv.batches.settings.expire_after = 2
    batch = sdk.messages.batches.create(
        requests=[
            {"custom_id": "ok", "params": _params("fine")},
            {"custom_id": "bad", "params": {**_params("x"), "model": "no-such-model"}},
            {"custom_id": "late", "params": _params("late")},
        ]
    )
    _ended(sdk, batch.id)
    kinds = {r.custom_id: r.result.type for r in sdk.messages.batches.results(batch.id)}
    assert kinds == {"ok": "succeeded", "bad": "errored", "late": "expired"}


# -- holynb's BatchJob on Anthropic's format ----------------------------------------------------


def reviews(n: int) -> pd.DataFrame:
    return pd.DataFrame({"review": [f"review {i}" for i in range(n)]},
                        index=[f"r{(i * 7) % n}" for i in range(n)])  # fmt: skip


def test_anthropic_batch_round_trip_at_half_price_and_in_the_ledger_once(srv):
    s = claude(srv)
    job = s.batch(reviews(5), template="Classify: {review}", max_tokens=20)
    assert [e["path"] for e in srv.requests_log] == []  # no chat request
    assert job.batch_ids[0].startswith("msgbatch_")
    job.wait(progress=False)
    assert job.status == "completed"
    out = job.results()
    assert list(out.index) == list(reviews(5).index) and out["ok"].all()
    assert out["text"].iloc[0].startswith("You said: Classify: review 0")
    u = s.ledger.iloc[0]
    full = (u["prompt_tokens"] * 2.0 + u["completion_tokens"] * 8.0) / 1e6
    assert out["cost_usd"].iloc[0] == pytest.approx(full / 2)
    job.results()
    assert len(s.ledger) == 5 and set(s.ledger["kind"]) == {"batch"}


def test_anthropic_batch_results_in_shuffled_order_join_by_custom_id(srv):
    srv.batches.settings.shuffle_results = True
    s = claude(srv)
    job = message_batch(s.batch([f"item {i}" for i in range(30)], max_tokens=10))
    job.wait(progress=False)
    out = job.results()
    for i in range(30):
        assert out["text"].iloc[i].startswith(f"You said: item {i}.")


def test_anthropic_batch_errored_and_expired_rows_say_which(srv):
    srv.batches.settings.expire_after = 2
    s = claude(srv)
    prompts = ["fine", "no such model", "late"]
    job = message_batch(s.batch(prompts, max_tokens=10, model="local/echo"))
    job.wait(progress=False)
    out = job.results()
    assert out["ok"].tolist() == [True, True, False]
    assert out["error"].iloc[2].startswith("BatchExpired")
    s2 = claude(srv)
    bad = s2.batch(["x"], max_tokens=10, model="no-such-model").wait(progress=False)
    assert bad.results()["error"].iloc[0].startswith("NotFoundError")


def test_anthropic_batch_cancel_marks_rows_cancelled_and_resubmit_sends_them(srv):
    srv.batches.settings.seconds_per_request = 0.05
    s = claude(srv)
    job = message_batch(s.batch([f"item {i}" for i in range(20)], max_tokens=10))
    job.cancel()
    job.wait(progress=False)
    assert job.status == "cancelled"
    out = job.results()
    cancelled = out[~out["ok"]]
    assert len(cancelled) > 0 and cancelled["error"].str.startswith("BatchCancelled").all()
    srv.batches.settings.seconds_per_request = 0.0
    job.resubmit_failed().wait(progress=False)
    assert job.results()["ok"].all()


def test_anthropic_batch_reattaches_from_the_manifest(srv):
    s = claude(srv)
    job = message_batch(s.batch(["a", "b"], max_tokens=10))
    again = message_batch(holynb.BatchJob.attach(claude(srv), job.id))
    again.wait(progress=False)
    assert again.results()["ok"].all()


def test_anthropic_batch_splits_by_its_request_limit(srv):
    s = claude(srv)
    job = message_batch(s.batch([f"p{i}" for i in range(5)], max_tokens=5, max_requests_per_file=2))
    assert len(job.batch_ids) == 3
    job.wait(progress=False)
    assert job.results()["ok"].all()


def test_anthropic_batch_is_reserved_at_batch_prices_before_sending(srv):
    s = claude(srv)
    body = s.caller.call("Classify: x", max_tokens=50).body
    s.budget_usd = s.meter.bounds.usd(body, batch=True) * 1.5  # one fits, two do not
    before = len(srv.message_batches.all())
    with pytest.raises(holynb.BudgetExceededError):
        s.batch(["Classify: x", "Classify: y"], max_tokens=50)
    assert len(srv.message_batches.all()) == before


def test_anthropic_batch_with_prompt_cache_sends_cache_control(srv):
    s = claude(srv)
    job = s.batch(["a"], system="Long rules. " * 20, prompt_cache="1h", max_tokens=5)
    sent = srv.message_batches.get(job.batch_ids[0]).requests[0]["params"]
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    job.wait(progress=False)
    assert job.results()["ok"].all()


class _LosesCreates:
    """An Anthropic endpoint whose answer to POST /v1/messages/batches is a 502: the batch
    may or may not exist. Counts the creates it received."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.creates = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/v1/messages/batches":
                    outer.creates += 1
                    self.send_response(502)
                else:
                    self.send_response(404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        import threading

        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def test_a_lost_create_answer_is_never_sent_twice(home):
    lossy = _LosesCreates()
    try:
        s = holynb.Session(api="anthropic", base_url=lossy.base_url, api_key="sk-test-key",
                           model="claude-test", max_retries=0)  # fmt: skip
        with pytest.raises(holynb.BatchError, match="may exist"):
            s.batch(["a", "b"], max_tokens=5)
        job = holynb.BatchJob.attach(s, s.batches().job_id.iloc[0])
        assert job.status == "unknown"
        with pytest.raises(holynb.BatchError, match="unknown"):
            job.resubmit_failed()
        started = time.monotonic()
        with pytest.raises(holynb.BatchError, match=r"no metadata.*forget\("):
            job.wait(poll_s=0.01, timeout_s=30)  # it could never end: it says so at once
        assert time.monotonic() - started < 5
        with pytest.raises(holynb.BatchError, match="may already exist"):
            s.batch(["a", "b"], max_tokens=5)  # the same requests again
        assert lossy.creates == 1
    finally:
        lossy.httpd.shutdown()
