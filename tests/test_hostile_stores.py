"""Hostile or damaged holynb files (a shared cache, a checkpoint, a ledger log): a planted trigger
or view is refused, odd rows are misses with one warning, a damaged file is a holynb error that
names it and says what to do."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import holynb
from holynb.errors import StoreError, StoreWarning
from holynb.keystore import KeyStore
from holynb.ledger import CallRecord
from holynb.store import LedgerStore
from tests.helpers import session_for
from tests.scripted import Scripted, completion

EVIL = "paste your API key at https://evil.example"
REWRITE_LATER_ANSWERS = f"""
CREATE TRIGGER rewrite AFTER INSERT ON answers BEGIN
  UPDATE answers SET value = json_set(value, '$.text', '{EVIL}') WHERE key = new.key;
END"""


def _plant(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


@pytest.fixture
def cache_file(local, tmp_path) -> Path:
    """A cache file with one honest answer (to "Say hi"), closed."""
    path = tmp_path / "shared.sqlite"
    with session_for(local, cache=path) as s:
        s.chat("Say hi", max_tokens=20)
    return path


# -- triggers, views and anything holynb did not make ------------------------------------------


def test_a_trigger_planted_in_a_shared_cache_is_refused(local, cache_file):
    _plant(cache_file, REWRITE_LATER_ANSWERS)
    with pytest.raises(StoreError, match=r"trigger 'rewrite'.*delete it or give another"):
        session_for(local, cache=cache_file)
    assert isinstance(StoreError("x"), holynb.ConfigurationError)


def test_the_trigger_never_rewrites_an_answer(local, cache_file):
    _plant(cache_file, REWRITE_LATER_ANSWERS)
    before = cache_file.read_bytes()
    for _ in range(2):  # a victim who ignores the error and runs again
        with pytest.raises(StoreError):  # noqa: SIM117
            with session_for(local, cache=cache_file) as s:
                s.chat("my private question", max_tokens=20)
    assert cache_file.read_bytes() == before  # untouched: nothing stored, the trigger never ran
    db = sqlite3.connect(cache_file)
    values = [value for (value,) in db.execute("SELECT value FROM answers")]
    db.close()
    assert len(values) == 1 and EVIL not in values[0]


def test_a_view_in_a_cache_file_is_refused(local, cache_file):
    _plant(cache_file, "CREATE VIEW latest AS SELECT * FROM answers")
    with pytest.raises(StoreError, match=r"view 'latest'"):
        session_for(local, cache=cache_file)


def test_a_table_holynb_did_not_make_is_refused(local, cache_file):
    _plant(cache_file, "CREATE TABLE notes (x)")
    with pytest.raises(StoreError, match=r"table 'notes'"):
        session_for(local, cache=cache_file)


def test_a_changed_answers_table_is_refused(tmp_path):
    path = tmp_path / "shared.sqlite"
    KeyStore(path).close()
    _plant(
        path,
        "DROP TABLE answers",
        "CREATE TABLE answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, created TEXT NOT NULL,"
        " value TEXT NOT NULL DEFAULT 'x', extra TEXT) WITHOUT ROWID",
    )
    with pytest.raises(StoreError, match=r"table 'answers'"):
        KeyStore(path)


def test_a_checkpoint_with_a_trigger_is_refused_before_anything_is_sent(local, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    with session_for(local) as s:
        s.map(["a", "b"], checkpoint=ckpt, progress=False, max_tokens=4)
        _plant(ckpt, REWRITE_LATER_ANSWERS)
        before = local.stats.requests
        with pytest.raises(StoreError, match=str(ckpt.name)):
            s.map(["a", "b", "c"], checkpoint=ckpt, progress=False, max_tokens=4)
        assert local.stats.requests == before


def test_a_ledger_log_with_a_trigger_is_refused(tmp_path):
    path = tmp_path / "log.sqlite"
    LedgerStore(path).close()
    _plant(
        path, "CREATE TRIGGER zero AFTER INSERT ON calls BEGIN UPDATE calls SET cost_usd = 0; END"
    )
    with pytest.raises(StoreError, match=r"log\.sqlite.*trigger 'zero'"):
        holynb.Session(base_url="http://127.0.0.1:9/v1", log_path=path)


def test_a_ledger_log_with_a_view_is_refused(tmp_path):
    path = tmp_path / "log.sqlite"
    LedgerStore(path).close()
    _plant(path, "CREATE VIEW spent AS SELECT sum(cost_usd) FROM calls")
    with pytest.raises(StoreError, match=r"view 'spent'"):
        LedgerStore(path)


def test_holynb_files_open_with_trusted_schema_off(tmp_path):
    with KeyStore(tmp_path / "a.sqlite") as keys, LedgerStore(tmp_path / "log.sqlite") as log:
        for store in (keys, log):
            assert store.pragma("trusted_schema") == 0


def test_an_older_holynb_log_is_still_accepted(tmp_path):
    path = tmp_path / "log.sqlite"
    from holynb.store import MIGRATIONS

    db = sqlite3.connect(path)
    MIGRATIONS[0](db)  # a log written before the cache columns
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with LedgerStore(path) as store:
        assert len(store) == 0


# -- odd rows: a miss with one warning ---------------------------------------------------------

ODD_VALUES = {
    "junk JSON": "{not json",
    "a list": "[1, 2, 3]",
    "text of the wrong type": '{"text": 5, "model": "local/echo", "finish_reason": "stop"}',
    "no text": '{"model": "local/echo", "finish_reason": "stop"}',
    "no model": '{"text": "hi", "finish_reason": "stop"}',
    "usage of the wrong type": (
        '{"text": "hi", "model": "local/echo", "usage": {"prompt_tokens": "many"}}'
    ),
    "negative usage": '{"text": "hi", "model": "local/echo", "usage": {"prompt_tokens": -5}}',
    "usage not an object": '{"text": "hi", "model": "local/echo", "usage": [1]}',
    "latency of the wrong type": '{"text": "hi", "model": "local/echo", "latency_ms": "fast"}',
    "a cost that is not finite": '{"text": "hi", "model": "local/echo", "cost_usd": 1e999}',
}


def _spoil(path: Path, value: str) -> None:
    db = sqlite3.connect(path)
    db.execute("UPDATE answers SET value = ?", (value,))
    db.commit()
    db.close()


@pytest.fixture(params=sorted(ODD_VALUES))
def odd(request, cache_file) -> Iterator[Path]:
    _spoil(cache_file, ODD_VALUES[request.param])
    return cache_file


def test_an_odd_row_is_a_miss_in_chat_with_one_warning(local, odd):
    with session_for(local, cache=odd) as s, pytest.warns(StoreWarning, match=odd.name) as seen:
        r = s.chat("Say hi", max_tokens=20)
        assert not r.cache_hit and r.text.startswith("You said")
    assert len([w for w in seen if issubclass(w.category, StoreWarning)]) == 1
    with session_for(local, cache=odd) as s:  # the answer asked again replaced it
        assert s.chat("Say hi", max_tokens=20).cache_hit


def test_an_odd_row_is_a_miss_in_a_stream(local, odd):
    with session_for(local, cache=odd) as s, pytest.warns(StoreWarning):
        text = "".join(s.stream("Say hi", max_tokens=20))
        assert text.startswith("You said") and not s.last_result.cache_hit


def test_odd_rows_in_a_checkpoint_are_asked_again_with_one_warning(local, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    items = [f"item {i}" for i in range(6)]
    with session_for(local) as s:
        s.map(items, checkpoint=ckpt, progress=False, max_tokens=4)
    db = sqlite3.connect(ckpt)
    keys = [k for (k,) in db.execute("SELECT key FROM answers ORDER BY key")]
    for key, value in zip(keys, ODD_VALUES.values(), strict=False):  # six kinds of odd
        db.execute("UPDATE answers SET value = ? WHERE key = ?", (value, key))
    db.commit()
    db.close()
    before = local.stats.requests
    with session_for(local) as s, pytest.warns(StoreWarning) as seen:
        df = s.map(items, checkpoint=ckpt, progress=False, max_tokens=4)
    assert df["ok"].all() and not df["cache_hit"].any() and len(df) == 6
    assert df["text"].str.startswith("You said").all()
    assert local.stats.requests == before + 6
    assert len([w for w in seen if issubclass(w.category, StoreWarning)]) == 1


def test_odd_rows_are_misses_for_the_store_itself(tmp_path):
    with KeyStore(tmp_path / "a.sqlite") as store:
        store.put("k", holynb.ChatResult(text="fine", model="m", finish_reason="stop"))
    _spoil(tmp_path / "a.sqlite", ODD_VALUES["no text"])
    with KeyStore(tmp_path / "a.sqlite") as store, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert store.get("k") is None and store.get_many(["k"]) == {}
        assert store.get("k") is None
    assert len([w for w in seen if issubclass(w.category, StoreWarning)]) == 1


# -- damaged files -----------------------------------------------------------------------------


def _zero_page(path: Path, page: int | str) -> None:
    """Write zeros over one page: a number, or the root page of the table of that name."""
    db = sqlite3.connect(path)
    size = db.execute("PRAGMA page_size").fetchone()[0]
    if isinstance(page, str):
        page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (page,)).fetchone()[
            0
        ]
    db.close()
    with open(path, "r+b") as f:
        f.seek(size * (page - 1))
        f.write(b"\0" * size)


def _big_cache(local, path: Path) -> None:
    with session_for(local, cache=path) as s:
        s.map([f"question {i} " * 20 for i in range(60)], progress=False, max_tokens=40)


def test_a_zeroed_page_in_a_cache_is_a_holynb_error_naming_the_file(local, tmp_path):
    path = tmp_path / "cache.sqlite"
    _big_cache(local, path)
    _zero_page(path, "answers")
    with pytest.raises(StoreError, match=r"cache\.sqlite.*damaged.*[Dd]elete it"):  # noqa: SIM117
        with session_for(local, cache=path) as s:  # at the open or at the first read
            s.chat("question 1 " * 20, max_tokens=40)


def test_a_zeroed_page_in_a_checkpoint_is_a_holynb_error(local, tmp_path):
    path = tmp_path / "run.sqlite"
    items = [f"question {i} " * 20 for i in range(60)]
    with session_for(local) as s:
        s.map(items, checkpoint=path, progress=False, max_tokens=40)
        _zero_page(path, "answers")
        with pytest.raises(StoreError, match=r"run\.sqlite.*damaged"):
            s.map(items, checkpoint=path, progress=False, max_tokens=40)


def test_a_zeroed_first_page_is_a_holynb_error(local, tmp_path):
    path = tmp_path / "cache.sqlite"
    _big_cache(local, path)
    _zero_page(path, 1)
    with pytest.raises(StoreError, match=r"cache\.sqlite"):
        session_for(local, cache=path)


def test_a_zeroed_page_in_a_ledger_log_is_a_holynb_error(tmp_path):
    path = tmp_path / "log.sqlite"
    with LedgerStore(path) as store:
        store.extend(
            CallRecord(ts=datetime.now(UTC), model="m", kind="chat", ok=True, tag="x" * 400)
            for _ in range(100)
        )
    _zero_page(path, "calls")
    with pytest.raises(StoreError, match=r"log\.sqlite.*damaged"):
        holynb.Session(base_url="http://127.0.0.1:9/v1", log_path=path)


# -- a file damaged while a call is in flight: the paid answer is still returned ---------------


def _damaging(path: Path, table: str) -> Scripted:
    """An endpoint that damages ``table``'s root page in ``path`` while it answers."""

    def answer(body: dict) -> dict:
        # Another process writes and folds the WAL into the file (so holynb's connection
        # reads the file again), then a page goes bad.
        db = sqlite3.connect(path, isolation_level=None)
        db.execute(f"UPDATE {table} SET model = model")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        _zero_page(path, table)
        return completion("the paid answer", model="gpt-4.1-mini")

    return Scripted(answer)


def _filled(path: Path, store: str) -> None:
    """``path`` as a cache or log holding a few pages of rows, closed (its WAL folded in)."""
    with Scripted(lambda body: completion("x" * 300, model="gpt-4.1-mini")) as api:
        kwargs = {"cache": path} if store == "cache" else {"log_path": path}
        with holynb.Session(base_url=api.base_url, api_key="k", **kwargs) as s:
            for i in range(40):
                s.chat(f"question {i} " * 30)


def test_a_cache_damaged_during_a_call_still_returns_the_paid_answer(tmp_path):
    path = tmp_path / "cache.sqlite"
    _filled(path, "cache")
    with _damaging(path, "answers") as api:
        s = holynb.Session(base_url=api.base_url, api_key="k", cache=path)
        with pytest.warns(StoreWarning, match=r"cache\.sqlite.*damaged"):
            r = s.chat("a new question")
        assert r.text == "the paid answer" and len(s.ledger) == 1
        s.close()


def test_a_log_damaged_during_a_call_still_returns_the_paid_answer(tmp_path):
    path = tmp_path / "log.sqlite"
    _filled(path, "log")
    with _damaging(path, "calls") as api:
        s = holynb.Session(base_url=api.base_url, api_key="k", log_path=path)
        with pytest.warns(holynb.HolynbWarning, match=r"log\.sqlite.*damaged"):
            r = s.chat("a new question")
        assert r.text == "the paid answer" and s.ledger["ok"].iloc[-1]
        s.close()


# -- odd rows in a ledger log: a holynb error (a skipped row would hide spending) --------------

ODD_CALLS = {
    "a date that is not one": "UPDATE calls SET ts = 'yesterday'",
    "a cost that is text": "UPDATE calls SET cost_usd = 'lots'",
    "tokens that are text": "UPDATE calls SET prompt_tokens = 'many'",
    "a model that is bytes": "UPDATE calls SET model = x'00ff'",
    "ok that is not a flag": "UPDATE calls SET ok = 'yes'",
}


@pytest.mark.parametrize("spoil", sorted(ODD_CALLS))
def test_an_odd_row_in_a_ledger_log_is_a_holynb_error_naming_it(tmp_path, spoil):
    path = tmp_path / "log.sqlite"
    with LedgerStore(path) as store:
        store.append(CallRecord(ts=datetime.now(UTC), model="m", kind="chat", ok=True))
    _plant(path, ODD_CALLS[spoil])
    with pytest.raises(StoreError, match=r"log\.sqlite.*row 1\b.*[Mm]ove it away"):
        holynb.Session(base_url="http://127.0.0.1:9/v1", log_path=path)
