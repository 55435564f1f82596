"""Batch jobs under a budget: the same refusals as chat, the job's worst case held until its
results are recorded (across a restart too), then settled to the real cost (finding 1)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import holynb
from holynb.server import LocalServer
from holynb.server.batches import BatchSettings
from tests.helpers import key_env

# 1 token in = $0.0001, 1 token out = $0.001 (batch: half of that)
PRICES = {"local/echo": {"input": 100.0, "output": 1000.0}}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def srv(local: LocalServer, home: Path) -> Iterator[LocalServer]:
    local.batches.settings = BatchSettings()
    yield local
    local.batches.settings = BatchSettings()


def uploads(srv: LocalServer) -> int:
    return len(srv.batches.files.all())


def test_a_batch_of_a_model_without_a_price_is_refused_and_nothing_is_uploaded(srv):
    srv.register_model("acme-unpriced", lambda messages, params: "an answer")
    files, batches = uploads(srv), len(srv.batches.all())  # the local server is shared
    with holynb.Session(base_url=srv.base_url, model="acme-unpriced", budget_usd=1.0) as s:
        with pytest.raises(holynb.BudgetExceededError, match="knows no price for model"):
            s.batch(["a", "b"], max_tokens=10)
        assert uploads(srv) == files and len(srv.batches.all()) == batches
        assert s.batches().empty


def test_a_batch_without_max_tokens_is_refused_as_chat_is(srv):
    srv.register_model("acme-unbounded", lambda messages, params: "an answer")
    prices = {"acme-unbounded": {"input": 1.0, "output": 1.0}}  # no known output limit
    files = uploads(srv)  # the local server is shared
    with holynb.Session(
        base_url=srv.base_url, model="acme-unbounded", prices=prices, budget_usd=1.0
    ) as s:
        with pytest.raises(holynb.BudgetExceededError) as chat_refusal:
            s.chat("a")
        with pytest.raises(holynb.BudgetExceededError) as batch_refusal:
            s.batch(["a", "b"])
        assert "sets no max_tokens" in str(batch_refusal.value)
        assert str(batch_refusal.value) == str(chat_refusal.value)
        assert uploads(srv) == files


def test_a_pending_batch_holds_its_worst_case_so_the_next_one_is_refused(srv):
    srv.batches.settings.phase_seconds = 30  # stays in progress until cancelled
    with holynb.Session(
        base_url=srv.base_url, model="local/echo", prices=PRICES, budget_usd=1.0
    ) as s:
        first = s.batch(["hello"] * 10, max_tokens=100)  # worst ~ 10 x 100 x $0.0005 = $0.50+
        held = s.meter.budget.reserved_usd
        assert 0.5 < held < 1.0
        files_before = uploads(srv)
        with pytest.raises(holynb.BudgetExceededError, match="held by calls in flight"):
            s.batch(["hello"] * 10, max_tokens=100)
        assert uploads(srv) == files_before
        with pytest.raises(holynb.BudgetExceededError):
            s.chat("hello", max_tokens=1000)  # a chat sees the batch's hold too
        srv.batches.settings.phase_seconds = 0  # let it run now
        first.wait(poll_s=0.01, progress=False)
        df = first.results()
        assert s.meter.budget.reserved_usd == pytest.approx(0.0)
        assert s.total_cost_usd == pytest.approx(df.cost_usd.fillna(0).sum())


def test_a_finished_batch_is_settled_to_its_real_cost_and_frees_the_rest(srv):
    with holynb.Session(
        base_url=srv.base_url, model="local/echo", prices=PRICES, budget_usd=1.0
    ) as s:
        job = s.batch(["hello"] * 10, max_tokens=100)
        held = s.meter.budget.reserved_usd
        assert held > 0.5
        df = job.wait(poll_s=0.01, progress=False).results()
        real = df.cost_usd.sum()
        assert 0 < real < held
        assert s.meter.budget.reserved_usd == pytest.approx(0.0)
        assert s.total_cost_usd == pytest.approx(real)
        job.results()  # reading again settles nothing twice
        assert s.total_cost_usd == pytest.approx(real)
        s.batch(["hello"] * 8, max_tokens=100).wait(poll_s=0.01, progress=False).results()
        assert s.meter.budget.reserved_usd == pytest.approx(0.0) and s.total_cost_usd <= 1.0


def test_three_batches_never_spend_more_than_the_budget_together(srv):
    srv.batches.settings.phase_seconds = 30
    with holynb.Session(
        base_url=srv.base_url, model="local/echo", prices=PRICES, budget_usd=1.0
    ) as s:
        jobs, refused = [], 0
        for _ in range(3):
            try:
                jobs.append(s.batch(["hello"] * 7, max_tokens=100))  # worst ~ $0.35+ each
            except holynb.BudgetExceededError:
                refused += 1
        assert len(jobs) == 2 and refused == 1
        assert s.meter.budget.reserved_usd <= 1.0
        srv.batches.settings.phase_seconds = 0
        for job in jobs:
            job.wait(poll_s=0.01, progress=False).results()
        assert s.total_cost_usd <= 1.0 and s.meter.budget.reserved_usd == pytest.approx(0.0)


REATTACH = textwrap.dedent(
    """
    import sys, holynb
    s = holynb.Session(model="local/echo", base_url=sys.argv[1], log_path=sys.argv[2],
                       prices={"local/echo": {"input": 100.0, "output": 1000.0}}, budget_usd=1.0)
    job = s.batch(["hello"] * 10, max_tokens=100)
    print(job.id)
    """
)


def test_a_restarted_session_that_reattaches_keeps_the_hold_until_results(srv, tmp_path, home):
    import subprocess
    import sys

    srv.batches.settings.phase_seconds = 30
    log = tmp_path / "calls.sqlite"
    out = subprocess.run(
        [sys.executable, "-c", REATTACH, srv.base_url, str(log)],
        capture_output=True, text=True, timeout=60, check=True,
        env={**key_env(srv), "HOLYNB_HOME": str(home)},
    )  # fmt: skip
    job_id = out.stdout.strip().splitlines()[-1]
    with holynb.Session(
        base_url=srv.base_url, model="local/echo", prices=PRICES, budget_usd=1.0, log_path=log
    ) as s:
        with pytest.raises(holynb.BudgetExceededError, match="held by calls in flight"):
            s.chat("hello", max_tokens=600)  # the dead kernel's job still holds its worst case
        job = holynb.BatchJob.attach(s, job_id)
        srv.batches.settings.phase_seconds = 0
        df = job.wait(poll_s=0.01, progress=False).results()
        assert s.meter.budget.reserved_usd == pytest.approx(0.0)
        assert s.total_cost_usd == pytest.approx(df.cost_usd.sum())
        s.chat("hello", max_tokens=400)  # now it fits


def test_without_a_log_a_reattached_job_is_held_again(srv):
    srv.batches.settings.phase_seconds = 30
    with holynb.Session(
        base_url=srv.base_url, model="local/echo", prices=PRICES, budget_usd=1.0
    ) as s:
        job_id = s.batch(["hello"] * 10, max_tokens=100).id
    with holynb.Session(
        base_url=srv.base_url, model="local/echo", prices=PRICES, budget_usd=1.0
    ) as s:
        job = holynb.BatchJob.attach(s, job_id)
        again = holynb.BatchJob.attach(s, job_id)  # a second object holds nothing twice
        assert 0.5 < s.meter.budget.reserved_usd < 1.0
        srv.batches.settings.phase_seconds = 0
        job.wait(poll_s=0.01, progress=False).results()
        again.results()
        assert s.meter.budget.reserved_usd == pytest.approx(0.0)


def test_resubmitting_failed_rows_is_refused_when_their_worst_case_does_not_fit(srv):
    def flaky(messages: list[dict], params: dict) -> str:
        if "FAIL" in messages[-1]["content"]:
            raise RuntimeError("cannot answer this one")
        return "ok"

    srv.register_model("local/flaky", flaky)
    prices = {"local/flaky": PRICES["local/echo"]}
    with holynb.Session(
        base_url=srv.base_url, model="local/flaky", prices=prices, budget_usd=1.0
    ) as s:
        job = s.batch(["a", "FAIL b", "FAIL c"], max_tokens=100).wait(poll_s=0.01, progress=False)
        job.results()
        s.budget_usd = s.total_cost_usd + 0.05  # less than two rows' worst case
        before = uploads(srv)
        with pytest.raises(holynb.BudgetExceededError):
            job.resubmit_failed()
        assert uploads(srv) == before


def test_a_part_whose_manifest_save_was_lost_is_not_recorded_again_in_its_log(srv, tmp_path):
    import json
    import sqlite3

    log = tmp_path / "calls.sqlite"
    with holynb.Session(
        base_url=srv.base_url, model="local/echo", prices=PRICES, budget_usd=1.0, log_path=log
    ) as s:
        job = s.batch(["a", "b", "c"], max_tokens=20, max_requests_per_file=2)
        job.wait(poll_s=0.01, progress=False).results()
    (path,) = (Path(holynb.batch.manifest.batches_dir()) / job.id).glob("manifest.json")
    manifest = json.loads(path.read_text())
    for part in manifest["parts"]:  # a crash between the ledger's write and the manifest's
        part["recorded"] = False
    path.write_text(json.dumps(manifest))
    with holynb.Session(
        base_url=srv.base_url, model="local/echo", prices=PRICES, budget_usd=1.0, log_path=log
    ) as s:
        assert holynb.BatchJob.attach(s, job.id).results()["ok"].all()
        assert s.meter.budget.reserved_usd == pytest.approx(0.0)  # its holds ended
    with sqlite3.connect(log) as db:
        (rows,) = db.execute("SELECT count(*) FROM calls WHERE tag = ?", (job.id,)).fetchone()
    assert rows == 3
