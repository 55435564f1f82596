"""Service tiers (OpenAI's format): sent as asked, priced by the tier the answer reports."""

from __future__ import annotations

import warnings

import openai
import pytest

import holynb
from holynb.prices import PriceTable, UnknownPriceWarning
from holynb.results import Usage
from holynb.server import faults
from tests.helpers import magic_shell, run_cell, session_for

PRICED = {"local/echo": {"input": 2.0, "output": 8.0}}


def _full(usage: Usage) -> float:
    return (usage.prompt_tokens * 2.0 + usage.completion_tokens * 8.0) / 1e6


def test_service_tier_is_sent_as_asked(local):
    s = session_for(local)
    s.chat("hi", service_tier="flex", max_tokens=5)
    assert local.requests_log[-1]["body"]["service_tier"] == "flex"


def test_session_service_tier_is_the_default_and_a_call_overrides_it(local):
    s = session_for(local, service_tier="flex")
    s.chat("hi", max_tokens=5)
    assert local.requests_log[-1]["body"]["service_tier"] == "flex"
    s.chat("hi", max_tokens=5, service_tier="default")
    assert local.requests_log[-1]["body"]["service_tier"] == "default"
    assert s.derive(model="local/echo").caller.service_tier == "flex"


def test_no_service_tier_sends_none(local):
    session_for(local).chat("hi", max_tokens=5)
    assert "service_tier" not in local.requests_log[-1]["body"]


def test_flex_answer_is_priced_at_half(local):
    s = session_for(local, prices=PRICED)
    r = s.chat("hello there", service_tier="flex", max_tokens=5)
    assert r.usage.service_tier == "flex"
    assert r.cost_usd == pytest.approx(_full(r.usage) / 2)


def test_flex_asked_and_default_answered_costs_the_full_price(local):
    s = session_for(local, prices=PRICED)
    local.faults.push(faults.service_tier("default"))
    r = s.chat("hello there", service_tier="flex", max_tokens=5)
    assert r.usage.service_tier == "default"
    assert r.cost_usd == pytest.approx(_full(r.usage))


def test_a_tier_holynb_cannot_price_costs_none_with_one_warning(local):
    s = session_for(local, prices=PRICED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = s.chat("a", service_tier="priority", max_tokens=5)
        second = s.chat("b", service_tier="priority", max_tokens=5)
    assert first.cost_usd is None and second.cost_usd is None
    told = [w for w in caught if issubclass(w.category, UnknownPriceWarning)]
    assert len(told) == 1 and "priority" in str(told[0].message)


def test_streamed_flex_answer_is_priced_by_its_tier(local):
    s = session_for(local, prices=PRICED)
    stream = s.stream("hello there", service_tier="flex", max_tokens=5)
    "".join(stream)
    r = stream.result
    assert r.usage.service_tier == "flex"
    assert r.cost_usd == pytest.approx(_full(r.usage) / 2)


def test_map_and_compare_take_service_tier(local):
    s = session_for(local, prices=PRICED)
    df = s.map(["a", "b"], service_tier="flex", max_tokens=3, progress=False)
    cmp = s.compare(["a"], models=["local/echo"], service_tier="flex", max_tokens=3,
                    progress=False)  # fmt: skip
    bodies = [e["body"] for e in local.requests_log]
    assert [b["service_tier"] for b in bodies] == ["flex"] * 3
    assert list(s.ledger["service_tier"]) == ["flex"] * 3
    assert df["cost_usd"].notna().all() and cmp["cost_usd"].notna().all()


def test_ledger_keeps_service_tier_across_a_restart(local, tmp_path):
    log = tmp_path / "log.sqlite"
    s = session_for(local, prices=PRICED, log_path=log)
    s.chat("hi", service_tier="flex", max_tokens=5)
    s.close()
    again = session_for(local, prices=PRICED, log_path=log)
    assert list(again.ledger["service_tier"]) == ["flex"]


def test_flex_call_reserves_the_full_price(local):
    s = session_for(local, prices=PRICED)
    body = s.caller.call("hello there", max_tokens=50, params={"service_tier": "flex"}).body
    full = s.meter.bounds.usd(body)
    s.budget_usd = full * 0.75  # the flex price (half) fits, the full price does not
    with pytest.raises(holynb.BudgetExceededError):
        s.chat("hello there", max_tokens=50, service_tier="flex")
    assert local.stats.requests == 0


def test_a_tier_holynb_cannot_price_is_refused_under_a_budget(local):
    s = session_for(local, prices=PRICED, budget_usd=1.0)
    with pytest.raises(holynb.BudgetExceededError, match="priority"):
        s.chat("hello", max_tokens=5, service_tier="priority")
    assert local.stats.requests == 0


def test_official_flex_price_comes_from_the_price_data():
    import genai_prices

    table = PriceTable()
    usage = Usage(prompt_tokens=1000, completion_tokens=500, service_tier="flex")
    counted = genai_prices.Usage(input_tokens=1000, output_tokens=500)
    flex = genai_prices.calc_price(
        counted, "gpt-5", provider_id="openai", price_context={"service_tier": "flex"}
    )
    assert table.cost("gpt-5", usage) == pytest.approx(float(flex.total_price))
    # gpt-4.1 has no flex price in the data: half its default price
    plain = table.cost("gpt-4.1", Usage(prompt_tokens=1000, completion_tokens=500))
    assert table.cost("gpt-4.1", usage) == pytest.approx(plain / 2)


def test_default_and_auto_tiers_cost_the_default_price():
    table = PriceTable(PRICED)
    plain = table.cost("local/echo", Usage(prompt_tokens=1000, completion_tokens=500))
    for tier in ("default", "auto", "standard"):
        usage = Usage(prompt_tokens=1000, completion_tokens=500, service_tier=tier)
        assert table.cost("local/echo", usage) == plain


def test_openai_sdk_service_tier_against_the_local_server(server):
    key = server.api_key.get()
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
        messages = [{"role": "user", "content": "hi"}]
        r = client.chat.completions.create(
            model="local/echo", messages=messages, service_tier="flex"
        )
        assert r.service_tier == "flex"
        auto = client.chat.completions.create(
            model="local/echo", messages=messages, service_tier="auto"
        )
        assert auto.service_tier == "default"
        chunks = list(
            client.chat.completions.create(
                model="local/echo", messages=messages, service_tier="flex", stream=True
            )
        )
        assert {c.service_tier for c in chunks} == {"flex"}


def test_magic_service_tier_option_reaches_the_request(local):
    for shell in magic_shell(session_for(local)):
        run_cell(shell, "%%llm --service-tier flex --max-tokens 3\nhi")
        assert local.requests_log[-1]["body"]["service_tier"] == "flex"
