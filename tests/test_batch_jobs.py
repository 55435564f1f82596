"""BatchJob against the local server: split, wait, join, reattach, resubmit, cancel, interrupt."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import orjson
import pandas as pd
import pydantic
import pytest

import holynb
from holynb.batch.jobs import normalise_status
from holynb.frames import RESULT_COLUMNS
from holynb.server import LocalServer
from holynb.server.batches import BatchSettings
from tests.conftest import PLANTED_KEY
from tests.helpers import key_env

PRICES = {"local/flaky": {"input": 2.0, "output": 4.0}, "local/echo": {"input": 2.0, "output": 4.0}}


def flaky(messages: list[dict], params: dict) -> str:
    """Fails for prompts containing 'FAIL', answers the others."""
    text = messages[-1]["content"]
    if "FAIL" in text:
        raise RuntimeError("cannot answer this one")
    return f"answer to {text}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def srv(local: LocalServer, home: Path) -> Iterator[LocalServer]:
    local.batches.settings = BatchSettings()
    local.register_model("local/flaky", flaky)
    yield local
    local.batches.settings = BatchSettings()


@pytest.fixture
def s(srv: LocalServer) -> Iterator[holynb.Session]:
    with holynb.Session(base_url=srv.base_url, model="local/flaky", prices=PRICES) as session:
        yield session


def reviews(n: int) -> pd.DataFrame:
    """n reviews with a shuffled, labelled index; every 10th one makes the model fail."""
    texts = [f"review {i}" + (" FAIL" if i % 10 == 3 else "") for i in range(n)]
    return pd.DataFrame({"review": texts}, index=[f"r{(i * 7) % n}" for i in range(n)])


def test_round_trip_of_250_prompts_in_3_parts_reattached_from_a_new_process(s, srv, home):
    frame = reviews(250)
    srv.batches.settings.seconds_per_request = 0.002
    job = s.batch(frame, template="Classify: {review}", max_requests_per_file=100, max_tokens=8)
    assert len(job.batch_ids) == 3
    for n, batch_id in enumerate(job.batch_ids, start=1):
        assert srv.batches.get(batch_id).metadata == {
            "holynb_job": job.id,
            "holynb_part": f"0:{n}/3",
        }
    batches_before = len(srv.batches.all())

    script = textwrap.dedent(
        f"""
        import json, holynb
        s = holynb.Session(base_url={s.base_url!r}, prices={PRICES!r})
        known = s.batches().job_id.tolist()
        job = holynb.BatchJob.attach(s, {job.id!r})
        job.wait(progress=False)
        df = job.results()
        print(json.dumps({{
            "known": known, "status": job.status, "batch_ids": job.batch_ids,
            "frame": df.to_json(orient="split"),
            "ledger": s.ledger[["kind", "ok", "cost_usd"]].to_dict("list"),
        }}))
        """
    )
    env = {
        **key_env(srv),
        "HOLYNB_HOME": str(home),
        "PYTHONPATH": str(Path(holynb.__file__).parents[1]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["known"] == [job.id]
    assert report["status"] == "completed" and report["batch_ids"] == job.batch_ids
    assert len(srv.batches.all()) == batches_before  # attaching created nothing

    df = pd.read_json(io.StringIO(report["frame"]), orient="split")
    assert list(df.index) == list(frame.index)  # input order, input index, every row
    assert df["prompt"].tolist() == [f"Classify: {t}" for t in frame.review]
    assert df["custom_id"].tolist() == [f"row-{i}" for i in range(250)]
    failed = df[~df.ok]
    assert len(failed) == 25 and failed.prompt.str.contains("FAIL").all()
    assert failed.error.str.startswith("ServerError: HTTP 500").all()
    assert failed.error.str.contains("cannot answer this one").all()
    good = df[df.ok]
    assert (good.text == "answer to " + good.prompt).all()
    assert (good.attempts == 1).all() and (~df.cache_hit).all()

    ledger = pd.DataFrame(report["ledger"])
    assert len(ledger) == 250 and (ledger.kind == "batch").all()
    assert ledger.ok.sum() == 225
    row = good.iloc[0]
    full = (row.prompt_tokens * 2.0 + row.completion_tokens * 4.0) / 1e6
    assert row.cost_usd == pytest.approx(full / 2)  # the Batch API's half price

    # The other process entered these lines in its ledger: reading them here adds none.
    again = holynb.BatchJob.attach(s, job.id).results()
    assert again.ok.sum() == 225 and len(s.ledger) == 0


def test_results_enter_the_ledger_once(s, srv):
    job = s.batch(["a", "b FAIL", "c"]).wait(progress=False)
    first = job.results()
    assert len(s.ledger) == 3 and list(s.ledger.kind) == ["batch"] * 3
    second = job.results()
    assert len(s.ledger) == 3
    pd.testing.assert_frame_equal(first, second)


def test_upper_case_statuses_are_normalised(s, srv):
    srv.batches.settings.uppercase_status = True
    job = s.batch(["a", "b"]).wait(progress=False)
    assert job.status == "completed"
    assert srv.batches.get(job.batch_ids[0]).as_json(True)["status"] == "COMPLETED"
    assert normalise_status(" In_Progress ") == "in_progress"


def test_an_endpoint_without_batch_endpoints_says_so(srv, home):
    bare = holynb.Session(base_url=srv.url + "/no-batches/v1", model="local/echo")
    with pytest.raises(holynb.BatchNotSupportedError) as info:
        bare.batch(["a"])
    assert isinstance(info.value, holynb.NotFoundError)
    assert "has no Batch API" in str(info.value) and "s.map(" in str(info.value)
    assert "checkpoint=" in str(info.value)
    assert bare.batches().empty  # nothing left behind


def test_an_endpoint_with_files_but_no_batches_keeps_no_uploaded_file(s, srv):
    srv.batches.settings.batches_endpoint = False
    before = {f.id for f in srv.batches.files.all()}
    with pytest.raises(holynb.BatchNotSupportedError, match="POST /batches"):
        s.batch(["a", "b"])
    assert {f.id for f in srv.batches.files.all()} == before  # the upload was deleted
    assert s.batches().empty


def test_resubmit_failed_sends_only_failed_items(s, srv):
    frame = reviews(30)
    job = s.batch(frame, template="{review}").wait(progress=False)
    failed_ids = job.results().query("not ok").custom_id.tolist()
    assert len(failed_ids) == 3

    srv.register_model("local/flaky", lambda messages, params: "fixed")
    srv.batches.settings.keep_inputs = True  # to read what was sent after the batch ends
    job.resubmit_failed()
    assert len(job.batch_ids) == 2
    new = srv.batches.get(job.batch_ids[-1])
    auth = {"Authorization": f"Bearer {srv.api_key.get()}"}
    sent = httpx.get(f"{srv.base_url}/files/{new.input_file_id}/content", headers=auth).content
    assert [orjson.loads(x)["custom_id"] for x in sent.splitlines()] == failed_ids

    df = job.wait(progress=False).results()
    assert df.ok.all() and len(df) == 30
    assert df.set_index("custom_id").loc[failed_ids, "text"].eq("fixed").all()
    assert df.attempts.value_counts().to_dict() == {1: 27, 2: 3}
    assert job.resubmit_failed().batch_ids == job.batch_ids  # nothing left to send


def test_expired_items_are_reported_and_resubmitted(s, srv):
    srv.batches.settings.expire_after = 5
    job = s.batch([f"p{i}" for i in range(12)], model="local/echo").wait(progress=False)
    assert job.status == "expired"
    df = job.results()
    assert df.ok.sum() == 5
    assert df[~df.ok].error.str.startswith("BatchExpired:").all()
    srv.batches.settings.expire_after = None
    job.resubmit_failed()
    assert job.parts.requests.tolist() == [12, 7]
    assert job.wait(progress=False).results().ok.all()


def test_interrupt_stops_waiting_and_leaves_the_batch_running(s, srv, capsys):
    srv.batches.settings.seconds_per_request = 0.02
    job = s.batch([f"p{i}" for i in range(100)])
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        returned = job.wait(poll_s=0.05, progress=False)
    finally:
        timer.cancel()
    assert returned is job and time.monotonic() - started < 1.5
    assert job.status == "in_progress"
    assert srv.batches.get(job.batch_ids[0]).status == "in_progress"  # still running there
    assert "Stopped waiting" in capsys.readouterr().err
    with pytest.raises(holynb.BatchError, match="wait"):
        job.results()
    partial = job.results(partial=True)
    assert len(partial) == 100 and partial[~partial.ok].error.str.startswith("Pending").all()
    job.cancel()
    assert job.status in ("cancelling", "cancelled")
    assert job.wait(progress=False).status == "cancelled"


def test_cancel_keeps_what_finished(s, srv):
    srv.batches.settings.seconds_per_request = 0.01
    job = s.batch([f"p{i}" for i in range(60)], model="local/echo")
    time.sleep(0.15)
    df = job.cancel().wait(progress=False).results()
    assert job.status == "cancelled" and len(df) == 60
    assert 0 < df.ok.sum() < 60
    assert df[~df.ok].error.str.startswith("BatchCancelled:").all()


def test_attach_refuses_unknown_jobs_and_other_endpoints(s, srv):
    with pytest.raises(holynb.BatchError, match="knows no batch job"):
        holynb.BatchJob.attach(s, "job-nope")
    job = s.batch(["a"])
    other = holynb.Session(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(holynb.BatchError, match="was created at"):
        holynb.BatchJob.attach(other, job.id)


def test_too_much_metadata_is_refused_before_anything_is_sent(s, srv):
    before = len(srv.batches.all())
    with pytest.raises(holynb.ConfigurationError, match="at most 14"):
        s.batch(["a"], metadata={f"k{i}": "v" for i in range(15)})
    assert len(srv.batches.all()) == before and s.batches().empty


def test_wait_shows_progress_and_batches_lists_jobs(s, srv, capsys):
    job = s.batch(["a", "b", "c"], metadata={"project": "demo"}).wait(poll_s=0.01)
    assert "3/3" in capsys.readouterr().err
    listed = s.batches()
    assert listed.job_id.tolist() == [job.id]
    assert listed.iloc[0][["status", "requests", "parts"]].tolist() == ["completed", 3, 1]


def test_wait_shows_the_cost_so_far_and_the_most_the_job_can_cost(s, srv, capsys):
    srv.batches.settings.seconds_per_request = 0.01
    job = s.batch([f"p{i}" for i in range(6)], max_requests_per_file=3, max_tokens=2000)
    worst = s.batch([f"p{i}" for i in range(6)], max_tokens=2000, dry_run=True)
    job.wait(poll_s=0.01)
    err = capsys.readouterr().err
    assert f"at most ${worst.attrs['worst_cost_usd']:.4f}" in err  # before any part was read
    assert len(s.ledger) == 6  # each part entered the ledger as it ended
    df = job.results()
    assert len(s.ledger) == 6  # and not again
    assert f"cost=${df.cost_usd.sum():.4f}" in err.rsplit("\r", 1)[-1]


def test_wait_says_cost_unknown_for_a_model_without_a_price(srv, capsys):
    srv.register_model("acme-unpriced", lambda messages, params: "an answer")
    with holynb.Session(base_url=srv.base_url, model="acme-unpriced") as s:
        s.batch(["a", "b"], max_tokens=8).wait(poll_s=0.01)
    last = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert "cost unknown" in last and "$" not in last


def test_the_budget_refuses_a_batch_that_could_exceed_it_and_counts_its_cost(srv, home):
    with holynb.Session(base_url=srv.base_url, model="local/echo", prices=PRICES) as s:
        s.budget_usd = 0.001
        prompts = ["hello there"] * 20  # ~ 20 x (10 in + 100 out) tokens at half price
        with pytest.raises(holynb.BudgetExceededError, match="not sent"):
            s.batch(prompts, max_tokens=100)
        assert s.batches().empty
        s.budget_usd = 1.0
        df = s.batch(prompts, max_tokens=100).wait(progress=False).results()
        assert (
            s.meter.budget.spent_usd == pytest.approx(df.cost_usd.sum()) and df.cost_usd.sum() > 0
        )


def test_a_refused_file_gives_its_reason_on_every_row(s, srv):
    srv.batches.settings.max_requests = 2
    job = s.batch(["a", "b", "c"]).wait(progress=False)
    assert job.status == "failed"
    assert "at most 2" in job.parts.errors[0]
    df = job.results()
    assert not df.ok.any()
    assert df.error.str.startswith("BatchFailed: the provider refused the batch file").all()
    assert df.error.str.contains("at most 2").all()


def test_a_part_failing_to_upload_names_the_job_and_how_to_finish_it(s, srv):
    srv.batches.files.max_file_bytes = 400
    try:
        with pytest.raises(holynb.BatchError, match=r"1 of 2 parts were created") as info:
            s.batch(["short", "long " * 100], max_requests_per_file=1)
    finally:
        srv.batches.files.max_file_bytes = 200 * 2**20
    job_id = s.batches().job_id.iloc[0]
    assert f"BatchJob.attach(s, {job_id!r}).resubmit_failed()" in str(info.value)
    job = holynb.BatchJob.attach(s, job_id).wait(progress=False)
    assert job.results().ok.tolist() == [True, False]
    assert job.resubmit_failed().wait(progress=False).results().ok.all()


def test_the_api_key_never_reaches_the_manifest_or_the_downloads(home):
    with (
        LocalServer(api_key=PLANTED_KEY).start() as srv,
        holynb.Session(base_url=srv.base_url, model="local/echo", api_key=PLANTED_KEY) as s,
    ):
        job = s.batch(["a", "b"]).wait(progress=False)
        job.results()
    files = [p for p in home.rglob("*") if p.is_file()]
    assert len(files) >= 3  # manifest, requests, output
    assert not [p for p in files if PLANTED_KEY.encode() in p.read_bytes()]


def test_the_batch_manifest_and_the_cache_share_one_holynb_home(home):
    from holynb import _config, cache
    from holynb.batch import manifest

    assert manifest.holynb_home is _config.holynb_home is cache.holynb_home
    assert manifest.batches_dir() == home / "batches"


def test_results_are_built_like_maps_frame(s, srv):
    srv.register_model("acme/unpriced", lambda messages, params: "fine")  # no known price
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-time "unknown price" warning
        out = s.batch(["a", "b"], model="acme/unpriced").wait(progress=False).results()
        mapped = s.map(["a", "b"], model="acme/unpriced", progress=False)
    assert list(out.columns) == [*RESULT_COLUMNS, "custom_id"]
    assert out.dtypes[list(RESULT_COLUMNS)].equals(mapped.dtypes)
    assert out["cost_usd"].isna().all()  # unknown, not 0


class Verdict(pydantic.BaseModel):
    label: Literal["good", "bad"]
    score: float


def test_schema_gives_answer_columns_and_a_mismatch_is_that_rows_error(s, srv):
    prompts = ["This is good", "This is bad", "holynb: invalid-always, bad"]
    job = s.batch(prompts, model="local/json", schema=Verdict).wait(progress=False)
    sent = orjson.loads(job._manifest.read_requests()[0])["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Verdict"
    out = job.results()
    assert out["ok"].tolist() == [True, True, False]
    assert out["label"].tolist()[:2] == ["good", "bad"] and out["score"].tolist()[:2] == [0.5, 0.5]
    assert out.loc[2, "error"].startswith("SchemaValidationError: label")
    assert out.loc[2, "text"] and out.loc[2, "cost_usd"] == 0.0  # the answer stays visible
    again = holynb.BatchJob.attach(s, job.id).results()  # the manifest keeps the JSON schema
    pd.testing.assert_frame_equal(again.drop(columns="error"), out.drop(columns="error"))
    assert again.loc[2, "error"].startswith("SchemaValidationError: label")  # by jsonschema


def test_schema_and_response_format_are_not_both_given(s, srv):
    with pytest.raises(TypeError, match="not both"):
        s.batch(["a"], schema=Verdict, response_format={"type": "json_object"})


def test_batches_lists_jobs_newest_first_within_the_same_second(s, srv, monkeypatch):
    ids = iter(["job-20261127-101500-ffffff", "job-20261127-101500-000000"])  # same second
    monkeypatch.setattr("holynb.batch.jobs.new_job_id", lambda: next(ids))
    first, second = s.batch(["a"]), s.batch(["b"])
    assert s.batches()["job_id"].tolist() == [second.id, first.id]


def test_an_offline_job_whose_server_stopped_reattaches_to_the_new_local_server(home):
    first = LocalServer().start()  # the kernel before its restart
    first.batches.settings.seconds_per_request = 5.0  # still running when the kernel restarts
    with holynb.Session(base_url=first.base_url, model="local/echo") as before:
        job = before.batch(["a", "b"], max_tokens=8)
        assert job.status in ("validating", "in_progress")
    first.stop()
    second = LocalServer().start()  # the new kernel's server: another port, another token
    try:
        with holynb.Session(base_url=second.base_url, model="local/echo") as s:
            listed = s.batches()
            assert listed.job_id.tolist() == [job.id] and not listed.iloc[0]["followable"]
            again = holynb.BatchJob.attach(s, job.id)
            out = again.wait(poll_s=0.01, progress=False).results()
            assert out["ok"].all() and out.loc[0, "text"].startswith("You said: a")
            assert s.batches().iloc[0]["followable"]
    finally:
        second.stop()


def test_an_offline_job_whose_server_stopped_says_so_to_another_endpoint(home):
    first = LocalServer().start()
    first.batches.settings.seconds_per_request = 5.0
    with holynb.Session(base_url=first.base_url, model="local/echo") as before:
        job = before.batch(["a"], max_tokens=8)
    first.stop()
    other = holynb.Session(base_url="http://127.0.0.1:9/v1", api_key="sk-other")
    with pytest.raises(holynb.BatchError, match="died with it"):
        holynb.BatchJob.attach(other, job.id)


def test_old_jobs_can_be_forgotten_but_not_one_still_running(s, srv):
    done = s.batch(["a"]).wait(poll_s=0.01, progress=False)
    srv.batches.settings.seconds_per_request = 5.0
    running = s.batch(["b"])
    with pytest.raises(holynb.BatchError, match="still"):
        holynb.BatchJob.forget(running.id)
    holynb.BatchJob.forget(done.id)
    assert s.batches().job_id.tolist() == [running.id]
    with pytest.raises(holynb.BatchError, match="knows no batch job"):
        holynb.BatchJob.attach(s, done.id)
    running.cancel()
