"""Money and budgets: worst cases a budget can hold, unreadable answers, shared and foreign logs."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import warnings

import pytest

import holynb
from holynb.server import faults
from holynb.session import LogWriteWarning
from tests.helpers import key_env, session_for

CENT_A_TOKEN = {"local/echo": {"input": 10_000.0, "output": 10_000.0}}  # $0.01 a token
OUTPUT_ONLY = {"local/echo": {"input": 0.0, "output": 20_000.0}}  # 50 answer tokens: $1


# -- budgets hold the worst case ---------------------------------------------------------------


def test_concurrent_calls_never_spend_more_than_the_budget(local):
    s = session_for(local, prices=CENT_A_TOKEN, budget_usd=5, concurrency=10)

    async def main():
        out = await asyncio.gather(
            *(s.achat(f"question {i}", max_tokens=100) for i in range(10)),
            return_exceptions=True,
        )
        await s.aclose()
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", holynb.budget.BudgetWarning)
        outcomes = asyncio.run(main())
    refused = [o for o in outcomes if isinstance(o, holynb.BudgetExceededError)]
    answered = [o for o in outcomes if isinstance(o, holynb.ChatResult)]
    assert len(refused) + len(answered) == 10 and refused and answered
    stats = local.stats
    assert stats.requests == len(answered)
    assert stats.total_tokens * 0.01 <= 5.0  # what the server says was used
    assert s.total_cost_usd <= 5.0 and s.meter.budget.reserved_usd == 0


def test_a_priced_call_without_max_tokens_is_refused_when_no_limit_is_known(local):
    s = session_for(local, prices=CENT_A_TOKEN, budget_usd=5)
    for _ in range(10):
        with pytest.raises(holynb.BudgetExceededError, match="max_tokens"):
            s.chat("tell me everything")
    assert local.stats.requests == 0


def test_free_local_models_need_no_max_tokens_under_a_budget(local):
    s = session_for(local, budget_usd=1)
    assert s.chat("hi").text


def test_a_known_context_window_bounds_the_worst_case(local):
    s = session_for(local, budget_usd=5)
    s.prices.set("gpt-4.1", input=8.0, output=32.0)  # genai-prices knows its 1M-token window
    with pytest.raises(holynb.BudgetExceededError, match=r"could cost up to \$3\d\."):
        s.chat("hi", model="gpt-4.1")
    assert local.stats.requests == 0


def test_an_unpriced_model_under_a_budget_is_refused_and_never_sent(local):
    local.register_model("acme-unpriced", lambda messages, params: "hello")
    s = session_for(local, model="acme-unpriced", budget_usd=0.0001)
    for _ in range(50):
        with pytest.raises(holynb.BudgetExceededError, match=r"prices=\{'acme-unpriced'"):
            s.chat("hi", max_tokens=5)
    assert local.stats.requests == 0
    s.budget_usd = None
    assert s.chat("hi").text == "hello"


# -- a 200 holynb cannot read ------------------------------------------------------------------

BAD_BODIES = [
    '{"choices": ["x"]}',
    '{"choices": [{"message": {"content": "hello"}}], "usage": {"prompt_tokens": "n/a"}}',
    '{"choices": [{"message": {"content": 42}}]}',
    "null",
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_an_unreadable_completion_is_a_typed_error_with_a_row_and_no_held_budget(local, body):
    s = session_for(local, prices=CENT_A_TOKEN, budget_usd=5)
    local.faults.push(faults.raw_body(body))
    with pytest.raises(holynb.APIResponseError) as info:
        s.chat("hi", max_tokens=10)
    assert isinstance(info.value, holynb.APIError) and "cannot read" in str(info.value)
    assert local.stats.requests == 1  # not re-sent: it may have been paid for
    row = s.records[-1]
    assert not row.ok and row.error.startswith("APIResponseError")
    assert s.meter.budget.reserved_usd == 0
    if "hello" in body:
        assert info.value.partial.text == "hello" and row.completion_tokens > 0
        assert row.cost_usd > 0
    assert s.chat("again", max_tokens=10).text  # the budget was not left held


STREAM_BODIES = [
    "data: null\n\n",
    'data: {"choices": ["x"]}\n\n',
    'data: {"choices": [{"index": 0, "delta": {"content": "Hello there"}}]}\n\n'
    'data: {"choices": [], "usage": {"prompt_tokens": "n/a"}}\n\n',
    'data: {"choices": [{"index": 0, "delta": {"content": "Hello there"}}]}\n\ndata: 7\n\n',
]


@pytest.mark.parametrize("body", STREAM_BODIES)
def test_an_unreadable_stream_is_a_typed_error_with_what_arrived(local, body):
    s = session_for(local, prices=CENT_A_TOKEN, budget_usd=5)
    local.faults.push(faults.raw_body(body))
    got = []
    with pytest.raises(holynb.APIResponseError):
        for text in s.stream("hi", max_tokens=10):
            got.append(text)
    assert local.stats.requests == 1
    row = s.records[-1]
    assert not row.ok and row.error.startswith("APIResponseError")
    assert s.meter.budget.reserved_usd == 0
    if "Hello" in body:
        assert got == ["Hello there"] and s.last_result.text == "Hello there"
        assert row.completion_tokens >= 2 and row.cost_usd > 0


def test_a_locked_log_warns_once_and_the_answers_still_come_back(local, tmp_path):
    path = tmp_path / "calls.sqlite"
    s = session_for(local, prices=CENT_A_TOKEN, budget_usd=5, log_path=path)
    s.meter.store.wait_at_most(0.05)  # do not wait 30 s in a test
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = s.chat("one", max_tokens=10)
            second = s.chat("two", max_tokens=10)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert first.text and second.text
    logged = [w for w in caught if issubclass(w.category, LogWriteWarning)]
    assert len(logged) == 1
    message = str(logged[0].message)
    assert "database is locked" in message and str(tmp_path) not in message
    assert len(s.records) == 2 and s.meter.budget.reserved_usd == 0
    assert s.meter.budget.spent_usd == pytest.approx(first.cost_usd + second.cost_usd)
    s.close()


# -- a log shared by several processes ---------------------------------------------------------

OTHER_KERNEL = textwrap.dedent(
    """
    import sys, holynb
    s = holynb.Session(model="local/echo", base_url=sys.argv[1], log_path=sys.argv[2],
                       prices={"local/echo": {"input": 0.0, "output": 20000.0}},
                       budget_usd=5.5)
    for i in range(4):
        s.chat(f"other kernel {i}", max_tokens=50)
    print(f"{s.total_cost_usd:.6f}")
    """
)


def test_a_budget_on_a_shared_log_counts_the_other_processes_spending(local, tmp_path):
    path = tmp_path / "shared.sqlite"
    mine = session_for(local, prices=OUTPUT_ONLY, budget_usd=5.5, log_path=path)
    mine.chat("before", max_tokens=50)  # $1, before the other kernel starts
    done = subprocess.run(
        [sys.executable, "-c", OTHER_KERNEL, local.base_url, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=key_env(local),
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(5.0)  # it saw my $1 on start, then spent $4
    with pytest.raises(holynb.BudgetExceededError, match=r"spent \$5\.00 of"):
        mine.chat("after", max_tokens=50)  # $5 spent by the two: another $1 does not fit
    assert len(mine.records) == 5 and mine.total_cost_usd == pytest.approx(5.0)
    mine.close()


def test_a_shared_log_does_not_count_my_own_rows_twice(local, tmp_path):
    path = tmp_path / "shared.sqlite"
    a = session_for(local, prices=OUTPUT_ONLY, budget_usd=10, log_path=path)
    b = session_for(local, prices=OUTPUT_ONLY, budget_usd=10, log_path=path)
    for _ in range(2):
        a.chat("a", max_tokens=50)
        b.chat("b", max_tokens=50)
    a.chat("a", max_tokens=50)  # reads b's second row first
    assert a.meter.budget.spent_usd == pytest.approx(5.0)  # 3 of mine, 2 of b's
    assert b.meter.budget.spent_usd == pytest.approx(4.0)  # 2 of mine, 2 of a's
    assert len(a.records) == 5 and len(b.records) == 4
    a.close()
    b.close()


# -- a log file that is someone else's database ------------------------------------------------


def test_someone_elses_database_is_refused_and_left_byte_identical(tmp_path):
    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    db.execute("INSERT INTO orders (item) VALUES ('tea')")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(holynb.ConfigurationError, match=r"not a holynb log.*another file"):
        holynb.Session(base_url="http://127.0.0.1:9/v1", log_path=path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.db"]  # no -wal, no -shm


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my precious notes\n" * 100)
    before = path.read_bytes()
    with pytest.raises(holynb.ConfigurationError):
        holynb.Session(base_url="http://127.0.0.1:9/v1", log_path=path)
    assert path.read_bytes() == before


def test_an_empty_file_or_a_new_path_becomes_a_log(local, tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    for path in (empty, tmp_path / "new" / "calls.sqlite"):
        s = session_for(local, log_path=path)
        s.chat("hi")
        s.close()
        assert len(session_for(local, log_path=path).records) == 1
