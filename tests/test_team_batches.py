"""Batch jobs in the team database: a job made on one machine is attached, followed and read on
another (another process, another HOLYNB_HOME), each part recorded once; a job on a named budget
is held there while it runs, past its process, and settled to its real cost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import holynb
from holynb.errors import BudgetExceededError
from holynb.server import LocalServer
from holynb.server.batches import BatchSettings
from tests.helpers import key_env, session_for

pytest.importorskip("psycopg")

PRICES = {"local/echo": {"input": 3.0, "output": 15.0}}
PROMPTS = [f"item {i}" for i in range(4)]

CREATOR = """
import sys, holynb
extra = {"budget": sys.argv[3]} if len(sys.argv) > 3 else {}
s = holynb.Session(model="local/echo", base_url=sys.argv[1], database=sys.argv[2],
                   prices={"local/echo": {"input": 3.0, "output": 15.0}}, **extra)
job = s.batch([f"item {i}" for i in range(4)], max_tokens=20, max_requests_per_file=2)
print(job.id, flush=True)
"""

FOLLOWER = """
import json, sys, holynb
s = holynb.Session(model="local/echo", base_url=sys.argv[1], database=sys.argv[2],
                   prices={"local/echo": {"input": 3.0, "output": 15.0}})
job = holynb.BatchJob.attach(s, sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
job.wait(poll_s=0.02, progress=False)
df = job.results()
print(json.dumps({"ok": int(df["ok"].sum())}), flush=True)
"""


@pytest.fixture
def srv(local: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "here"))
    local.batches.settings = BatchSettings()
    yield local
    local.batches.settings = BatchSettings()


def _create(srv: Any, url: str, home: Path, *args: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CREATOR, srv.base_url, url, *args],
        env={**key_env(srv), "HOLYNB_HOME": str(home), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _budget(url: str, name: str) -> dict[str, Any]:
    rows = holynb.budgets(database=url).to_dict("records")
    return next(r for r in rows if r["name"] == name)


def _sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(query, params).fetchall())


def _batch_rows(url: str, job_id: str) -> tuple[int, float]:
    ((count, cost),) = _sql(
        url, "SELECT count(*), coalesce(sum(cost_usd), 0) FROM holynb_calls WHERE tag = %s", job_id
    )
    return int(count), float(cost)


def test_a_job_made_on_one_machine_is_attached_followed_and_read_on_another(
    srv: Any, pg_url: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    srv.batches.settings.phase_seconds = 0.3  # still running when attached
    job_id = _create(srv, pg_url, elsewhere)
    assert not list(elsewhere.glob("batches/*/manifest.json"))  # the manifest is in the database
    ((user, requests),) = _sql(pg_url, "SELECT \"user\", requests FROM holynb_jobs WHERE id = %s",
                               job_id)  # fmt: skip
    assert user and len(bytes(requests).splitlines()) == len(PROMPTS)
    s = session_for(srv, database=pg_url, prices=PRICES)
    assert list(s.batches()["job_id"]) == [job_id]
    job = holynb.BatchJob.attach(s, job_id)
    assert len(job.batch_ids) == 2
    job.wait(poll_s=0.02, progress=False)
    df = job.results()
    assert df["ok"].all() and list(df["prompt"]) == PROMPTS
    count, cost = _batch_rows(pg_url, job_id)
    assert count == len(PROMPTS) and cost == pytest.approx(df["cost_usd"].sum())
    holynb.BatchJob.attach(s, job_id).results()  # read again: nothing recorded twice
    assert _batch_rows(pg_url, job_id)[0] == len(PROMPTS)
    key = srv.api_key.get()
    ((manifest, lines),) = _sql(pg_url, "SELECT manifest, requests FROM holynb_jobs")
    assert key not in manifest and key.encode() not in bytes(lines)  # the key is never stored


def test_the_job_list_says_which_teammate_made_each_job(
    srv: Any, pg_url: str, tmp_path: Path
) -> None:
    job_id = _create(srv, pg_url, tmp_path / "elsewhere", HOLYNB_USER="bob")
    listed = session_for(srv, database=pg_url, user="alice").batches()
    assert listed.set_index("job_id").loc[job_id, "user"] == "bob"


def test_each_part_is_recorded_once_when_two_machines_follow_at_once(
    srv: Any, pg_url: str, tmp_path: Path
) -> None:
    srv.batches.settings.phase_seconds = 0.2
    s = session_for(srv, database=pg_url, prices=PRICES)
    job = s.batch(PROMPTS, max_tokens=20, max_requests_per_file=1)
    other = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, srv.base_url, pg_url, job.id],
        env={**key_env(srv), "HOLYNB_HOME": str(tmp_path / "elsewhere")},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert other.stdout is not None and other.stdin is not None
    assert other.stdout.readline().strip() == "ready", other.stderr and other.stderr.read()
    other.stdin.write("go\n")
    other.stdin.flush()
    job.wait(poll_s=0.02, progress=False)
    here = job.results()
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"ok": len(PROMPTS)}
    assert here["ok"].all()
    assert _batch_rows(pg_url, job.id)[0] == len(PROMPTS)


def test_a_batch_that_does_not_fit_its_named_budget_uploads_nothing(srv: Any, pg_url: str) -> None:
    holynb.set_budget("tiny", usd=0.0001, database=pg_url)
    s = session_for(srv, database=pg_url, budget="tiny", prices=PRICES)
    files, batches = len(srv.batches.files.all()), len(srv.batches.all())
    with pytest.raises(BudgetExceededError, match=r"Budget 'tiny' reached: spent \$0") as caught:
        s.batch(PROMPTS, max_tokens=1000)
    assert "batch" in str(caught.value) and "nothing was uploaded" in str(caught.value)
    assert len(srv.batches.files.all()) == files and len(srv.batches.all()) == batches
    assert _budget(pg_url, "tiny")["reserved_usd"] == 0
    assert _sql(pg_url, "SELECT count(*) FROM holynb_jobs") == [(0,)]


def test_a_batch_is_held_on_its_named_budget_while_it_runs_then_settled_to_its_cost(
    srv: Any, pg_url: str
) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    srv.batches.settings.phase_seconds = 0.5
    s = session_for(srv, database=pg_url, budget="research", prices=PRICES)
    job = s.batch(PROMPTS, max_tokens=20, max_requests_per_file=2)
    worst = sum(s.meter.bounds.usd(s.caller.call(p, max_tokens=20).body, batch=True)
                for p in PROMPTS)  # fmt: skip
    running = _budget(pg_url, "research")
    assert running["reserved_usd"] == pytest.approx(worst) and running["calls_in_flight"] == 2
    job.wait(poll_s=0.02, progress=False)
    df = job.results()
    assert df["ok"].all()
    done = _budget(pg_url, "research")
    count, cost = _batch_rows(pg_url, job.id)
    assert count == len(PROMPTS) and done["reserved_usd"] == 0
    assert done["spent_usd"] == pytest.approx(cost) and cost == pytest.approx(df["cost_usd"].sum())
    assert _sql(pg_url, "SELECT DISTINCT budget FROM holynb_calls WHERE tag = %s", job.id) == [
        ("research",)
    ]


def test_a_batch_hold_outlives_its_process_and_is_settled_by_the_session_that_attaches(
    srv: Any, pg_url: str, tmp_path: Path
) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    srv.batches.settings.phase_seconds = 1.0
    job_id = _create(srv, pg_url, tmp_path / "elsewhere", "research", HOLYNB_LEASE_S="1")
    held = _budget(pg_url, "research")["reserved_usd"]
    assert held > 0
    time.sleep(2.5)  # the creating process's own lease has long expired
    s = session_for(srv, database=pg_url, budget="research", prices=PRICES)
    s.chat("a call's reservation drops the holds of expired leases", max_tokens=5)
    assert _budget(pg_url, "research")["reserved_usd"] == pytest.approx(held)  # a batch may cost
    job = holynb.BatchJob.attach(s, job_id)
    job.wait(poll_s=0.02, progress=False)
    df = job.results()
    assert df["ok"].all()
    budget = _budget(pg_url, "research")
    ((cost,),) = _sql(pg_url, "SELECT sum(cost_usd) FROM holynb_calls WHERE budget = 'research'")
    assert budget["reserved_usd"] == 0 and budget["spent_usd"] == pytest.approx(cost)
    assert _batch_rows(pg_url, job_id)[0] == len(PROMPTS)


def test_a_batch_part_that_fails_releases_its_hold_without_cost(srv: Any, pg_url: str) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    srv.batches.settings.phase_seconds = 0.5
    s = session_for(srv, database=pg_url, budget="research", prices=PRICES)
    job = s.batch(PROMPTS, max_tokens=20)
    assert _budget(pg_url, "research")["reserved_usd"] > 0
    job.cancel().wait(poll_s=0.02, progress=False)
    job.results()
    budget = _budget(pg_url, "research")
    assert budget["reserved_usd"] == 0
    assert budget["spent_usd"] == pytest.approx(_batch_rows(pg_url, job.id)[1])


def test_an_anthropic_message_batch_lives_in_the_database_too(
    srv: Any, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = session_for(srv, api="anthropic", database=pg_url, prices=PRICES)
    job = s.batch(PROMPTS[:2], max_tokens=10)
    assert _sql(pg_url, "SELECT manifest::jsonb ->> 'api' FROM holynb_jobs") == [("anthropic",)]
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "elsewhere"))  # another machine
    other = session_for(srv, api="anthropic", database=pg_url, prices=PRICES)
    assert list(other.batches()["job_id"]) == [job.id]
    again = holynb.BatchJob.attach(other, job.id)
    again.wait(poll_s=0.02, progress=False)
    assert again.results()["ok"].all()
    assert _batch_rows(pg_url, job.id)[0] == 2


def test_hostile_job_ids_are_refused_with_a_database(srv: Any, pg_url: str) -> None:
    s = session_for(srv, database=pg_url, prices=PRICES)
    for bad in ("../escape", "a/b", "", "x" * 200):
        with pytest.raises(holynb.BatchError, match="not a job id"):
            holynb.BatchJob.attach(s, bad)
    with pytest.raises(holynb.BatchError, match="knows no batch job"):
        holynb.BatchJob.attach(s, "job-20261127-101500-3f9a1c")


def test_a_session_without_a_database_keeps_its_jobs_in_files(srv: Any, tmp_path: Path) -> None:
    s = session_for(srv, prices=PRICES)
    job = s.batch(PROMPTS[:1], max_tokens=5)
    assert (tmp_path / "here" / "batches" / job.id / "manifest.json").is_file()


def test_following_a_job_renews_the_lease_its_holds_hang_on(srv: Any, pg_url: str) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    srv.batches.settings.phase_seconds = 0.5
    s = session_for(srv, database=pg_url, budget="research", prices=PRICES)
    job = s.batch(PROMPTS, max_tokens=20)
    lease = "job:" + job.id
    query = "SELECT extract(epoch FROM expires - now()) FROM holynb_leases WHERE id = %s"
    ((left,),) = _sql(pg_url, query, lease)
    assert left > 24 * 3600  # the provider's completion window and a margin
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:  # as if a day had gone by
        conn.execute("UPDATE holynb_leases SET expires = now() + interval '5 s' WHERE id = %s",
                     (lease,))  # fmt: skip
    job.refresh()
    ((left,),) = _sql(pg_url, query, lease)
    assert left > 24 * 3600


def test_the_sessions_own_budget_applies_to_a_batch_as_well(srv: Any, pg_url: str) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    holynb.set_budget("tiny", usd=0.0001, database=pg_url)
    files = len(srv.batches.files.all())
    own = session_for(srv, database=pg_url, budget="research", budget_usd=0.00001, prices=PRICES)
    with pytest.raises(BudgetExceededError, match=r"^Budget reached"):
        own.batch(PROMPTS, max_tokens=20)
    named = session_for(srv, database=pg_url, budget="tiny", budget_usd=5, prices=PRICES)
    with pytest.raises(BudgetExceededError, match="Budget 'tiny' reached"):
        named.batch(PROMPTS, max_tokens=20)
    assert named.meter.budget is not None and named.meter.budget.reserved_usd == 0
    assert len(srv.batches.files.all()) == files
    assert _budget(pg_url, "research")["reserved_usd"] == 0
    both = session_for(srv, database=pg_url, budget="research", budget_usd=5, prices=PRICES)
    job = both.batch(PROMPTS, max_tokens=20)
    assert both.meter.budget is not None
    assert both.meter.budget.reserved_usd == pytest.approx(
        _budget(pg_url, "research")["reserved_usd"]
    )
    job.wait(poll_s=0.02, progress=False)
    job.results()
    assert both.meter.budget.reserved_usd == 0 and _budget(pg_url, "research")["reserved_usd"] == 0
    assert both.meter.budget.spent_usd == pytest.approx(_budget(pg_url, "research")["spent_usd"])


def test_a_job_made_without_a_named_budget_is_charged_to_none_whoever_reads_it(
    srv: Any, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    job = session_for(srv, database=pg_url, prices=PRICES).batch(PROMPTS[:2], max_tokens=10)
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "elsewhere"))
    reader = session_for(srv, database=pg_url, budget="research", prices=PRICES)
    again = holynb.BatchJob.attach(reader, job.id)
    again.wait(poll_s=0.02, progress=False)
    assert again.results()["ok"].all()
    assert _sql(pg_url, "SELECT DISTINCT budget FROM holynb_calls WHERE tag = %s", job.id) == [
        (None,)
    ]
    assert _budget(pg_url, "research")["spent_usd"] == 0


def test_forget_with_a_session_removes_a_job_from_the_database(srv: Any, pg_url: str) -> None:
    s = session_for(srv, database=pg_url, prices=PRICES)
    job = s.batch(PROMPTS[:1], max_tokens=5).wait(poll_s=0.02, progress=False)
    job.results()
    assert job.id in list(s.batches()["job_id"])
    holynb.BatchJob.forget(job.id, session=s)
    assert s.batches().empty
    assert _sql(pg_url, "SELECT count(*) FROM holynb_jobs") == [(0,)]


def test_a_part_whose_manifest_save_was_lost_after_its_record_is_not_recorded_again(
    srv: Any, pg_url: str
) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    s = session_for(srv, database=pg_url, budget="research", prices=PRICES)
    job = s.batch(PROMPTS, max_tokens=20, max_requests_per_file=2)
    job.wait(poll_s=0.02, progress=False)
    job.results()
    spent = _budget(pg_url, "research")["spent_usd"]
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:  # a crash between the two writes
        ((text,),) = conn.execute("SELECT manifest FROM holynb_jobs WHERE id = %s", (job.id,))
        manifest = json.loads(text)
        for part in manifest["parts"]:
            part["recorded"] = False
        conn.execute(
            "UPDATE holynb_jobs SET manifest = %s WHERE id = %s", (json.dumps(manifest), job.id)
        )
    again = holynb.BatchJob.attach(session_for(srv, database=pg_url, prices=PRICES), job.id)
    assert again.results()["ok"].all()
    assert _batch_rows(pg_url, job.id)[0] == len(PROMPTS)
    assert _budget(pg_url, "research")["spent_usd"] == pytest.approx(spent)


def test_holds_of_parts_a_crash_left_unsent_end_when_the_job_is_next_followed(
    srv: Any, pg_url: str
) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    srv.batches.settings.phase_seconds = 0.5
    s = session_for(srv, database=pg_url, budget="research", prices=PRICES)
    job = s.batch(PROMPTS, max_tokens=20, max_requests_per_file=2)
    held = _budget(pg_url, "research")["reserved_usd"]
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:  # a part held, never sent: a crash
        conn.execute(
            "INSERT INTO holynb_holds (budget, lease, usd) VALUES ('research', %s, 1.0)",
            ("job:" + job.id,),
        )
    assert _budget(pg_url, "research")["reserved_usd"] == pytest.approx(held + 1.0)
    holynb.BatchJob.attach(session_for(srv, database=pg_url, prices=PRICES), job.id).refresh()
    assert _budget(pg_url, "research")["reserved_usd"] == pytest.approx(held)
    job.wait(poll_s=0.02, progress=False)
    job.results()
    assert _budget(pg_url, "research")["reserved_usd"] == 0


def test_a_part_whose_record_fails_is_recorded_by_the_next_follow(
    srv: Any, pg_url: str, pg_cluster: Any
) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    s = session_for(srv, database=pg_url, budget="research", prices=PRICES)
    name = pg_url.rsplit("/", 1)[1]
    pg_cluster.psql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$;"
        " CREATE TRIGGER refuse BEFORE INSERT ON holynb_calls"
        " FOR EACH ROW EXECUTE FUNCTION refuse();",
        database=name,
    )
    with pytest.warns(holynb.StoreWarning, match="the disk is full"):  # wait() goes on
        job = s.batch(PROMPTS, max_tokens=20).wait(poll_s=0.02, progress=False)
    assert job.done
    with pytest.raises(holynb.StoreError, match="the disk is full"):
        job.results()
    assert _batch_rows(pg_url, job.id)[0] == 0
    assert _budget(pg_url, "research")["reserved_usd"] > 0  # still held: it is not recorded
    pg_cluster.psql("DROP TRIGGER refuse ON holynb_calls", database=name)
    assert job.results()["ok"].all()
    count, cost = _batch_rows(pg_url, job.id)
    budget = _budget(pg_url, "research")
    assert count == len(PROMPTS) and budget["reserved_usd"] == 0
    assert budget["spent_usd"] == pytest.approx(cost)
    assert (s.ledger["kind"] == "batch").sum() == len(PROMPTS)
