"""Prices: the relay table, your own prices, genai-prices, and what a call cost (to the cent)."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, date, datetime
from importlib import resources

import pytest

from holynb.errors import ConfigurationError
from holynb.prices import ModelPrice, PriceTable, UnknownPriceWarning, is_relay_url
from holynb.results import Usage
from tests.helpers import run_without_network

RELAY = "https://api.holysheep.ai/v1"
OPENAI = "https://api.openai.com/v1"
# genai-prices knows price history: pin the moment so the expected values never drift.
NOV_2026 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def usage(prompt: int = 1000, completion: int = 500, cached: int = 0, reasoning: int = 0) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )


def unknown_price_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UnknownPriceWarning)]


# -- the relay table --------------------------------------------------------------------------


def test_relay_gpt41_costs_8_in_and_32_out_per_million() -> None:
    table = PriceTable.default(RELAY)
    assert table.cost("gpt-4.1", usage(1000, 500)) == pytest.approx(0.024, abs=1e-9)


def test_relay_table_covers_the_four_models_the_articles_price() -> None:
    table = PriceTable.default(RELAY)
    prices = {
        m: table.lookup(m)
        for m in ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-flash", "deepseek-v3.2")
    }
    assert {m: (p.input, p.output) for m, p in prices.items() if p} == {
        "gpt-4.1": (8.0, 32.0),
        "claude-sonnet-4-5": (15.0, 75.0),
        "gemini-2.5-flash": (2.5, 10.0),
        "deepseek-v3.2": (0.42, 1.68),
    }


def test_relay_prices_are_dated_and_name_their_source() -> None:
    price = PriceTable.default(RELAY).lookup("gpt-4.1")
    assert price is not None
    assert price.as_of == date(2026, 11, 22)
    assert "002" in price.source and "disputed" in price.source


def test_relay_data_file_lists_the_seed_articles_and_says_they_disagree() -> None:
    text = resources.files("holynb").joinpath("data/relay_prices.json").read_text("utf-8")
    data = json.loads(text)
    assert len(data["source"]) == 5
    assert all(name.endswith(".txt") for name in data["source"])
    assert "disagree" in data["note"]


def test_relay_table_applies_only_when_the_base_url_is_the_relay() -> None:
    assert is_relay_url(RELAY)
    assert not is_relay_url(OPENAI)
    official = PriceTable.default(OPENAI).lookup("gpt-4.1", at=NOV_2026)
    assert official is not None and official.input == 2.0


def test_dated_model_names_get_their_models_relay_price() -> None:
    table = PriceTable.default(RELAY)
    assert table.cost("gpt-4.1-2025-04-14", usage()) == pytest.approx(0.024, abs=1e-9)


# -- how usage is charged -----------------------------------------------------------------------


def test_cached_tokens_are_charged_at_the_cached_price() -> None:
    table = PriceTable({"my-model": {"input": 3.0, "output": 15.0, "cached_input": 0.3}})
    # 6,000 uncached x $3 + 4,000 cached x $0.30 + 1,000 out x $15, per million = $0.0342
    cost = table.cost("my-model", usage(prompt=10_000, completion=1_000, cached=4_000))
    assert cost == pytest.approx(0.0342, abs=1e-9)


def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_known() -> None:
    table = PriceTable.default(RELAY)
    assert table.cost("gpt-4.1", usage(1000, 500, cached=400)) == pytest.approx(0.024, abs=1e-9)


def test_reasoning_tokens_are_not_charged_twice() -> None:
    table = PriceTable.default(RELAY)
    assert table.cost("gpt-4.1", usage(1000, 500, reasoning=300)) == pytest.approx(0.024)


def test_batch_calls_cost_half_by_default() -> None:
    table = PriceTable.default(RELAY)
    assert table.cost("gpt-4.1", usage(), batch=True) == pytest.approx(0.012, abs=1e-9)


def test_batch_calls_cost_what_the_table_says() -> None:
    table = PriceTable({"m": {"input": 8.0, "output": 32.0, "batch_discount": 0.25}})
    assert table.cost("m", usage(), batch=True) == pytest.approx(0.018, abs=1e-9)


def test_local_demo_models_are_free_and_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PriceTable.default("http://127.0.0.1:8000/v1").cost("local/echo", usage()) == 0.0


# -- your own prices ----------------------------------------------------------------------------


def test_your_prices_win_over_the_relay_table() -> None:
    table = PriceTable.default(RELAY, prices={"gpt-4.1": {"input": 2.0, "output": 8.0}})
    assert table.cost("gpt-4.1", usage()) == pytest.approx(0.006, abs=1e-9)


def test_set_adds_a_price_in_one_line() -> None:
    table = PriceTable(official=False)
    table.set("my-model", input=3.0, output=15.0, cached_input=0.3)
    price = table.lookup("MY-MODEL")
    assert price is not None and (price.input, price.output, price.cached_input) == (3, 15, 0.3)
    assert price.source == "user" and price.as_of == date.today()


@pytest.mark.parametrize(
    ("prices", "says"),
    [
        ({"m": {"input": -1.0, "output": 1.0}}, "input must be a finite number >= 0"),
        ({"m": {"input": 1.0}}, "lacks 'output'"),
        ({"m": {"input": 1.0, "output": 2.0, "inptu": 3.0}}, "Unknown price key(s) 'inptu'"),
        ({"m": {"input": "3", "output": 1.0}}, "input must be a number"),
        ({"m": {"input": True, "output": 1.0}}, "input must be a number"),
        ({"m": {"input": float("nan"), "output": 1.0}}, "finite"),
        ({"m": {"input": 1.0, "output": 1.0, "batch_discount": 2}}, "from 0 (no discount)"),
        ({"m": 3.0}, "must be a dict like"),
        ({"": {"input": 1.0, "output": 1.0}}, "non-empty string"),
        ([("m", 1.0)], "prices must be a dict"),
    ],
)
def test_bad_prices_are_refused_with_a_message_naming_the_problem(
    prices: object, says: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        PriceTable(prices, official=False)  # type: ignore[arg-type]
    assert says in str(raised.value)


def test_a_bad_entry_leaves_the_table_as_it_was() -> None:
    table = PriceTable({"a": {"input": 1.0, "output": 1.0}}, official=False)
    with pytest.raises(ConfigurationError):
        table.update({"b": {"input": 2.0, "output": 2.0}, "c": {"input": -2.0, "output": 2.0}})
    assert table.lookup("a") is not None and table.lookup("b") is None


# -- unknown prices -----------------------------------------------------------------------------


def test_unknown_model_costs_none_and_warns_exactly_once() -> None:
    table = PriceTable(official=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert table.cost("mystery-model", usage()) is None
        assert table.cost("mystery-model", usage()) is None
    messages = unknown_price_warnings(caught)
    assert len(messages) == 1
    assert "mystery-model" in messages[0] and "Session(prices={" in messages[0]
    assert issubclass(UnknownPriceWarning, UserWarning)


def test_each_table_warns_once_for_each_unknown_model() -> None:
    first, second = PriceTable(official=False), PriceTable(official=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for table in (first, second, first, second):
            table.cost("x-model", usage())
            table.cost("y-model", usage())
    assert len(unknown_price_warnings(caught)) == 4


def test_unknown_model_with_genai_prices_too_costs_none() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert PriceTable.default(RELAY).cost("my-finetune-xyz", usage()) is None
    assert len(unknown_price_warnings(caught)) == 1


def test_a_price_set_after_the_warning_is_used() -> None:
    table = PriceTable(official=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert table.cost("late", usage()) is None
    table.set("late", input=8.0, output=32.0)
    assert table.cost("late", usage()) == pytest.approx(0.024, abs=1e-9)


# -- genai-prices -------------------------------------------------------------------------------


def test_openai_endpoint_prices_a_model_missing_from_the_relay_table_with_genai_prices() -> None:
    table = PriceTable.default(OPENAI)
    # gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out per million.
    # 600 x 0.15 + 400 x 0.075 + 500 x 0.60 = 420 micro-dollars.
    cost = table.cost("gpt-4o-mini", usage(1000, 500, cached=400), at=NOV_2026)
    assert cost == pytest.approx(0.00042, abs=1e-9)
    price = table.lookup("gpt-4o-mini", at=NOV_2026)
    assert price is not None and price.source.startswith("genai-prices")


def test_genai_prices_batch_uses_its_batch_price_table() -> None:
    table = PriceTable.default(OPENAI)
    # From 2026-10-14 the data has gpt-4.1 batch prices: $1 in, $4 out, cached input unchanged
    # ($0.50): 600 x 1 + 400 x 0.5 + 500 x 4 = 2,800 micro-dollars (half of $0.0054 is $0.0027).
    cost = table.cost("gpt-4.1", usage(1000, 500, cached=400), batch=True, at=NOV_2026)
    assert cost == pytest.approx(0.0028, abs=1e-9)


def test_genai_prices_batch_without_a_batch_price_is_half_price() -> None:
    table = PriceTable.default(OPENAI)
    before_batch_data = datetime(2026, 1, 1, tzinfo=UTC)
    cost = table.cost("gpt-4.1", usage(1000, 500, cached=400), batch=True, at=before_batch_data)
    assert cost == pytest.approx(0.0027, abs=1e-9)


def test_genai_prices_applies_long_context_tiers() -> None:
    table = PriceTable.default("https://api.anthropic.com/v1")
    # claude-sonnet-4-5: $3/$15 up to 200k prompt tokens, $6/$22.50 for the whole call above.
    assert table.cost("claude-sonnet-4-5", usage(200_000, 1000), at=NOV_2026) == pytest.approx(
        0.615, abs=1e-9
    )
    assert table.cost("claude-sonnet-4-5", usage(200_001, 1000), at=NOV_2026) == pytest.approx(
        1.222506, abs=1e-9
    )


@pytest.mark.parametrize(
    ("name", "provider"),
    [
        ("gpt-4.1", "openai"),
        ("openai/gpt-4.1", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
        ("anthropic/claude-sonnet-4.5", "anthropic"),
        ("gemini-2.5-flash", "google"),
        ("google/gemini-2.5-flash", "google"),
        ("deepseek-chat", "deepseek"),
        ("deepseek-v3.2", "deepseek"),
    ],
)
def test_relay_style_names_are_found_in_genai_prices(name: str, provider: str) -> None:
    price = PriceTable().lookup(name, at=NOV_2026)
    assert price is not None and f": {provider} " in price.source


def test_genai_prices_loads_lazily_and_never_uses_the_network() -> None:
    script = """
import os, sys, tempfile
os.environ["HOLYNB_HOME"] = tempfile.mkdtemp()  # no price card yet: genai-prices is needed
from holynb.prices import PriceTable
from holynb.results import Usage
mine = {"mine": {"input": 1, "output": 1}}
table = PriceTable.default("https://api.holysheep.ai/v1", prices=mine)
for model in ("gpt-4.1", "mine", "local/echo"):
    table.cost(model, Usage(prompt_tokens=10, completion_tokens=10))
assert "genai_prices" not in sys.modules, "genai-prices imported for a relay/user/local price"
assert table.cost("gpt-4o-mini", Usage(prompt_tokens=10, completion_tokens=10)) > 0
assert "genai_prices" in sys.modules
__import__("shutil").rmtree(os.environ["HOLYNB_HOME"])
"""
    run_without_network(script)


def test_model_price_rejects_a_discount_above_one() -> None:
    with pytest.raises(ConfigurationError, match="batch_discount"):
        ModelPrice(input=1.0, output=1.0, batch_discount=1.5)


def test_pricing_another_model_does_not_repeat_a_warning() -> None:
    table = PriceTable(official=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table.cost("mystery", usage())
        table.set("other", input=1.0, output=1.0)
        table.cost("MYSTERY", usage())
    assert len(unknown_price_warnings(caught)) == 1
