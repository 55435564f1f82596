"""The ledger on disk: crash-safe appends, concurrent writers, identical reloads."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from holynb.errors import ConfigurationError
from holynb.ledger import COLUMNS, CallRecord
from holynb.store import SCHEMA_VERSION, LedgerStore, default_log_path

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
}


def record(i: int = 0, **overrides: object) -> CallRecord:
    values: dict[str, object] = {
        "ts": datetime(2026, 11, 22, 10, 0, tzinfo=UTC) + timedelta(microseconds=i),
        "model": "gpt-4.1",
        "kind": "chat",
        "ok": True,
        "prompt_tokens": 1000 + i,
        "completion_tokens": 500,
        "cost_usd": 0.024,
        "latency_ms": 812.5,
        "tag": f"row-{i}",
    }
    values.update(overrides)
    return CallRecord(**values)  # type: ignore[arg-type]


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def test_reload_gives_identical_records(tmp_path: Path) -> None:
    records = [
        record(0),
        record(1, ok=False, error="RateLimitError: slow down", cost_usd=None, attempts=3),
        record(2, kind="stream", ttft_ms=41.25, interrupted=True, usage_estimated=True),
        record(3, tag="Tiếng Việt ✓ 中文", request_id="req_123", cached_tokens=400),
        record(4, ts=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=7)))),
    ]
    with LedgerStore(tmp_path / "log.sqlite") as store:
        for r in records:
            store.append(r)
    with LedgerStore(tmp_path / "log.sqlite") as reopened:
        assert reopened.load() == records


def test_reloaded_store_shows_the_same_totals(tmp_path: Path) -> None:
    records = [record(i, cost_usd=0.001 * i) for i in range(50)]
    with LedgerStore(tmp_path / "log.sqlite") as store:
        store.extend(records)
    with LedgerStore(tmp_path / "log.sqlite") as reopened:
        loaded = reopened.load()
    assert len(loaded) == 50
    assert sum(r.cost_usd or 0 for r in loaded) == sum(r.cost_usd or 0 for r in records)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    st.builds(
        CallRecord,
        ts=st.datetimes(timezones=st.just(UTC)),
        model=text,
        kind=text,
        ok=st.booleans(),
        error=st.none() | text,
        prompt_tokens=st.integers(0, 2**40),
        completion_tokens=st.integers(0, 2**40),
        cached_tokens=st.integers(0, 2**40),
        reasoning_tokens=st.integers(0, 2**40),
        cost_usd=st.none() | st.floats(allow_nan=False),
        latency_ms=st.none() | st.floats(allow_nan=False),
        ttft_ms=st.none() | st.floats(allow_nan=False),
        attempts=st.integers(1, 100),
        request_id=st.none() | text,
        tag=st.none() | text,
        interrupted=st.booleans(),
        usage_estimated=st.booleans(),
    )
)
def test_any_record_round_trips(tmp_path_factory: pytest.TempPathFactory, rec: CallRecord) -> None:
    path = tmp_path_factory.mktemp("rt") / "log.sqlite"
    with LedgerStore(path) as store:
        store.append(rec)
        assert store.load() == [rec]


def test_store_uses_wal_with_synchronous_normal(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "log.sqlite") as store:
        db = store._connect()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_schema_has_a_column_for_every_ledger_column_and_a_version(tmp_path: Path) -> None:
    LedgerStore(tmp_path / "log.sqlite").close()
    with sqlite3.connect(tmp_path / "log.sqlite") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
        version = db.execute("PRAGMA user_version").fetchone()[0]
    assert set(COLUMNS) <= columns
    assert version == SCHEMA_VERSION >= 1


def test_a_log_from_a_newer_holynb_is_refused_with_advice(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "log.sqlite") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigurationError, match="upgrade holynb"):
        LedgerStore(tmp_path / "log.sqlite")


def test_a_file_that_is_not_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes, not a ledger\n" * 200)
    with pytest.raises(ConfigurationError, match="log_path"):
        LedgerStore(path)


def test_a_lone_surrogate_does_not_lose_the_row(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "log.sqlite") as store:
        store.append(record(0, error="bad \udce9 bytes"))
        (loaded,) = store.load()
    assert loaded.error == "bad ? bytes"


def test_concurrent_threads_never_corrupt_the_log(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    store = LedgerStore(path)
    start = threading.Barrier(8)

    def writer(t: int) -> None:
        start.wait()
        for i in range(200):
            store.append(record(i, tag=f"{t}-{i}"))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tags = [r.tag for r in store.load()]
    store.close()
    assert sorted(tags) == sorted(f"{t}-{i}" for t in range(8) for i in range(200))
    assert integrity(path) == "ok"


WRITER = """
import sys
from datetime import UTC, datetime
from holynb.ledger import CallRecord
from holynb.store import LedgerStore

store = LedgerStore(sys.argv[1])
name, count = sys.argv[2], int(sys.argv[3])
big = "x" * 200_000
i = 0
while count < 0 or i < count:
    store.append(CallRecord(ts=datetime.now(UTC), model="m", kind="chat", ok=True,
                            prompt_tokens=i, tag=f"{name}-{i}", error=big if i % 4 == 0 else None))
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
    i += 1
"""


def test_several_processes_append_to_one_log(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"p{n}", "150"],
            env=CHILD_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in range(3)
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    with LedgerStore(path) as store:
        tags = {r.tag for r in store.load()}
    assert tags == {f"p{n}-{i}" for n in range(3) for i in range(150)}
    assert integrity(path) == "ok"


@pytest.mark.parametrize("trial", range(3))
def test_kill_9_mid_run_loses_no_committed_row(tmp_path: Path, trial: int) -> None:
    path = tmp_path / "log.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "k", "-1"],
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    rng = random.Random(trial)
    wanted = rng.randint(20, 120)
    committed = 0
    while committed < wanted:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "writer died"
        committed += 1
    time.sleep(rng.random() * 0.01)  # land the kill at a random point of a write
    os.kill(proc.pid, signal.SIGKILL)
    committed += sum(1 for _ in proc.stdout)  # rows it reported before dying
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    assert integrity(path) == "ok"
    with LedgerStore(path) as store:
        rows = store.load()
    # Every reported row is there; at most one more was committed but not yet reported.
    assert [r.prompt_tokens for r in rows][:committed] == list(range(committed))
    assert len(rows) in (committed, committed + 1)
    assert all(len(r.error or "") == (200_000 if r.prompt_tokens % 4 == 0 else 0) for r in rows)


def test_default_log_path_comes_from_holynb_log_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLYNB_LOG_PATH", "~/ledgers/calls.sqlite")
    assert default_log_path() == Path.home() / "ledgers" / "calls.sqlite"
    monkeypatch.setenv("HOLYNB_LOG_PATH", "  ")
    assert default_log_path() is None
    monkeypatch.delenv("HOLYNB_LOG_PATH")
    assert default_log_path() is None


def test_a_log_written_before_the_cache_columns_still_loads(tmp_path: Path) -> None:
    from holynb.store import MIGRATIONS

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # a version-1 file, as holynb wrote it then
        MIGRATIONS[0](db)
        db.execute(
            "INSERT INTO calls (ts, model, kind, ok, cost_usd) "
            "VALUES (?, 'gpt-4.1', 'chat', 1, 0.5)",
            (datetime(2026, 11, 1, tzinfo=UTC).isoformat(),),
        )
        db.execute("PRAGMA user_version = 1")
    with LedgerStore(path) as store:
        (old,) = store.load()
        assert old.cost_usd == 0.5 and old.cache_hit is False and old.saved_usd is None
        store.append(record(1, cache_hit=True, cost_usd=0.0, saved_usd=0.02))
        assert store.load()[1].cache_hit and store.load()[1].saved_usd == 0.02
