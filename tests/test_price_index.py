"""The index of genai-prices' model names: it says no only where genai-prices has no price, it
is rebuilt for another genai-prices, and with it an unknown model never imports genai-prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from genai_prices.data_snapshot import get_snapshot

from holynb import price_index
from tests.helpers import run_without_network

UNKNOWN = ["bench", "my-finetune-xyz", "local-llama", "acme/gizmo-7b"]


def genai_prices_finds(name: str) -> bool:
    """Whether any genai-prices provider (with its fallbacks) has a model for ``name``."""
    providers = get_snapshot().providers
    return any(p.find_model(name, all_providers=providers) is not None for p in providers)


def names_in_the_data() -> list[str]:
    """Every model id and every exact name in genai-prices' match rules, a few as other tools
    write them (upper case, a compact date), and names it does not know."""
    names: set[str] = set()

    def exact(clause: object) -> None:
        if hasattr(clause, "equals"):
            names.add(clause.equals)
        for sub in getattr(clause, "or_", None) or getattr(clause, "and_", None) or ():
            exact(sub)

    for provider in get_snapshot().providers:
        for model in provider.models:
            names.add(model.id)
            exact(model.match)
    names |= {"GPT-4o-mini", "claude-3-5-sonnet-20241022", "gpt-4o-2024-08-06", *UNKNOWN}
    return sorted(names)


@pytest.fixture(scope="module")
def index() -> price_index.PriceIndex:
    return price_index.build("test")


def test_the_index_may_price_every_name_genai_prices_finds(index: price_index.PriceIndex) -> None:
    names = names_in_the_data()
    missed = [n for n in names if genai_prices_finds(n) and not index.may_price(n)]
    assert not missed, f"the index would refuse names genai-prices prices: {missed[:10]}"
    assert len(names) > 1000


def test_the_index_says_no_for_names_genai_prices_does_not_know(
    index: price_index.PriceIndex,
) -> None:
    for name in UNKNOWN:
        assert not genai_prices_finds(name)
        assert not index.may_price(name), name


def test_the_index_round_trips_through_its_file(
    index: price_index.PriceIndex, tmp_path: Path
) -> None:
    again = price_index.PriceIndex("test", json.loads(json.dumps(index.to_json()))["rules"])
    for name in names_in_the_data():
        assert again.may_price(name) == index.may_price(name), name


def test_the_index_is_rebuilt_when_genai_prices_version_differs(tmp_path: Path) -> None:
    path = tmp_path / "genai_prices_index.json"
    stale = {"format": price_index.FORMAT, "key": "0.0.1:1:1", "rules": [["equals", "old"]]}
    path.write_text(json.dumps(stale))
    script = f"""
import json
from pathlib import Path
from holynb import price_index
path = Path({str(path)!r})
if "read" in {{"MODE"}}:
    index = price_index.current(create=False, path=path)
    assert index is not None and index.key == price_index.stamp(), index
    assert index.may_price("gpt-4o") and not index.may_price("old")
else:
    price_index.current(path=path)  # the stale file is not used: a new index is built
    assert json.loads(path.read_text())["key"] == price_index.stamp() != "0.0.1:1:1"
"""
    run_without_network(script.replace("MODE", "build"))
    run_without_network(script.replace("MODE", "read"))


def test_an_unknown_model_costs_none_without_importing_genai_prices(tmp_path: Path) -> None:
    script = f"""
import os, sys, warnings
os.environ["HOLYNB_HOME"] = {str(tmp_path)!r}
from holynb.prices import PriceTable
from holynb.results import Usage
from holynb import price_index
warnings.simplefilter("ignore")
table = PriceTable.default("http://127.0.0.1:9/v1")
if sys.argv[-1] == "first":  # as a Session does: genai-prices imported ahead (no index yet)
    assert table.needs_genai_prices("bench")
    import genai_prices
    assert table.cost("bench", Usage(prompt_tokens=10, completion_tokens=10)) is None
else:
    assert not table.needs_genai_prices("bench")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert table.cost("bench", Usage(prompt_tokens=10, completion_tokens=10)) is None
    assert "holynb knows no price for model 'bench'" in str(caught[0].message)
    assert table.context_window("bench") is None
    assert "genai_prices" not in sys.modules, "genai-prices imported for a model it cannot price"
    assert table.needs_genai_prices("gpt-4o-mini")
"""
    run_without_network(script.replace("sys.argv[-1]", '"first"'))  # builds the index
    assert (tmp_path / "genai_prices_index.json").is_file()
    run_without_network(script)
