"""Price cards: genai-prices' answers kept for the names a machine used. Over genai-prices'
whole data a card prices exactly as genai-prices does, and with one a fresh process prices a
call without importing genai-prices."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from genai_prices.data_snapshot import get_snapshot

from holynb import price_cards
from holynb.prices import ModelPrice, _card_for, _Official, _official_cost, _official_price
from holynb.results import Usage
from holynb.server import LocalServer
from tests.helpers import CHILD_ENV

NOW = datetime.now(UTC)


def token_priced_models() -> list[_Official]:
    found = []
    for provider in get_snapshot().providers:
        for model in provider.models:
            if model.get_prices(NOW).input_mtok is not None:
                found.append(_Official(model, provider))
    return found


def usages(card: price_cards.Card, rng: random.Random) -> Iterator[Usage]:
    """Usages in every band of ``card``, on both sides of each tier's start, with cache reads
    and writes and Anthropic's cache lifetimes."""
    prompts = [0, 1, 977, 123_457, 2_345_679]
    for above, _ in card.bands:
        if above >= 0:
            prompts += [above, above + 1, above + rng.randrange(1, 50_000)]
    for prompt in prompts:
        cached = rng.randrange(prompt + 1)
        written = rng.randrange(prompt - cached + 1)
        answer = rng.randrange(40_000)
        yield Usage(prompt, completion_tokens=answer)
        yield Usage(prompt, completion_tokens=answer, cached_tokens=cached)
        for ttl in (None, "5m", "1h"):
            yield Usage(
                prompt,
                completion_tokens=answer,
                cached_tokens=cached,
                cache_write_tokens=written,
                cache_ttl=ttl,
            )


def test_a_card_prices_every_model_of_genai_prices_exactly_as_genai_prices_does():
    rng = random.Random(7)
    carded, compared = 0, 0
    for found in token_priced_models():
        card = _card_for(found, NOW)
        if card is None:
            continue
        carded += 1
        for usage in usages(card, rng):
            ours = _official_cost(card, usage, False, NOW)
            theirs = _official_cost(found, usage, False, NOW)
            assert ours == theirs, (found.provider.id, found.info.id, usage)
            compared += 1
        assert _official_price(card, NOW) == _official_price(found, NOW)
        window = found.info.context_window
        assert card.context_window == (window if window and window > 0 else None)
        again = price_cards.Card.from_json(json.loads(json.dumps(card.to_json())))
        assert again == card  # what is kept on disk reads back the same
    assert carded > 2000 and compared > 50_000


def test_no_card_where_the_price_is_not_a_function_of_tokens_alone():
    by_name = {(f.provider.id, f.info.id): f for f in token_priced_models()}
    for name in [("perplexity", "sonar"), ("deepseek", "deepseek-chat")]:
        found = by_name[name]  # a fee per request; a price by the time of day
        assert _card_for(found, NOW) is None, name


def test_probe_sizes_fall_inside_their_bands():
    assert price_cards.probe_sizes([]) == [(-1, 1_000_000)]
    assert price_cards.probe_sizes([200_000]) == [(-1, 100_000), (200_000, 1_000_000)]
    assert price_cards.probe_sizes([128_000, 1_000_000]) == [
        (-1, 100_000),
        (128_000, 1_000_000),
        (1_000_000, 10_000_000),
    ]
    assert price_cards.probe_sizes([200_000, 300_000]) is None  # no power of ten in between


# -- in a fresh process --------------------------------------------------------------------------

PRICED = ["gpt-4o-mini", "claude-sonnet-4-5"]  # a flat price; one with a tier above 200k


@pytest.fixture(scope="module")
def known_models() -> Iterator[LocalServer]:
    server = LocalServer()
    for name in PRICED:
        server.register_model(name, lambda messages, params: "An answer of some words.")
    with server:
        yield server


def _fresh(script: str, home: str, **values: Any) -> dict[str, Any]:
    given = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    done = subprocess.run(
        [sys.executable, "-c", given + textwrap.dedent(script)],
        env={**CHILD_ENV, "HOLYNB_HOME": home},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


ASK = """
import json, sys
import holynb
figures = {}
with holynb.Session(model=NAMES[0], base_url=BASE_URL, api_key=KEY) as s:
    for name in NAMES:
        r = s.chat("hi", model=name, max_tokens=16)
        figures[name] = [r.cost_usd, r.usage.prompt_tokens, r.usage.completion_tokens]
print(json.dumps({"figures": figures, "imported": "genai_prices" in sys.modules}))
"""


def test_a_second_process_prices_known_models_without_genai_prices(known_models, tmp_path):
    args = {"BASE_URL": known_models.base_url, "KEY": known_models.api_key.get(), "NAMES": PRICED}
    first = _fresh(ASK, str(tmp_path), **args)
    second = _fresh(ASK, str(tmp_path), **args)
    assert first["imported"] and not second["imported"]
    assert second["figures"] == first["figures"]
    assert all(cost and cost > 0 for cost, _, _ in second["figures"].values())
    kept = json.loads((tmp_path / price_cards.FILE_NAME).read_text())
    assert len(kept["cards"]) == 2


def test_what_a_card_does_not_price_is_asked_of_genai_prices(tmp_path):
    script = """
    import json, sys
    from datetime import datetime, UTC
    from holynb.prices import PriceTable
    from holynb.results import Usage
    t = PriceTable.default("https://api.openai.com/v1")
    u = Usage(1000, completion_tokens=500, cached_tokens=200)
    plain = t.cost("gpt-4o-mini", u)
    seen = {"plain": plain, "imported_plain": "genai_prices" in sys.modules}
    if CASE == "batch":
        seen["other"] = t.cost("gpt-4o-mini", u, batch=True)
    elif CASE == "tier":
        seen["other"] = t.cost("gpt-4o-mini", Usage(1000, completion_tokens=500,
                                                    service_tier="priority"))
    elif CASE == "before the card":
        seen["other"] = t.cost("gpt-4o-mini", u, at=datetime(2024, 1, 2, tzinfo=UTC))
    seen["imported"] = "genai_prices" in sys.modules
    print(json.dumps(seen))
    """
    home = str(tmp_path)
    _fresh(script, home, CASE="make the card")
    for case in ("batch", "tier", "before the card"):
        carded = _fresh(script, home, CASE=case)
        assert not carded["imported_plain"] and carded["imported"], case
        (tmp_path / "asked").mkdir(exist_ok=True)
        asked = _fresh(script, str(tmp_path / "asked"), CASE=case)  # no card: genai-prices
        assert carded["plain"] == asked["plain"] and carded["other"] == asked["other"], case


def test_a_card_file_of_another_release_or_unreadable_is_not_believed(tmp_path):
    script = """
    import json, sys
    from holynb.prices import PriceTable
    from holynb.results import Usage
    cost = PriceTable.default().cost("gpt-4o-mini", Usage(1000, completion_tokens=500))
    print(json.dumps({"cost": cost, "imported": "genai_prices" in sys.modules}))
    """
    honest = _fresh(script, str(tmp_path))
    path = tmp_path / price_cards.FILE_NAME
    kept = json.loads(path.read_text())
    (card,) = kept["cards"].values()
    card["bands"][0][1] = ["99", "99", "99", "99"]
    for key, cards in [("another genai-prices", kept["cards"]), (kept["key"], {"x": {}})]:
        path.write_text(json.dumps({**kept, "key": key, "cards": cards}))
        again = _fresh(script, str(tmp_path))
        assert again == {"cost": honest["cost"], "imported": True}
    path.write_text("{not json")
    assert _fresh(script, str(tmp_path)) == {"cost": honest["cost"], "imported": True}
    flat = ModelPrice(input=0.15, output=0.6)  # gpt-4o-mini's price in genai-prices 0.2.3
    assert flat.cost(Usage(1000, completion_tokens=500)) == honest["cost"]


def test_the_card_file_keeps_the_latest_cards_only(tmp_path):
    path = tmp_path / price_cards.FILE_NAME
    for i in range(price_cards.MOST + 5):
        price_cards.remember(f"name-{i}", price_cards.NO_PRICE, path=path)
    price_cards.remember("name-7", price_cards.NO_PRICE, path=path)  # asked again: kept longer
    kept = json.loads(path.read_text())["cards"]
    assert len(kept) == price_cards.MOST
    assert "name-0" not in kept and "name-7" in kept and f"name-{price_cards.MOST + 4}" in kept
