"""One ledger in PostgreSQL: every call of every user, recorded once, with its user."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest

import holynb
from holynb.errors import ConfigurationError
from tests.conftest import PLANTED_KEY
from tests.helpers import CHILD_ENV, key_env, session_for
from tests.pg import PASSWORD

pytest.importorskip("psycopg")

PRICES = {"local/echo": {"input": 3.0, "output": 15.0}}


def _all_text(url: str) -> str:
    """Every row of every holynb table, as text."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [
            t for (t,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'holynb_%'"
            )
        ]  # fmt: skip
        return "\n".join(
            str(row)
            for t in tables
            for row in conn.execute(f"SELECT row_to_json(x)::text FROM {t} x")  # type: ignore[call-overload]
        )


def test_every_call_is_recorded_once_with_user_tag_and_notebook(
    local: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "analysis.ipynb")
    s = session_for(local, database=pg_url, user="alice", prices=PRICES)
    s.chat("one", tag="cell-1")
    list(s.stream("two", tag="cell-2"))
    s.map(["three", "four"], progress=False, tag="cell-3")
    team = s.team_ledger()
    assert len(team) == 4 == len(s.ledger)
    assert set(team["user"]) == {"alice"}
    assert set(team["notebook"]) == {"analysis.ipynb"}
    assert sorted(team["tag"]) == ["cell-1", "cell-2", "cell-3", "cell-3"]
    assert team["cost_usd"].sum() == pytest.approx(s.total_cost_usd)
    stats = local.stats
    assert team["completion_tokens"].sum() == stats.completion_tokens
    assert team["prompt_tokens"].sum() == stats.prompt_tokens


def test_a_failed_call_is_recorded_once_too(local: Any, pg_url: str) -> None:
    from holynb.server import faults

    s = session_for(local, database=pg_url, user="bob")
    local.faults.push(faults.status(404))
    with pytest.raises(holynb.NotFoundError):
        s.chat("fails")
    team = s.team_ledger()
    assert len(team) == 1 and not team["ok"][0] and "NotFoundError" in team["error"][0]


def test_the_user_defaults_to_holynb_user(
    local: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOLYNB_USER", "carol")
    s = session_for(local, database=pg_url)
    s.chat("hi")
    assert list(s.team_ledger()["user"]) == ["carol"]


def test_the_database_may_come_from_the_environment(
    local: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOLYNB_DATABASE_URL", pg_url)
    session_for(local, user="dave").chat("hi")
    assert list(session_for(local).team_ledger()["user"]) == ["dave"]


def test_team_ledger_sees_other_processes_and_filters_by_user_and_since(
    local: Any, pg_url: str
) -> None:
    code = (
        "import holynb\n"
        f"s = holynb.Session(model='local/echo', base_url={local.base_url!r}, "
        f"database={pg_url!r}, user='erin')\n"
        "s.chat('from another process')\n"
    )
    subprocess.run([sys.executable, "-c", code], env=key_env(local), check=True, timeout=60)
    s = session_for(local, database=pg_url, user="frank")
    s.chat("mine")
    assert sorted(s.team_ledger()["user"]) == ["erin", "frank"]
    assert list(s.team_ledger(user="erin")["user"]) == ["erin"]
    assert len(s.team_ledger(since="2999-01-01")) == 0
    assert len(s.ledger) == 1  # the session's own calls


def test_summary_by_user_counts_every_users_calls_and_cost(local: Any, pg_url: str) -> None:
    alice = session_for(local, database=pg_url, user="alice", prices=PRICES)
    bob = session_for(local, database=pg_url, user="bob", prices=PRICES)
    alice.chat("a")
    alice.chat("b")
    bob.chat("c")
    summary = bob.summary(by="user").set_index("user")
    assert summary.loc["alice", "calls"] == 2 and summary.loc["bob", "calls"] == 1
    assert summary.loc["alice", "cost_usd"] == pytest.approx(alice.total_cost_usd)
    assert summary.loc["bob", "cost_usd"] == pytest.approx(bob.total_cost_usd)
    assert list(bob.summary()["model"]) == ["local/echo"]  # by model, as before


def test_an_unknown_price_stays_unknown_in_the_team_summary(local: Any, pg_url: str) -> None:
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    s = session_for(local, database=pg_url, user="gina", model="mystery/model")
    with pytest.warns(holynb.HolynbWarning):
        s.chat("hi")
    assert s.team_ledger()["cost_usd"].isna().all()
    assert s.summary(by="user")["cost_usd"].isna().all()


def test_team_views_without_a_database_say_how_to_get_one(local: Any) -> None:
    s = session_for(local)
    with pytest.raises(ConfigurationError, match="database="):
        s.team_ledger()
    with pytest.raises(ConfigurationError, match="database="):
        s.summary(by="user")
    with pytest.raises(ConfigurationError, match='"model" or "user"'):
        s.summary(by="tag")


def test_the_password_and_key_appear_nowhere(
    local: Any, pg_url: str, caplog: pytest.LogCaptureFixture, pg_cluster: Any
) -> None:
    from tests.pg import server_log

    caplog.set_level(logging.DEBUG)
    s = session_for(local, database=pg_url, user="alice", api_key=PLANTED_KEY)
    with pytest.raises(holynb.AuthenticationError):  # the local server wants its own token
        s.chat("hi")
    assert len(s.team_ledger()) == 1  # the failure is in the ledger, its key not
    shown = [repr(s), repr(s.meter.store), str(s.team_ledger().to_dict()), caplog.text]
    with pytest.raises(holynb.StoreError) as caught:
        session_for(local, database=pg_url.replace(PASSWORD, PASSWORD + "x"))
    shown.append(str(caught.value))
    for text in shown:
        assert PASSWORD not in text
    stored = _all_text(pg_url)
    assert PLANTED_KEY not in stored and PASSWORD not in stored
    assert PASSWORD not in server_log(pg_cluster)


def test_a_session_without_a_database_does_not_import_psycopg() -> None:
    code = (
        "import sys, holynb\n"
        "s = holynb.Session(model='m', base_url='http://127.0.0.1:9/v1', api_key='k')\n"
        "assert not [m for m in sys.modules if m.startswith('psycopg')], sys.modules.keys()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=CHILD_ENV, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def test_a_map_stops_sending_when_the_database_goes_away(
    local: Any, pg_url: str, pg_cluster: Any
) -> None:
    import threading
    import time

    name = pg_url.rsplit("/", 1)[1]
    s = session_for(local, database=pg_url, user="alice", concurrency=2)
    local.latency_ms = 40

    def cut() -> None:
        time.sleep(0.6)
        pg_cluster.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        pg_cluster.psql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )

    cutter = threading.Thread(target=cut)
    cutter.start()
    with pytest.warns(holynb.HolynbWarning, match="could not write the ledger log"):
        frame = s.map([f"item {i}" for i in range(60)], progress=False)
    cutter.join()
    local.latency_ms = 0
    refused = frame["error"].str.contains("team database", na=False)
    assert refused.sum() > 0 and frame["ok"].sum() > 0
    pg_cluster.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    recorded = len(s.team_ledger())
    # what was sent is recorded, except the calls already in flight when it went away
    assert recorded <= local.stats.completed <= recorded + 2
    assert local.stats.requests == int(frame["ok"].sum())
    time.sleep(2.1)  # the next probe of the database (every 2 s) finds it back
    s.map([f"item {i}" for i in range(60)], progress=False)  # a re-run works again
    assert len(s.team_ledger()) > recorded


def test_llm_cost_team_shows_every_users_spending(local: Any, pg_url: str) -> None:
    from tests.helpers import magic_shell, run_cell

    session_for(local, database=pg_url, user="bob", prices=PRICES).chat("from bob")
    shells = magic_shell(session_for(local, database=pg_url, user="alice", prices=PRICES))
    sh = next(shells)
    try:
        run_cell(sh, "%llm say hi")
        result = run_cell(sh, "%llm cost --team")
        assert sorted(result.result["user"]) == ["alice", "bob"]
    finally:
        next(shells, None)


def test_llm_cost_team_without_a_database_says_how(local: Any) -> None:
    from IPython.core.error import UsageError

    from tests.helpers import magic_shell

    shells = magic_shell(session_for(local))
    sh = next(shells)
    try:
        result = sh.run_cell("%llm cost --team")
        assert isinstance(result.error_in_exec, UsageError)
        assert "database=" in str(result.error_in_exec)
    finally:
        next(shells, None)


def test_the_cheaper_paths_columns_reach_the_team_ledger(local: Any, pg_url: str) -> None:
    s = session_for(local, database=pg_url, user="alice", prices=PRICES)
    s.chat("one", service_tier="flex", max_tokens=5)
    team = s.team_ledger()
    assert team["service_tier"].tolist() == s.ledger["service_tier"].tolist() == ["flex"]
    assert team["cache_write_tokens"].tolist() == [0]


def _summary_in_pandas(team: Any) -> Any:
    """summary(by="user") as pandas computes it from team_ledger(): what the database's one
    GROUP BY must give, value for value and dtype for dtype."""
    import pandas as pd

    rows = []
    for user, group in team.groupby("user", sort=True):
        hit = group["cache_hit"]
        interrupted = group["error"].fillna("").str.startswith("Interrupted")
        stopped = int((~group["ok"] & interrupted).sum())
        ok = int(group["ok"].sum())
        ended = len(group) - stopped
        latency = group.loc[group["ok"] & ~hit, "latency_ms"].dropna()
        costs = group["cost_usd"]
        rows.append(
            {
                "user": user, "calls": len(group), "ok": ok, "interrupted": stopped,
                "success_rate": ok / ended if ended else None,
                "prompt_tokens": int(group.loc[~hit, "prompt_tokens"].sum()),
                "completion_tokens": int(group.loc[~hit, "completion_tokens"].sum()),
                "cost_usd": float(costs.sum()) if costs.notna().all() else None,
                "latency_p50_ms": latency.quantile(0.5) if len(latency) else None,
                "latency_p95_ms": latency.quantile(0.95) if len(latency) else None,
                "cache_hits": int(hit.sum()),
                "saved_usd": float(group.loc[hit, "saved_usd"].fillna(0.0).sum()),
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(rows[0]))


def test_summary_by_user_is_what_pandas_computes_from_the_team_ledger(pg_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    from holynb.ledger import STOPPED, CallRecord
    from holynb.team.database import Database
    from holynb.team.ledger import TeamLog

    db = Database.of(pg_url)
    now = datetime.now(UTC)

    def call(minutes: int, **fields: Any) -> CallRecord:
        defaults = {"model": "m", "kind": "chat", "ok": True, "prompt_tokens": 10,
                    "completion_tokens": 5, "cost_usd": 0.001, "latency_ms": 100.0}  # fmt: skip
        return CallRecord(ts=now - timedelta(minutes=minutes), **{**defaults, **fields})

    calls = {
        "alice": [call(90, latency_ms=float(40 + 7 * i), prompt_tokens=i) for i in range(11)]
        + [
            call(5, ok=False, error="APIError: 500", latency_ms=900.0, cost_usd=0.0),
            call(4, ok=False, error=STOPPED, interrupted=True, latency_ms=None, cost_usd=0.0),
            call(3, cache_hit=True, saved_usd=0.02, latency_ms=1.0, cost_usd=0.0),
            call(2, latency_ms=None),
        ],
        "bob": [call(1, cost_usd=None), call(80, latency_ms=321.5)],  # a call without a price
        "carol": [call(70, ok=False, error=STOPPED, interrupted=True, cost_usd=0.0)],
        "dave": [call(60, cache_hit=True, saved_usd=None, cost_usd=0.0)],  # hits only
        "erin": [call(50, ok=False, error="RateLimitError: 429", cost_usd=0.0)],
    }
    for user, records in calls.items():
        log = TeamLog(db, user=user)
        for record in records:
            log.append(record)
    since = now - timedelta(minutes=30)
    for kwargs in ({}, {"since": since}):
        got = log.by_user(**kwargs)
        want = _summary_in_pandas(log.frame(**kwargs))
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
    assert list(log.by_user(since=since)["user"]) == ["alice", "bob"]


def test_every_column_of_a_record_reaches_the_database_as_it_was(pg_url: str) -> None:
    """The group statement carries records as JSON (orjson from the dataclass): each column
    comes back as written, and a NaN (which JSON cannot carry) stays NaN, not NULL."""
    import math
    from dataclasses import fields
    from datetime import UTC, datetime

    from holynb.ledger import CallRecord
    from holynb.team.database import Database
    from holynb.team.ledger import TeamLog

    full = CallRecord(
        ts=datetime(2026, 12, 7, 18, 30, 1, 123456, tzinfo=UTC), model="gpt-5", kind="stream",
        ok=False, error='RateLimitError: 429 "slow down"\n', prompt_tokens=1234,
        completion_tokens=56, cached_tokens=7, reasoning_tokens=8, cost_usd=0.0123456789,
        latency_ms=812.25, ttft_ms=99.5, attempts=3, request_id="req-é", tag="tag ✓",
        interrupted=True, usage_estimated=True, cache_hit=True, saved_usd=0.5,
        service_tier="flex", cache_write_tokens=9, cache_ttl="1h",
    )  # fmt: skip
    odd = CallRecord(ts=full.ts, model="m", kind="chat", ok=True, latency_ms=math.nan)
    log = TeamLog(Database.of(pg_url), user="zoë", notebook="nb.ipynb")
    for future in [log._rows.submit((r, None)) for r in (full, odd)]:  # one group, or two
        future.result(10)
    names = [f.name for f in fields(CallRecord)]
    with log.db.connection() as conn:
        rows = conn.execute(
            "SELECT " + ", ".join(f'"{n}"' for n in names) + ', "user", notebook, session'
            " FROM holynb_calls WHERE session = %s ORDER BY id",
            (log.session,),
        ).fetchall()
    assert len(rows) == 2
    assert dict(zip(names, rows[0][: len(names)], strict=True)) == {
        n: getattr(full, n) for n in names
    }
    assert rows[0][len(names) :] == ("zoë", "nb.ipynb", log.session)
    assert math.isnan(rows[1][names.index("latency_ms")])
