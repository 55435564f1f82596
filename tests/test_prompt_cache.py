"""Prompt caching in Anthropic's format: cache_control on the stable prefix, writes and reads
reported by the local server, priced at 1.25x / 2x input and 0.1x."""

from __future__ import annotations

import anthropic
import pytest

import holynb
from tests.helpers import magic_shell, run_cell, session_for

RULES = "You are a careful classifier. " * 40  # a long, stable system prompt
PRICED = {"local/echo": {"input": 2.0, "output": 8.0}}
CONTROL_1H = {"type": "ephemeral", "ttl": "1h"}


def claude(local, **kwargs) -> holynb.Session:
    return session_for(local, api="anthropic", prices=PRICED, **kwargs)


def test_prompt_cache_marks_the_system_prompt_with_its_ttl(local):
    claude(local).chat("hi", system=RULES, prompt_cache="1h", max_tokens=5)
    body = local.requests_log[-1]["body"]
    assert body["system"] == [{"type": "text", "text": RULES, "cache_control": CONTROL_1H}]
    assert "prompt_cache" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]  # the new turn is not marked


def test_prompt_cache_marks_the_end_of_the_conversation_prefix(local):
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    claude(local).chat(messages, prompt_cache="5m", max_tokens=5)
    sent = local.requests_log[-1]["body"]["messages"]
    assert sent[1]["content"] == [
        {
            "type": "text",
            "text": "first answer",
            "cache_control": {"type": "ephemeral", "ttl": "5m"},
        }
    ]
    assert sent[0]["content"] == "first question" and sent[2]["content"] == "second question"


def test_prompt_cache_keeps_within_four_breakpoints(local):
    marked = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    messages = [
        {"role": "system", "content": [marked, marked, marked]},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    claude(local).chat(messages, prompt_cache="5m", max_tokens=5)
    body = local.requests_log[-1]["body"]
    marks = sum("cache_control" in b for b in body["system"])
    marks += sum(
        "cache_control" in b
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
    )
    assert marks == 4


def test_session_prompt_cache_is_every_calls_default(local):
    s = claude(local, prompt_cache="1h")
    s.chat("hi", system=RULES + "session", max_tokens=5)
    assert local.requests_log[-1]["body"]["system"][0]["cache_control"] == CONTROL_1H
    s.chat("hi", system=RULES + "session", max_tokens=5, prompt_cache=None)
    assert local.requests_log[-1]["body"]["system"] == RULES + "session"


def test_prompt_cache_changes_nothing_in_openai_format(local):
    s = session_for(local, prompt_cache="1h")
    s.chat("hi", system=RULES, prompt_cache="1h", max_tokens=5)
    body = local.requests_log[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": RULES}
    assert "prompt_cache" not in body


def test_a_bad_prompt_cache_is_refused_before_sending(local):
    with pytest.raises(holynb.ConfigurationError, match="5m"):
        claude(local).chat("hi", system=RULES, prompt_cache="2h", max_tokens=5)
    assert local.stats.requests == 0


def test_a_1h_write_then_a_read_are_priced_and_in_the_ledger(local):
    s = claude(local)
    first = s.chat("one", system=RULES + "1h", prompt_cache="1h", max_tokens=5)
    second = s.chat("two", system=RULES + "1h", prompt_cache="1h", max_tokens=5)
    u1, u2 = first.usage, second.usage
    assert u1.cache_write_tokens > 0 and u1.cached_tokens == 0
    assert u2.cached_tokens == u1.cache_write_tokens and u2.cache_write_tokens == 0
    fresh1 = u1.prompt_tokens - u1.cache_write_tokens
    assert first.cost_usd == pytest.approx(
        (fresh1 * 2.0 + u1.cache_write_tokens * 4.0 + u1.completion_tokens * 8.0) / 1e6
    )  # a 1h write: 2x the $2 input price
    fresh2 = u2.prompt_tokens - u2.cached_tokens
    assert second.cost_usd == pytest.approx(
        (fresh2 * 2.0 + u2.cached_tokens * 0.2 + u2.completion_tokens * 8.0) / 1e6
    )  # a read: 0.1x
    ledger = s.ledger
    assert list(ledger["cache_write_tokens"]) == [u1.cache_write_tokens, 0]
    assert list(ledger["cached_tokens"]) == [0, u2.cached_tokens]
    assert list(ledger["cache_ttl"]) == ["1h", "1h"]


def test_a_5m_write_costs_125_percent_of_input(local):
    s = claude(local)
    r = s.chat("one", system=RULES + "5m", prompt_cache="5m", max_tokens=5)
    u = r.usage
    fresh = u.prompt_tokens - u.cache_write_tokens
    assert u.cache_write_tokens > 0
    assert r.cost_usd == pytest.approx(
        (fresh * 2.0 + u.cache_write_tokens * 2.5 + u.completion_tokens * 8.0) / 1e6
    )


def test_model_cache_prices_win_over_the_factors(local):
    prices = {"local/echo": {"input": 2.0, "output": 8.0, "cached_input": 0.5, "cache_write": 3.0}}
    s = session_for(local, api="anthropic", prices=prices)
    s.chat("one", system=RULES + "own", prompt_cache="5m", max_tokens=5)
    r = s.chat("two", system=RULES + "own", prompt_cache="5m", max_tokens=5)
    u = r.usage
    fresh = u.prompt_tokens - u.cached_tokens
    assert r.cost_usd == pytest.approx(
        (fresh * 2.0 + u.cached_tokens * 0.5 + u.completion_tokens * 8.0) / 1e6
    )


def test_streamed_call_reports_the_cache_too(local):
    s = claude(local)
    s.chat("one", system=RULES + "stream", prompt_cache="5m", max_tokens=5)
    stream = s.stream("two", system=RULES + "stream", prompt_cache="5m", max_tokens=5)
    "".join(stream)
    assert stream.result.usage.cached_tokens > 0


def test_the_reservation_counts_the_write_premium(local):
    s = claude(local)
    call = s.caller.call("hi", system=RULES, max_tokens=5, params={"prompt_cache": "1h"})
    plain = s.caller.call("hi", system=RULES, max_tokens=5)
    marked, unmarked = s.meter.bounds.usd(call.body), s.meter.bounds.usd(plain.body)
    assert marked > unmarked * 1.5  # the whole prompt may be a 2x write
    s.budget_usd = (marked + unmarked) / 2
    with pytest.raises(holynb.BudgetExceededError):
        s.chat("hi", system=RULES, max_tokens=5, prompt_cache="1h")
    assert local.stats.requests == 0


def test_map_and_compare_take_prompt_cache(local):
    s = claude(local)
    s.map(["a", "b"], system=RULES + "map", prompt_cache="5m", max_tokens=3, progress=False)
    s.compare(["c"], models=["local/echo"], system=RULES + "map", prompt_cache="5m",
              max_tokens=3, progress=False)  # fmt: skip
    systems = [e["body"]["system"] for e in local.requests_log]
    assert all(sys_[0]["cache_control"]["ttl"] == "5m" for sys_ in systems)
    assert s.ledger["cached_tokens"].gt(0).sum() >= 1  # a later one read the first's write


def test_anthropic_sdk_sees_cache_writes_and_reads(server):
    server.reset()
    key = server.api_key.get()
    client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)
    system = [{"type": "text", "text": RULES + "sdk", "cache_control": {"type": "ephemeral"}}]
    messages = [{"role": "user", "content": "hi"}]
    first = client.messages.create(
        model="local/echo", max_tokens=5, system=system, messages=messages
    )
    second = client.messages.create(
        model="local/echo", max_tokens=5, system=system, messages=messages
    )
    assert first.usage.cache_creation_input_tokens > 0
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0


def test_magic_prompt_cache_option_reaches_the_request(local):
    for shell in magic_shell(claude(local)):
        run_cell(shell, f'%%llm --prompt-cache 1h -s "{RULES[:60]}" --max-tokens 3\nhi')
        system = local.requests_log[-1]["body"]["system"]
        assert system[0]["cache_control"] == CONTROL_1H
