"""A budget holds whatever the endpoint does: every answer asked for is reserved (``n=``), an
endpoint that answers with a pricier model is caught and said, negative usage is refused, and
kernels that share a log hold one budget together (issue 17, findings 2, 9 and 15)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import holynb
from holynb.budget import Budget, BudgetOvershootWarning
from tests.helpers import key_env, session_for
from tests.scripted import Scripted, completion, sse

# $0.001 per output token, prompts free: a call's cost is its completion tokens / 1000
PRICES = {"m": {"input": 0.0, "output": 1000.0}}


def capped(body: dict) -> dict:
    """Every answer reaches max_tokens; usage counts all ``n`` answers, as OpenAI's does."""
    n = body.get("n") or 1
    return completion("x", model=body["model"], completion_tokens=n * body["max_tokens"], n=n)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_map_with_n_reserves_every_answer_it_asks_for(concurrency):
    with Scripted(capped) as api:
        s = holynb.Session(
            base_url=api.base_url, api_key="k", model="m", prices=PRICES, budget_usd=1.00
        )
        df = s.map(
            [f"q{i}" for i in range(10)], max_tokens=100, n=8, concurrency=concurrency,
            progress=False,
        )  # fmt: skip
        sent = api.requests
    # one call of 8 answers x 100 tokens costs $0.80: a second one cannot fit in $1.00
    assert sent == 1
    assert s.total_cost_usd == pytest.approx(0.80)
    assert df["error"].str.startswith("BudgetExceededError").sum() == 9


def test_chat_with_n_is_refused_when_its_answers_could_not_all_fit():
    with Scripted(capped) as api:
        s = holynb.Session(
            base_url=api.base_url, api_key="k", model="m", prices=PRICES, budget_usd=0.50
        )
        with pytest.raises(holynb.BudgetExceededError, match=r"\$0\.80"):
            s.chat("q", max_tokens=100, n=8)
        assert api.requests == 0
        assert s.chat("q", max_tokens=100, n=4).cost_usd == pytest.approx(0.40)


def test_estimate_counts_every_answer_of_n():
    s = holynb.Session(base_url="http://127.0.0.1:9/v1", api_key="k", model="m", prices=PRICES)
    assert s.estimate("q", max_tokens=100, n=8).cost_usd == pytest.approx(0.80)


DEARER = {"cheap": {"input": 0.0, "output": 100.0}, "dear": {"input": 0.0, "output": 3000.0}}


def answered_by_dear(body: dict) -> dict:
    return completion("x", model="dear", completion_tokens=body["max_tokens"])


def test_a_pricier_answering_model_is_reserved_at_its_price_from_then_on():
    with Scripted(answered_by_dear) as api:
        s = holynb.Session(
            base_url=api.base_url, api_key="k", model="cheap", prices=DEARER, budget_usd=1.00
        )
        with pytest.warns(BudgetOvershootWarning, match="dear"):
            df = s.map([f"q{i}" for i in range(30)], max_tokens=100, concurrency=1, progress=False)
        # cheap's worst case is $0.01, dear answers for $0.30: after the first answer every
        # call is reserved at dear's price, so three fit and the budget holds
        assert api.requests == 3
    assert s.total_cost_usd == pytest.approx(0.90)
    assert s.total_cost_usd <= 1.00
    assert df["ok"].sum() == 3


def test_an_overshoot_by_a_pricier_answering_model_is_warned_once_with_the_reason():
    with Scripted(answered_by_dear) as api:
        s = holynb.Session(
            base_url=api.base_url, api_key="k", model="cheap", prices=DEARER, budget_usd=1.00
        )
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            s.map([f"q{i}" for i in range(30)], max_tokens=100, concurrency=8, progress=False)
        sent = api.requests
    overshoots = [w for w in seen if issubclass(w.category, BudgetOvershootWarning)]
    over = [w for w in overshoots if "exceed" in str(w.message)]
    assert len(over) == 1, [str(w.message) for w in overshoots]
    text = str(over[0].message)
    assert "cheap" in text and "dear" in text and "$1.00" in text
    # only the first wave was reserved at cheap's price (8 in flight); every later call was
    # reserved at dear's, against the real spend, so the rest were refused
    assert sent < 30
    assert s.total_cost_usd == pytest.approx(0.30 * sent)
    assert s.total_cost_usd <= 1.00 + 8 * 0.30


# -- negative usage -----------------------------------------------------------------------------


def negative(body: dict) -> dict:
    return completion("an answer of five words", model="m", completion_tokens=-8_000_000)


def test_negative_usage_is_refused_as_a_malformed_answer_and_never_credits_the_budget():
    with Scripted(negative) as api:
        s = holynb.Session(base_url=api.base_url, api_key="k", model="m", prices=PRICES)
        with pytest.raises(holynb.APIResponseError, match="negative") as info:
            s.chat("q", max_tokens=100)
        assert info.value.partial is not None
        assert info.value.partial.text == "an answer of five words"
        row = s.ledger.iloc[-1]
        assert row["cost_usd"] > 0  # the text that arrived, counted offline
        assert "negative" in row["error"]
        s.budget_usd = 1.00
        spent = s.total_cost_usd
        assert 0 < spent < 0.05
        # a $4.80 call does not fit in $1.00, whatever the endpoint claimed before
        with pytest.raises(holynb.BudgetExceededError):
            s.chat("q", max_tokens=4800)
        assert api.requests == 1


def test_negative_usage_fails_only_its_own_map_row():
    calls = []

    def answer(body: dict) -> dict:
        calls.append(body)
        if "bad" in body["messages"][-1]["content"]:
            return negative(body)
        return completion("fine", model="m", completion_tokens=3)

    with Scripted(answer) as api:
        s = holynb.Session(base_url=api.base_url, api_key="k", model="m", prices=PRICES)
        df = s.map(["good 1", "bad", "good 2"], max_tokens=10, progress=False)
    assert df["ok"].tolist() == [True, False, True]
    assert df.loc[1, "error"].startswith("APIResponseError") and "negative" in df.loc[1, "error"]
    assert (df["cost_usd"] >= 0).all()
    assert s.total_cost_usd >= 0


def test_a_negative_anthropic_stream_usage_is_refused_and_charged_from_the_text():
    events = sse(
        {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 10}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "some words that arrived"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": -75_000_000}},
        {"type": "message_stop"},
        done=False, named=True,
    )  # fmt: skip
    with Scripted(lambda body: events) as api:
        s = holynb.Session(
            api="anthropic", base_url=api.base_url, api_key="k", model="m", prices=PRICES
        )
        stream = s.stream("q", max_tokens=100)
        with pytest.raises(holynb.APIError, match="negative"):
            "".join(stream)
    assert s.total_cost_usd > 0
    assert (s.ledger["cost_usd"] >= 0).all()


def test_no_settlement_lowers_what_was_spent():
    budget = Budget(1.00, spent_usd=0.50)
    hold = budget.reserve(0.10)
    budget.settle(hold, -8.00)
    assert budget.spent_usd == 0.50
    budget.settle(None, -1.0)
    assert budget.spent_usd == 0.50


# -- two kernels on one log ----------------------------------------------------------------------

# local/echo answers longer than 5 tokens: each call costs 5 x $0.02 = $0.10, its worst case
ECHO_PRICES = {"local/echo": {"input": 0.0, "output": 20_000.0}}

CHILD = """
import asyncio, os, sys, time
import holynb
s = holynb.Session(base_url=sys.argv[1], model="local/echo", log_path=sys.argv[2],
                   prices={"local/echo": {"input": 0.0, "output": 20000.0}}, budget_usd=1.00)
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
async def main():
    out = await asyncio.gather(*(s.achat(f"child {i} says something long", max_tokens=5)
                                 for i in range(10)), return_exceptions=True)
    await s.aclose()
    return out
results = asyncio.run(main())
print(sum(isinstance(r, holynb.ChatResult) for r in results))
"""


def test_two_kernels_sharing_a_log_hold_one_budget_together(local, tmp_path):
    log = tmp_path / "calls.sqlite"
    go = tmp_path / "go"
    s = session_for(local, log_path=log, prices=ECHO_PRICES, budget_usd=1.00)
    local.faults.push("delay:1.0", times=40)  # every call stays in flight for a second
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), local.base_url, str(log), str(go)],
        env=key_env(local),
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # the child has imported holynb and opened the log
    go.touch()

    async def main():
        out = await asyncio.gather(
            *(s.achat(f"parent {i} says something long", max_tokens=5) for i in range(10)),
            return_exceptions=True,
        )
        await s.aclose()
        return out

    mine = asyncio.run(main())
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    theirs = int(out.strip().splitlines()[-1])
    ours = sum(isinstance(r, holynb.ChatResult) for r in mine)
    assert ours + theirs <= 10
    assert local.stats.requests == ours + theirs
    check = holynb.Session(base_url=local.base_url, log_path=log, prices=ECHO_PRICES)
    assert check.total_cost_usd <= 1.00 + 1e-9
    assert check.total_cost_usd == pytest.approx(0.10 * (ours + theirs))


HOLDER = """
import asyncio, sys
import holynb
s = holynb.Session(base_url=sys.argv[1], model="local/echo", log_path=sys.argv[2],
                   prices={"local/echo": {"input": 0.0, "output": 20000.0}}, budget_usd=1.00)
async def main():
    await asyncio.gather(*(s.achat(f"held {i}", max_tokens=5) for i in range(10)))
asyncio.run(main())
"""


def test_the_holds_of_a_killed_kernel_are_released(local, tmp_path):
    import signal
    import sqlite3

    log = tmp_path / "calls.sqlite"
    local.faults.push("delay:30", times=10)  # the child's calls never finish
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), local.base_url, str(log)],
        env=key_env(local),
    )
    try:
        deadline = time.monotonic() + 30
        held = 0
        while held < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
            if log.exists():
                with contextlib.suppress(sqlite3.Error), sqlite3.connect(log) as db:
                    held = db.execute("SELECT count(*) FROM holds").fetchone()[0]
        assert held == 10  # the child holds the whole budget
        s = session_for(local, log_path=log, prices=ECHO_PRICES, budget_usd=1.00)
        with pytest.raises(holynb.BudgetExceededError, match="held by calls in flight"):
            s.chat("not yet", max_tokens=5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    local.faults.clear()
    assert s.chat("now it fits", max_tokens=5).cost_usd == pytest.approx(0.10)
