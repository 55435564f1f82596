"""The cost-tracking session: reconciliation with the server, prices, budgets, persistence."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import pandas as pd
import pytest

import holynb
from holynb.budget import BudgetWarning
from holynb.prices import UnknownPriceWarning
from holynb.server import faults
from holynb.units import money
from tests.helpers import key_env, session_for

PRICES = {"local/echo": {"input": 3.0, "output": 15.0, "cached_input": 0.3}}


def usd(prompt_tokens: int, completion_tokens: int, inp: float = 3.0, out: float = 15.0):
    return (prompt_tokens * inp + completion_tokens * out) / 1_000_000


def test_ledger_tokens_reconcile_with_the_server_over_a_mixed_run(local):
    cut_prompt = "this stream will be cut"
    probe = session_for(local).chat(cut_prompt)  # the server's prompt count for that prompt
    local.reset()

    s = session_for(local, prices=PRICES)
    s.chat("plain chat")
    list(s.stream("a stream"))
    local.faults.push(faults.status(500))
    s.chat("retried once")
    local.faults.push(faults.status(404))
    with pytest.raises(holynb.NotFoundError):
        s.chat("fails")
    local.faults.push(faults.usage_in_finish_chunk())
    list(s.stream("usage on the finish chunk"))
    local.faults.push(faults.cut_stream(after_chunks=7))
    with pytest.raises(holynb.StreamError):
        list(s.stream(cut_prompt))

    frame = s.ledger
    stats = local.stats
    assert len(frame) == 6
    assert frame["completion_tokens"].sum() == stats.completion_tokens
    reported = frame[~frame["usage_estimated"]]["prompt_tokens"].sum()
    assert reported + probe.usage.prompt_tokens == stats.prompt_tokens
    cut = frame.iloc[-1]
    assert cut["interrupted"] and cut["usage_estimated"] and cut["completion_tokens"] == 7
    assert cut["cost_usd"] > 0  # what arrived was paid for


def test_cost_matches_the_price_table_to_the_cent(local):
    s = session_for(local, prices=PRICES)
    r = s.chat("price me")
    assert r.cost_usd == pytest.approx(usd(r.usage.prompt_tokens, r.usage.completion_tokens))
    list(s.stream("price me too"))
    r2 = s.last_result
    assert r2.cost_usd == pytest.approx(usd(r2.usage.prompt_tokens, r2.usage.completion_tokens))
    assert s.total_cost_usd == pytest.approx(r.cost_usd + r2.cost_usd)
    assert s.ledger["cost_usd"].sum() == pytest.approx(s.total_cost_usd)


def test_local_models_are_free_by_default(local):
    s = session_for(local)
    assert s.chat("free").cost_usd == 0.0


def test_unknown_price_is_none_with_one_warning(local):
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    s = session_for(local, model="mystery/model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = s.chat("one")
        b = s.chat("two")
    assert a.cost_usd is None and b.cost_usd is None
    unknown = [w for w in caught if issubclass(w.category, UnknownPriceWarning)]
    assert len(unknown) == 1
    assert "prices=" in str(unknown[0].message)
    assert s.summary().loc[0, "cost_usd"] is None


def test_totals_say_how_many_calls_have_no_price(local):
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    s = session_for(local, model="mystery/model", prices=PRICES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownPriceWarning)
        s.chat("one")
        s.chat("two")
    priced = s.chat("priced", model="local/echo")
    assert priced.cost_usd > 0 and s.total_cost_usd == pytest.approx(priced.cost_usd)
    assert s.unpriced_calls == 2
    summary = s.cost_summary()
    assert summary == f"{money(priced.cost_usd)} + 2 calls without a price"
    assert summary in repr(s) and summary in s._repr_html_()


def test_a_fully_priced_session_says_just_the_total(local):
    s = session_for(local, prices=PRICES)
    s.chat("one")
    assert s.unpriced_calls == 0
    assert s.cost_summary() == money(s.total_cost_usd)
    assert "without a price" not in repr(s) + s._repr_html_()


def test_budget_refuses_the_call_that_would_exceed_before_sending(local):
    s = session_for(local, prices=PRICES)
    first = s.chat("measure", max_tokens=20)
    local.reset()
    s.budget_usd = first.cost_usd * 2.4
    with pytest.warns(BudgetWarning):
        s.chat("measure", max_tokens=20)
    with pytest.raises(holynb.BudgetExceededError) as info:
        s.chat("measure", max_tokens=20)
    assert local.stats.requests == 1  # the refused call was never sent
    assert info.value.spent_usd == pytest.approx(first.cost_usd * 2)
    assert "max_tokens" in str(info.value)


def test_budget_holds_for_concurrent_calls(local):
    s = session_for(local, prices=PRICES)
    one = s.estimate("q", max_tokens=30).cost_usd
    s.budget_usd = one * 3.5

    async def main():
        out = await asyncio.gather(
            *(s.achat("q", max_tokens=30) for _ in range(8)), return_exceptions=True
        )
        await s.aclose()
        return out

    local.reset()
    results = asyncio.run(main())
    sent = [r for r in results if isinstance(r, holynb.ChatResult)]
    refused = [r for r in results if isinstance(r, holynb.BudgetExceededError)]
    assert len(sent) == 3 and len(refused) == 5
    assert local.stats.requests == 3
    assert s.total_cost_usd <= s.budget_usd


def test_estimate_counts_prompt_offline_and_max_tokens(local):
    s = session_for(local, prices=PRICES)
    est = s.estimate("How many tokens is this?", max_tokens=100)
    assert est.max_completion_tokens == 100
    assert 5 <= est.prompt_tokens <= 20
    assert est.cost_usd == pytest.approx(usd(est.prompt_tokens, 100))
    real = s.chat("How many tokens is this?")
    assert abs(real.usage.prompt_tokens - est.prompt_tokens) <= 6


def test_log_survives_a_new_session(local, tmp_path):
    path = tmp_path / "calls.sqlite"
    s = session_for(local, prices=PRICES, log_path=path)
    s.chat("one")
    list(s.stream("two"))
    local.faults.push(faults.status(400))
    with pytest.raises(holynb.BadRequestError):
        s.chat("three")
    s.close()
    again = session_for(local, prices=PRICES, log_path=path)
    assert len(again.records) == 3
    assert again.total_cost_usd == pytest.approx(s.total_cost_usd)
    assert again.records == s.records
    again.chat("four")
    assert len(session_for(local, log_path=path).records) == 4


def test_concurrent_calls_never_corrupt_the_log(local, tmp_path):
    path = tmp_path / "calls.sqlite"
    s = session_for(local, log_path=path, concurrency=16)

    async def main():
        await asyncio.gather(*(s.achat(f"q{i}") for i in range(60)))
        await s.aclose()

    asyncio.run(main())
    s.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(session_for(local, log_path=path).records) == 60


KILLED_WRITER = textwrap.dedent(
    """
    import sys, holynb
    s = holynb.Session(model="local/echo", base_url=sys.argv[1], log_path=sys.argv[2],
                       prices={"local/echo": {"input": 3.0, "output": 15.0}})
    for i in range(10_000):
        s.chat(f"call {i}")
        print(i + 1, f"{s.total_cost_usd:.10f}", flush=True)
    """
)


def test_kill_9_mid_run_loses_no_completed_row(local, tmp_path):
    path = tmp_path / "calls.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, local.base_url, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=key_env(local),
    )
    lines = []
    deadline = time.monotonic() + 30
    while len(lines) < 40 and time.monotonic() < deadline:
        lines.append(proc.stdout.readline().split())
    proc.kill()
    proc.wait()
    done, cost = int(lines[-1][0]), float(lines[-1][1])
    reloaded = session_for(local, log_path=path, prices=PRICES)
    assert len(reloaded.records) >= done
    rows_reported = reloaded.records[:done]
    assert sum(r.cost_usd for r in rows_reported) == pytest.approx(cost)


def test_summary_per_model(local):
    s = session_for(local, prices=PRICES)
    for i in range(4):
        s.chat(f"q{i}")
    list(s.stream("streamed"))
    local.faults.push(faults.status(404))
    with pytest.raises(holynb.NotFoundError):
        s.chat("x")
    summary = s.summary()
    row = summary.iloc[0]
    assert row["model"] == "local/echo"
    assert row["calls"] == 6 and row["ok"] == 5
    assert row["success_rate"] == pytest.approx(5 / 6)
    assert row["cost_usd"] == pytest.approx(s.total_cost_usd)
    assert row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
    assert row["ttft_p50_ms"] > 0


def test_session_html_is_a_compact_escaped_table(local):
    local.register_model("<b>evil</b>", lambda messages, params: "hi")
    s = session_for(local, model="<b>evil</b>", prices={"<b>evil</b>": {"input": 1, "output": 1}})
    s.chat("x")
    page = s._repr_html_()
    assert "<table>" in page and "&lt;b&gt;evil&lt;/b&gt;" in page and "<b>evil</b>" not in page
    assert "cost=$" in repr(s)


def test_plot_returns_a_figure(local):
    pytest.importorskip("matplotlib")
    s = session_for(local, prices=PRICES)
    s.chat("a")
    s.chat("b")
    fig = s.plot()
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title() == "Cumulative cost (USD)"
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"\d\d:\d\d(:\d\d(\.\d{1,6})?)?", t) for t in labels), labels
    money = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert money and all(t.startswith("$") for t in money), money


def test_plot_says_how_many_calls_have_no_price(local):
    pytest.importorskip("matplotlib")
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    s = session_for(local, model="mystery/model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownPriceWarning)
        s.chat("a")
    assert "+ 1 call without a price" in s.plot().axes[0].get_title()


def test_a_session_where_nothing_has_a_price_says_cost_unknown(local):
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    s = session_for(local, model="mystery/model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownPriceWarning)
        s.chat("one")
        s.chat("two")
    assert s.cost_summary() == "cost unknown (2 calls without a price)"
    assert "$0.00" not in repr(s) and "$0.00" not in s._repr_html_()


def test_cost_summary_of_a_frame_says_cost_unknown_when_no_row_has_a_price(local):
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    s = session_for(local, model="mystery/model", prices=PRICES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownPriceWarning)
        unpriced = s.map(["a", "b", "c"], progress=False)
    priced = s.map(["a", "b"], model="local/echo", progress=False)
    assert holynb.cost_summary(unpriced) == "cost unknown (3 calls without a price)"
    assert holynb.cost_summary(priced) == money(priced["cost_usd"].sum())
    both = pd.concat([unpriced, priced])
    assert (
        holynb.cost_summary(both) == f"{money(priced['cost_usd'].sum())} + 3 calls without a price"
    )


def test_map_progress_says_cost_unknown_for_a_model_without_a_price(local, capsys):
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    s = session_for(local, model="mystery/model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownPriceWarning)
        s.map(["a", "b", "c"])
    err = capsys.readouterr().err
    assert "cost unknown" in err and "cost=$0.0000" not in err
