"""Named budgets in PostgreSQL: reserved atomically across processes, released on a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import holynb
from holynb.cli import main
from holynb.errors import BudgetExceededError, ConfigurationError
from tests.helpers import key_env, session_for

pytest.importorskip("psycopg")

PRICES = {"local/echo": {"input": 3.0, "output": 15.0}}


def _usd(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * 3.0 + completion_tokens * 15.0) / 1_000_000


def _budget(url: str, name: str) -> dict[str, Any]:
    rows = holynb.budgets(database=url).to_dict("records")
    return next(r for r in rows if r["name"] == name)


def _holds(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM holynb_holds").fetchone()
        return int(row[0]) if row else 0


def test_set_budget_makes_a_budget_budgets_lists(pg_url: str) -> None:
    holynb.set_budget("research", usd=500, database=pg_url)
    holynb.set_budget("daily", usd=5, database=pg_url, period="day")
    frame = holynb.budgets(database=pg_url)
    assert list(frame["name"]) == ["daily", "research"]
    research = _budget(pg_url, "research")
    assert research["limit_usd"] == 500 and research["spent_usd"] == 0
    assert research["reserved_usd"] == 0 and research["period"] is None
    assert _budget(pg_url, "daily")["period"] == "day"
    holynb.set_budget("research", usd=600, database=pg_url)  # changed, not duplicated
    assert _budget(pg_url, "research")["limit_usd"] == 600


def test_bad_budget_settings_are_refused(pg_url: str) -> None:
    with pytest.raises(ConfigurationError, match="period"):
        holynb.set_budget("x", usd=5, database=pg_url, period="week")
    with pytest.raises(ConfigurationError, match="positive"):
        holynb.set_budget("x", usd=0, database=pg_url)
    with pytest.raises(ConfigurationError, match="HOLYNB_DATABASE_URL"):
        holynb.budgets()


def test_a_session_naming_an_unknown_budget_is_refused_when_made(local: Any, pg_url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"no budget named 'nope'.*set_budget"):
        session_for(local, database=pg_url, budget="nope")
    with pytest.raises(ConfigurationError, match="database="):
        session_for(local, budget="research")  # a named budget lives in a database


def test_a_call_that_does_not_fit_sends_nothing_and_says_which_budget(
    local: Any, pg_url: str
) -> None:
    holynb.set_budget("tiny", usd=0.0001, database=pg_url)
    s = session_for(local, database=pg_url, budget="tiny", prices=PRICES)
    with pytest.raises(BudgetExceededError, match="Budget 'tiny' reached: spent") as caught:
        s.chat("hi", max_tokens=1000)
    assert "not sent" in str(caught.value)
    assert local.stats.requests == 0
    assert _budget(pg_url, "tiny")["reserved_usd"] == 0


def test_a_refusal_says_what_calls_in_flight_hold(local: Any, pg_url: str) -> None:
    holynb.set_budget("shared", usd=0.01, database=pg_url)
    first = session_for(local, database=pg_url, budget="shared", prices=PRICES)
    hold = first.meter.reserve({"model": "local/echo", "messages": [
        {"role": "user", "content": "hi"}], "max_tokens": 600})  # fmt: skip
    try:
        other = session_for(local, database=pg_url, budget="shared", prices=PRICES)
        with pytest.raises(BudgetExceededError, match=r"held by calls in flight"):
            other.chat("hi", max_tokens=600)
    finally:
        first.meter.release(hold)
    assert _budget(pg_url, "shared")["reserved_usd"] == 0


def test_spending_is_settled_to_the_real_cost(local: Any, pg_url: str) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    s = session_for(local, database=pg_url, budget="research", prices=PRICES)
    s.chat("one", max_tokens=50)
    list(s.stream("two", max_tokens=50))
    s.map(["three", "four"], max_tokens=50, progress=False)
    budget = _budget(pg_url, "research")
    assert budget["reserved_usd"] == 0 and _holds(pg_url) == 0
    assert budget["spent_usd"] == pytest.approx(s.total_cost_usd)
    stats = local.stats
    assert budget["spent_usd"] == pytest.approx(_usd(stats.prompt_tokens, stats.completion_tokens))
    assert set(s.team_ledger()["budget"]) == {"research"}


def test_the_sessions_own_budget_applies_as_well(local: Any, pg_url: str) -> None:
    holynb.set_budget("research", usd=5, database=pg_url)
    s = session_for(local, database=pg_url, budget="research", budget_usd=0.00001, prices=PRICES)
    with pytest.raises(BudgetExceededError, match=r"\$0\.00001"):
        s.chat("hi", max_tokens=50)
    assert local.stats.requests == 0 and _budget(pg_url, "research")["reserved_usd"] == 0


def test_a_call_whose_worst_case_is_unknown_is_refused(local: Any, pg_url: str) -> None:
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    holynb.set_budget("research", usd=5, database=pg_url)
    s = session_for(local, database=pg_url, budget="research", model="mystery/model")
    with pytest.raises(BudgetExceededError):
        s.chat("hi", max_tokens=50)
    assert local.stats.requests == 0


def test_a_batch_job_beyond_its_named_budget_is_refused_before_uploading(
    local: Any, pg_url: str
) -> None:
    holynb.set_budget("research", usd=0.0001, database=pg_url)
    s = session_for(local, database=pg_url, budget="research", prices=PRICES)
    with pytest.raises(BudgetExceededError, match="batch job"):
        s.batch(["a", "b"], max_tokens=20)
    assert local.stats.requests == 0


RACER = """
import sys, holynb
s = holynb.Session(model="local/echo", base_url=sys.argv[1], database=sys.argv[2],
                   budget="race", prices={"local/echo": {"input": 3.0, "output": 15.0}},
                   concurrency=16)
df = s.map([f"item {sys.argv[3]}-{i} " + "word " * (i % 7) for i in range(60)],
           max_tokens=40, concurrency=16, progress=False)
print(int(df["ok"].sum()), int(df["error"].str.contains("BudgetExceeded", na=False).sum()))
"""


def test_processes_racing_on_one_budget_never_overspend(local: Any, pg_url: str) -> None:
    limit = 0.02
    holynb.set_budget("race", usd=limit, database=pg_url)
    local.latency_ms = 30  # calls overlap in flight
    command = [sys.executable, "-c", RACER, local.base_url, pg_url]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [
        subprocess.Popen([*command, str(n)], env=key_env(local), **pipes)  # type: ignore[call-overload]
        for n in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    counts = [tuple(map(int, out.split())) for out, _ in outs]
    ok = sum(c[0] for c in counts)
    refused = sum(c[1] for c in counts)
    assert ok + refused == 180 and refused > 0 and ok > 0
    budget = _budget(pg_url, "race")
    stats = local.stats
    assert budget["spent_usd"] <= limit
    assert budget["reserved_usd"] == 0
    assert stats.completed == ok  # refused calls sent nothing
    served = _usd(stats.prompt_tokens, stats.completion_tokens)
    assert budget["spent_usd"] == pytest.approx(served, rel=1e-9)
    import psycopg

    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT count(*), sum(cost_usd) FROM holynb_calls WHERE ok").fetchone()
    assert row is not None and row[0] == ok and row[1] == pytest.approx(served, rel=1e-9)


HOLDER = """
import sys, holynb
s = holynb.Session(model="local/echo", base_url=sys.argv[1], database=sys.argv[2],
                   budget="crash", prices={"local/echo": {"input": 3.0, "output": 15.0}},
                   concurrency=16)
s.chat("recorded before the crash", max_tokens=40)
print("ready", flush=True)
sys.stdin.readline()
s.map([f"in flight {i}" for i in range(16)], max_tokens=40, concurrency=16, progress=False)
"""


def test_a_killed_process_releases_its_holds_and_keeps_its_records(local: Any, pg_url: str) -> None:
    holynb.set_budget("crash", usd=5, database=pg_url)
    env = {**key_env(local), "HOLYNB_LEASE_S": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, local.base_url, pg_url],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        local.latency_ms = 60_000  # the next calls stay in flight
        proc.stdin.write("go\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while _budget(pg_url, "crash")["calls_in_flight"] < 16:
            assert time.monotonic() < deadline, "the holds never appeared"
            time.sleep(0.05)
        spent_before = _budget(pg_url, "crash")["spent_usd"]
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        while _budget(pg_url, "crash")["reserved_usd"] > 0:
            assert time.monotonic() - killed < 60, "holds of a killed process stayed"
            time.sleep(0.1)
        released_in = time.monotonic() - killed
    finally:
        proc.kill()
        proc.wait()
        local.latency_ms = 0
    assert released_in < 10  # a lease of 2 s
    budget = _budget(pg_url, "crash")
    assert budget["spent_usd"] == spent_before > 0  # what it recorded stays
    s = session_for(local, database=pg_url, budget="crash", prices=PRICES)
    assert len(s.team_ledger()) == 1
    s.chat("after", max_tokens=40)  # its reservation drops the dead holds
    assert _holds(pg_url) == 0


def test_a_new_period_starts_from_the_ledger_of_that_period(local: Any, pg_url: str) -> None:
    holynb.set_budget("daily", usd=5, database=pg_url, period="day")
    s = session_for(local, database=pg_url, budget="daily", prices=PRICES)
    s.chat("today", max_tokens=40)
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:  # as if that call was yesterday
        conn.execute("UPDATE holynb_calls SET ts = ts - interval '1 day'")
        conn.execute("UPDATE holynb_budgets SET period_start = period_start - interval '1 day'")
    assert _budget(pg_url, "daily")["spent_usd"] == 0
    s.chat("again", max_tokens=40)
    assert _budget(pg_url, "daily")["spent_usd"] == pytest.approx(s.ledger["cost_usd"].iloc[-1])


def test_the_command_line_sets_and_lists_budgets(
    pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.pg import PASSWORD

    command = ["budget", "set", "research", "500", "--period", "month", "--database", pg_url]
    assert main(command) == 0
    monkeypatch.setenv("HOLYNB_DATABASE_URL", pg_url)
    assert main(["budget", "list"]) == 0
    out = capsys.readouterr().out
    assert "research" in out and "500" in out and "month" in out
    assert PASSWORD not in out
    monkeypatch.delenv("HOLYNB_DATABASE_URL")
    assert main(["budget", "list"]) == 2
    assert "HOLYNB_DATABASE_URL" in capsys.readouterr().err


def _locked_budget(url: str, name: str, seconds: float) -> Any:
    """Hold the budget's row lock in another connection for ``seconds`` (as a busy teammate's
    reservation would): reservations and settlements on it wait meanwhile."""
    import threading

    import psycopg

    conn = psycopg.connect(url)
    conn.execute("SELECT 1 FROM holynb_budgets WHERE name = %s FOR UPDATE", (name,))

    def unlock() -> None:
        conn.rollback()
        conn.close()

    timer = threading.Timer(seconds, unlock)
    timer.start()
    return timer


def test_a_reservation_waiting_on_the_database_does_not_stop_the_event_loop(
    local: Any, pg_url: str
) -> None:
    import asyncio

    holynb.set_budget("busy", usd=5, database=pg_url)
    s = session_for(local, database=pg_url, budget="busy", prices=PRICES)
    s.chat("warm up", max_tokens=10)

    async def scenario() -> int:
        timer = _locked_budget(pg_url, "busy", 1.0)
        call = asyncio.ensure_future(s.achat("waits for the lock", max_tokens=10))
        ticks = 0
        while not call.done():
            await asyncio.sleep(0.01)
            ticks += 1
        timer.join()
        assert call.result().text
        return ticks

    assert asyncio.run(scenario()) >= 20  # the loop ran on for the second the lock was held
    assert _budget(pg_url, "busy")["reserved_usd"] == 0


def test_a_call_cancelled_while_its_reservation_waits_is_not_sent_and_holds_nothing(
    local: Any, pg_url: str
) -> None:
    import asyncio

    holynb.set_budget("busy", usd=5, database=pg_url)
    s = session_for(local, database=pg_url, budget="busy", prices=PRICES)
    s.chat("warm up", max_tokens=10)
    sent = local.stats.requests

    async def scenario() -> float:
        timer = _locked_budget(pg_url, "busy", 1.5)
        started = time.monotonic()
        call = asyncio.ensure_future(s.achat("cancelled while it waits", max_tokens=10))
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        ended = time.monotonic() - started
        timer.join()
        return ended

    assert asyncio.run(scenario()) < 1.0  # cancelled at once, not once the lock went
    deadline = time.monotonic() + 5
    while _holds(pg_url):  # the hold made once the lock went is ended at once
        assert time.monotonic() < deadline, "the cancelled call's hold stayed"
        time.sleep(0.05)
    assert local.stats.requests == sent


def test_reservations_asked_while_one_runs_go_in_one_statement(local: Any, pg_url: str) -> None:
    import asyncio

    import psycopg

    holynb.set_budget("busy", usd=5, database=pg_url)
    s = session_for(local, database=pg_url, budget="busy", prices=PRICES)
    s.chat("warm up", max_tokens=10)
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 10}  # fmt: skip

    async def scenario() -> list[int | None]:
        timer = _locked_budget(pg_url, "busy", 0.5)
        holds = await asyncio.gather(*(s.meter.areserve(body) for _ in range(16)))
        timer.join()
        return holds

    holds = asyncio.run(scenario())
    try:
        with psycopg.connect(pg_url) as conn:  # rows of one transaction share their xmin
            row = conn.execute("SELECT count(*), count(DISTINCT xmin::text) FROM holynb_holds")
            found = row.fetchone()
        assert found is not None and found[0] == 16
        assert found[1] <= 3  # the first alone (it waited on the lock), then the rest together
    finally:
        for hold in holds:
            s.meter.release(hold)
    assert _holds(pg_url) == 0


def test_rows_of_calls_that_end_while_one_is_written_go_in_one_statement(
    local: Any, pg_url: str
) -> None:
    import asyncio

    import psycopg

    holynb.set_budget("busy", usd=5, database=pg_url)
    s = session_for(local, database=pg_url, budget="busy", prices=PRICES, concurrency=16)
    s.chat("warm up", max_tokens=10)
    local.latency_ms = 300
    try:

        async def scenario() -> None:
            calls = [asyncio.ensure_future(s.achat(f"call {i}", max_tokens=10)) for i in range(16)]
            await asyncio.sleep(0.15)  # all reserved and in flight: now the budget is busy
            timer = _locked_budget(pg_url, "busy", 1.0)
            await asyncio.gather(*calls)
            timer.join()

        asyncio.run(scenario())
    finally:
        local.latency_ms = 0
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM holynb_calls"
            " WHERE ts > (SELECT min(ts) FROM holynb_calls)"
        ).fetchone()
    assert row is not None and row[0] == 16
    assert row[1] <= 3
    budget = _budget(pg_url, "busy")
    assert budget["reserved_usd"] == 0
    assert budget["spent_usd"] == pytest.approx(s.total_cost_usd)


def test_reservations_made_together_are_checked_in_order_each_as_if_alone(pg_url: str) -> None:
    import psycopg

    from holynb.team.database import Database
    from holynb.team.lease import Lease

    holynb.set_budget("small", usd=0.05, database=pg_url)
    lease = Lease(Database.of(pg_url), "alice")
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT o_hold, o_held FROM holynb_reserve_many('small', %s, %s::float8[])",
                (lease.id, [0.02, 0.02, 0.02, 0.005, 0.01]),
            ).fetchall()
            held = [hold is not None for hold, _ in rows]
            assert held == [True, True, False, True, False]  # 0.045 of 0.05 held, in order
            assert [h for _, h in rows] == pytest.approx([0, 0.02, 0.04, 0.04, 0.045])
            row = conn.execute("SELECT sum(usd) FROM holynb_holds WHERE budget = 'small'")
            found = row.fetchone()
            assert found is not None and found[0] == pytest.approx(0.045)
            none = conn.execute(
                "SELECT count(*) FROM holynb_reserve_many('nope', %s, %s::float8[])",
                (lease.id, [0.01]),
            ).fetchone()
            assert none is not None and none[0] == 0  # no such budget: no rows
    finally:
        lease.stop()
