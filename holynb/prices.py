"""Prices as data: what a call cost, in USD, from prices that carry their source and date.

A model name is looked up in this order; the first that knows it wins:

1. prices you gave: ``Session(prices={...})``, ``table.set(...)``, ``table.update(...)``;
2. HolySheep's relay table (``holynb/data/relay_prices.json``), when the base URL is the relay;
3. ``local/...`` models of holynb's own demo server: free;
4. official providers' prices from the ``genai-prices`` package (its bundled, dated snapshot,
   offline; it knows price tiers, cached-input prices, batch prices and price history).

A model that none of them knows costs ``None``, never 0, and warns once.
"""

from __future__ import annotations

import json
import math
import re
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from numbers import Real
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from holynb.errors import ConfigurationError, HolynbWarning
from holynb.price_cards import Card, NoPrice

if TYPE_CHECKING:
    from holynb.results import Usage

__all__ = ["ModelPrice", "PriceTable", "UnknownPriceWarning", "is_relay_url"]

TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are USD per million tokens
CACHE_WRITE_FACTOR = 1.25  # a cache write without its own price: Anthropic's 5-minute rate
CACHE_WRITE_1H_FACTOR = 2.0  # a write to Anthropic's 1-hour cache: 2x input
CACHE_READ_FACTOR = 0.1  # a read of Anthropic's prompt cache without its own price: 0.1x input
_NUMBER_KEYS = ("input", "output", "cached_input", "cache_write", "batch_discount")
_ALLOWED_KEYS = (*_NUMBER_KEYS, "source", "as_of")
# Service tiers an answer may report. These cost the default price; flex (OpenAI) and batch
# (Anthropic's batch results) cost the batch price unless the price data has the tier's own;
# any other tier (priority, scale, ...) costs what the price data says, or None.
DEFAULT_TIERS = frozenset({"default", "auto", "standard", "standard_only", "on_demand"})
HALF_PRICE_TIERS = frozenset({"flex", "batch"})
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|20\d{6})$")
_EXAMPLE = "{'input': 3.0, 'output': 15.0, 'cached_input': 0.3}"
# Prefixes of OpenRouter/LiteLLM-style names ("openai/gpt-4.1") and the genai-prices provider.
_VENDORS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "deepseek": "deepseek",
    "deepseek-ai": "deepseek",
    "mistral": "mistral",
    "mistralai": "mistral",
    "x-ai": "x-ai",
    "xai": "x-ai",
}


class UnknownPriceWarning(HolynbWarning):
    """A call's cost is unknown (None) because no price is known for its model."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The price of one model, in USD per million tokens.

    ``cached_input`` is what a cached prompt token costs (None: the same as ``input``).
    ``cache_write`` is what a prompt token written to the provider's cache costs (None: 1.25x
    ``input``, Anthropic's 5-minute cache price); only Anthropic's format reports cache writes.
    ``batch_discount`` is the share taken off for Batch API calls (0.5: half price, 0: none).
    ``source`` and ``as_of`` say where the numbers come from and when they were true.

    >>> p = ModelPrice(input=8.0, output=32.0, source="my invoice", as_of=date(2026, 11, 1))
    >>> p.cost(Usage(prompt_tokens=1000, completion_tokens=500))
    0.024
    """

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    batch_discount: float = 0.5
    source: str = "user"
    as_of: date | None = None

    def __post_init__(self) -> None:
        for name in _NUMBER_KEYS:
            value = getattr(self, name)
            if value is not None or name in ("input", "output", "batch_discount"):
                object.__setattr__(self, name, _usd(name, value))
        if self.batch_discount > 1:
            raise ConfigurationError(
                "batch_discount is the share taken off for Batch API calls: a number from 0 "
                f"(no discount) to 1 (free), e.g. 0.5 for half price; got {self.batch_discount!r}."
            )
        if not isinstance(self.source, str):
            raise ConfigurationError(f"source must be a string, got {self.source!r}.")
        object.__setattr__(self, "as_of", _as_date(self.as_of))

    @property
    def cached_input_price(self) -> float:
        """What a cached prompt token costs per million (``input`` when no cached price is set)."""
        return self.input if self.cached_input is None else self.cached_input

    @property
    def cache_write_price(self) -> float:
        """What a prompt token written to the cache costs per million (1.25x ``input`` when no
        cache-write price is set)."""
        return self.input * CACHE_WRITE_FACTOR if self.cache_write is None else self.cache_write

    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        """What ``usage`` costs at this price, in USD.

        Cached tokens are inside ``prompt_tokens`` and charged at ``cached_input``, cache writes
        too and charged at ``cache_write``; reasoning tokens are inside ``completion_tokens`` and
        not charged again. With Anthropic's prompt cache asked for (``usage.cache_ttl``), a
        read without its own price costs 0.1x ``input`` and a 1-hour write 2x ``input``.
        """
        cached = min(max(usage.cached_tokens, 0), usage.prompt_tokens)
        written = min(max(usage.cache_write_tokens, 0), usage.prompt_tokens - cached)
        uncached = usage.prompt_tokens - cached - written
        read_price, write_price = self.cached_input_price, self.cache_write_price
        if usage.cache_ttl is not None:  # Anthropic's prompt cache, asked for
            if self.cached_input is None:
                read_price = self.input * CACHE_READ_FACTOR
            if usage.cache_ttl == "1h":
                write_price = self.input * CACHE_WRITE_1H_FACTOR
        usd = (
            uncached * self.input
            + cached * read_price
            + written * write_price
            + usage.completion_tokens * self.output
        ) / TOKENS_PER_PRICE_UNIT
        if batch:
            usd *= 1.0 - self.batch_discount
        return _tidy(usd)


@dataclass(frozen=True, slots=True)
class _Official:
    """A model found in genai-prices: its ModelInfo and Provider objects."""

    info: Any
    provider: Any


PriceSpec = Mapping[str, Any] | ModelPrice


class PriceTable:
    """Where holynb gets prices from, and what a call cost.

    >>> table = PriceTable.default("https://api.holysheep.ai/v1")
    >>> table.lookup("gpt-4.1").input                       # the relay's price, dated and sourced
    8.0
    >>> table.set("my-model", input=3.0, output=15.0, cached_input=0.3)
    >>> table.update({"other-model": {"input": 1.0, "output": 2.0}})
    >>> table.cost("gpt-4.1", Usage(prompt_tokens=1000, completion_tokens=500))
    0.024

    ``PriceTable(prices)`` alone uses your prices, free ``local/...`` models and genai-prices;
    pass ``base_url`` to add the relay table (for the relay) or to tell genai-prices which
    provider the endpoint is; ``official=False`` leaves genai-prices out.
    """

    def __init__(
        self,
        prices: Mapping[str, PriceSpec] | None = None,
        *,
        base_url: str | None = None,
        official: bool = True,
    ) -> None:
        self.base_url = base_url
        self.relay = is_relay_url(base_url)
        self.official = official
        self._user: dict[str, ModelPrice] = {}
        self._official_cache: dict[str, _Official | Card | None] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        if prices is not None:
            self.update(prices)

    @classmethod
    def default(
        cls, base_url: str | None = None, prices: Mapping[str, PriceSpec] | None = None
    ) -> PriceTable:
        """The table a Session uses: your ``prices``, then the relay table when ``base_url`` is
        HolySheep's relay, then free ``local/...`` models, then genai-prices."""
        return cls(prices, base_url=base_url)

    # -- adding prices ---------------------------------------------------------------------------

    def set(
        self,
        model: str,
        *,
        input: float,
        output: float,
        cached_input: float | None = None,
        cache_write: float | None = None,
        batch_discount: float = 0.5,
        source: str = "user",
        as_of: date | str | None = None,
    ) -> ModelPrice:
        """Set one model's price (USD per million tokens); it wins over every bundled price."""
        price = _checked(
            model,
            lambda: ModelPrice(
                input=input,
                output=output,
                cached_input=cached_input,
                cache_write=cache_write,
                batch_discount=batch_discount,
                source=source,
                as_of=_as_date(as_of) if as_of is not None else date.today(),
            ),
        )
        self._put({_name_key(model): price})
        return price

    def update(self, prices: Mapping[str, PriceSpec]) -> None:
        """Set several prices from the ``Session(prices=...)`` form, e.g.
        ``{"my-model": {"input": 3.0, "output": 15.0, "cached_input": 0.3}}``.

        Everything is checked before anything changes: a bad entry raises ConfigurationError
        naming the model and the key, and leaves the table as it was.
        """
        if not isinstance(prices, Mapping):
            raise ConfigurationError(
                "prices must be a dict of model name to price in USD per million tokens, e.g. "
                f"{{'my-model': {_EXAMPLE}}}; got {type(prices).__name__}."
            )
        parsed = {_name_key(model): _parse_entry(model, spec) for model, spec in prices.items()}
        self._put(parsed)

    def _put(self, prices: dict[str, ModelPrice]) -> None:
        with self._lock:
            self._user = {**self._user, **prices}
            self._warned.difference_update(prices)  # a model priced now may warn again later

    # -- looking prices up -----------------------------------------------------------------------

    def lookup(self, model: str, *, at: datetime | None = None) -> ModelPrice | None:
        """The price holynb would charge ``model`` at, or None when no price is known.

        For genai-prices models this is the base price in effect at ``at`` (default: now);
        ``source`` names the provider and says when higher tiers exist.
        """
        found, when = self._find(model), _utc(at)
        if isinstance(found, Card) and not found.covers(when):
            found = self._official(model)
        if isinstance(found, _Official | Card):
            return _official_price(found, when)
        return found

    def context_window(self, model: str) -> int | None:
        """How many tokens ``model`` takes in prompt and answer together, as genai-prices
        knows it (whoever prices the model); None when unknown."""
        if not self.official:
            return None
        key = _lookup_keys(model)[0]
        if key not in self._official_cache:
            self._official_cache[key] = _find_official(key, self.base_url, self.relay)
        found = self._official_cache[key]
        if isinstance(found, Card):
            return found.context_window
        window = getattr(found.info, "context_window", None) if found is not None else None
        return window if isinstance(window, int) and window > 0 else None

    def cost(
        self,
        model: str,
        usage: Usage,
        *,
        batch: bool = False,
        at: datetime | None = None,
        warn: bool = True,
    ) -> float | None:
        """What a call that used ``usage`` cost, in USD; None (and one warning per model) when
        no price is known. ``batch=True`` applies the Batch API price; ``at`` is when the call
        happened (default now), for prices that changed over time. ``usage.service_tier``
        prices the tier the answer reports: flex at the price data's flex price, else half (the
        batch price); a tier with no known price costs None (one warning per model and tier).
        ``warn=False`` for a figure shown before the call has used anything (a live status line:
        a call that fails before any usage, e.g. a wrong model name, warns of nothing but its
        error)."""
        found = self._find(model)
        if isinstance(found, Card) and not (
            usage.service_tier in (None, *DEFAULT_TIERS) and not batch and found.covers(_utc(at))
        ):
            found = self._official(model)  # a Batch API or tier price: genai-prices knows it
        if found is None and not warn:
            return None
        if found is None:
            self._warn_once(
                model,
                f"holynb knows no price for model {model!r}, so its cost is None (not 0). Add "
                f"its price in USD per million tokens, e.g. Session(prices={{{model!r}: "
                f"{_EXAMPLE}}}).",
            )
            return None
        tier = usage.service_tier
        if tier in DEFAULT_TIERS:
            tier = None
        if isinstance(found, ModelPrice):
            if tier is None or tier in HALF_PRICE_TIERS:
                return found.cost(usage, batch=batch or tier is not None)
            return self._unknown_tier(model, tier) if warn else None
        if (
            isinstance(found, _Official)
            and tier is not None
            and not batch
            and not _tier_variant_active(found, tier, _utc(at))
        ):
            if tier not in HALF_PRICE_TIERS:
                return self._unknown_tier(model, tier) if warn else None
            batch, tier = True, None  # no price of its own in the data: the batch price
        try:
            return _official_cost(found, usage, batch, _utc(at), None if batch else tier)
        except (ArithmeticError, ValueError, TypeError) as err:
            if not warn:
                return None
            self._warn_once(
                model,
                f"genai-prices could not price model {model!r} ({err}), so its cost is None. "
                f"Set its price with Session(prices={{{model!r}: {_EXAMPLE}}}).",
            )
            return None

    def knows_tier(self, model: str, tier: str | None) -> bool:
        """Whether a call of ``model`` served on service tier ``tier`` can be priced (the
        default tiers always can, when the model can)."""
        found = self._find(model)
        if found is None:
            return False
        if tier is None or tier in DEFAULT_TIERS or tier in HALF_PRICE_TIERS:
            return True
        if isinstance(found, Card):
            found = self._official(model)
        return isinstance(found, _Official) and _tier_variant_active(found, tier, _utc(None))

    def needs_genai_prices(self, model: str) -> bool:
        """Whether pricing ``model`` will load genai-prices (no price of yours, of the relay
        table or of the free local models covers it, it was not looked up yet, and genai-prices'
        index, once built, does not rule it out)."""
        keys = _lookup_keys(model)
        if any(key in self._user for key in keys) or keys[0].startswith("local/"):
            return False
        if self.relay and any(key in _relay_prices() for key in keys):
            return False
        if not self.official or keys[0] in self._official_cache:
            return False
        attempts = _official_attempts(keys[0], self.base_url, self.relay)
        if _card(attempts) is not None:
            return False
        return _genai_prices_may_price((ref for ref, _ in attempts), create=False)

    def _official(self, model: str) -> _Official | None:
        """``model`` as genai-prices itself finds it (not its card), for what a card does not
        price: a Batch API or service-tier price, a time before the card was made."""
        key = _lookup_keys(model)[0]
        found = _find_official(key, self.base_url, self.relay, cards=False)
        assert not isinstance(found, Card)
        self._official_cache[key] = found
        return found

    def _find(self, model: str) -> ModelPrice | _Official | Card | None:
        keys = _lookup_keys(model)
        user = self._user
        for key in keys:
            if key in user:
                return user[key]
        if self.relay:
            relay = _relay_prices()
            for key in keys:
                if key in relay:
                    return relay[key]
        if keys[0].startswith("local/"):
            return FREE_LOCAL
        if not self.official:
            return None
        if keys[0] not in self._official_cache:
            self._official_cache[keys[0]] = _find_official(keys[0], self.base_url, self.relay)
        return self._official_cache[keys[0]]

    def _unknown_tier(self, model: str, tier: str) -> float | None:  # None: no price
        self._warn_once(
            model,
            f"holynb knows no price for model {model!r} on the {tier!r} service tier the "
            f"endpoint answered on, so its cost is None (not a guess). Price that tier as the "
            f"model's own name, e.g. Session(prices={{{model!r}: {_EXAMPLE}}}) if it costs the "
            "same, or ask for the default tier.",
            key=f"{_lookup_keys(model)[0]}@{tier}",
        )
        return None

    def _warn_once(self, model: str, message: str, key: str | None = None) -> None:
        key = key or _lookup_keys(model)[0]
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(message, UnknownPriceWarning, stacklevel=3)

    def __repr__(self) -> str:
        layers = [f"{len(self._user)} of yours"]
        if self.relay:
            layers.append("HolySheep relay table")
        layers.append("local/* free")
        if self.official:
            layers.append("genai-prices")
        return f"PriceTable({', '.join(layers)})"


# -- the relay table ----------------------------------------------------------------------------


@cache
def _relay_data() -> dict[str, Any]:
    text = resources.files("holynb").joinpath("data/relay_prices.json").read_text("utf-8")
    return json.loads(text)


@cache
def _relay_prices() -> dict[str, ModelPrice]:
    data = _relay_data()
    as_of = date.fromisoformat(data["as_of"])
    prices: dict[str, ModelPrice] = {}
    for name, entry in data["models"].items():
        source = f"{data['name']} table, from seed articles {entry['source']}"
        if "disputed" in entry:
            source += f"; disputed: {entry['disputed']}"
        price = ModelPrice(
            input=entry["input"],
            output=entry["output"],
            cached_input=entry.get("cached_input"),
            cache_write=entry.get("cache_write"),
            source=source,
            as_of=as_of,
        )
        for alias in (name, *entry.get("aliases", ())):
            prices[alias.lower()] = price
    return prices


def is_relay_url(base_url: str | None) -> bool:
    """Whether ``base_url`` is HolySheep's relay (its host is listed in the relay table)."""
    if not base_url:
        return False
    host = urlsplit(base_url if "//" in base_url else f"//{base_url}").hostname or ""
    return host.lower() in _relay_data()["hosts"]


# -- genai-prices -------------------------------------------------------------------------------


def _find_official(
    key: str, base_url: str | None, relay: bool, *, cards: bool = True
) -> _Official | Card | None:
    """The genai-prices model for a name, trying the endpoint's provider first, then the name
    alone, then the name without an ``openai/``-style prefix. Names that no genai-prices model
    matches (its index says so), or that a card answers for (``price_cards``; unless
    ``cards=False``), are answered without importing it; what genai-prices answers is kept
    as a card for the next process."""
    from holynb import price_cards

    attempts = _official_attempts(key, base_url, relay)
    card = _card(attempts) if cards else None
    if card is not None:
        return None if isinstance(card, price_cards.NoPrice) else card
    lookup = _lookup_id(attempts)
    if not _genai_prices_may_price(ref for ref, _ in attempts):
        price_cards.remember(lookup, price_cards.NO_PRICE)  # next time without the index
        return None
    try:
        import genai_prices  # ~300 ms: only when a price is first needed
    except ImportError:  # pragma: no cover - genai-prices is a dependency
        return None
    nothing = genai_prices.Usage(input_tokens=0, output_tokens=0)
    now = datetime.now(UTC)
    for ref, hint in attempts:
        try:
            calc = genai_prices.calc_price(nothing, ref, **hint)  # type: ignore[call-overload]
        except (LookupError, ValueError):
            continue
        if calc.model.get_prices(now).input_mtok is None:
            break  # priced by characters, images or seconds, not by tokens
        found = _Official(calc.model, calc.provider)
        made = _card_for(found, now)
        if made is not None:
            price_cards.remember(lookup, made)
        return found
    price_cards.remember(lookup, price_cards.NO_PRICE)
    return None


def _card_for(found: _Official, now: datetime) -> Card | None:
    """``found``'s price as a card (``price_cards``), when genai-prices prices it, from
    ``now`` on, as one linear function of its tokens in each band of prompt sizes (checked by
    asking it); else None."""
    import genai_prices
    from genai_prices.types import StartDateConstraint, TieredPrices

    from holynb import price_cards

    conditional = found.info.prices if isinstance(found.info.prices, list) else []
    if not all(
        c.constraint is None
        or (isinstance(c.constraint, StartDateConstraint) and c.constraint.active(now))
        for c in [*conditional, *(found.info.price_variants or ())]
    ):
        return None  # a price (or a batch or tier price) changes with the date or the hour
    resolved = found.info.get_prices(now)
    values = [v for k, v in vars(resolved).items() if v is not None and not k.startswith("_")]
    thresholds = [t.start for v in values if isinstance(v, TieredPrices) for t in v.tiers]
    sizes = price_cards.probe_sizes(thresholds)
    price = _official_price(found, now)
    if sizes is None or price is None:
        return None

    def total(tokens: tuple[int, int, int, int]) -> Decimal:
        prompt, cached, written, completion = tokens
        usage = genai_prices.Usage(
            input_tokens=prompt,
            cache_read_tokens=cached,
            cache_write_tokens=written,
            output_tokens=completion,
        )
        calc = found.info.calc_price(usage, found.provider, genai_request_timestamp=now)
        return Decimal(calc.total_price)

    bands = tuple(
        (above, price_cards.coefficients(size, [total(p) for p in price_cards.probes(size)]))
        for above, size in sizes
    )
    shown = {
        name: getattr(price, name)
        for name in ("input", "output", "cached_input", "cache_write", "batch_discount", "source")
    }
    window = getattr(found.info, "context_window", None)
    card = price_cards.Card(
        model=found.info.id,
        provider=found.provider.id,
        bands=bands,
        price=shown,
        context_window=window if isinstance(window, int) and window > 0 else None,
        built=now,
    )
    if any(card.total(*tokens) != total(tokens) for tokens in price_cards.checks(sizes)):
        return None  # not that function after all: genai-prices is asked each time
    return card


def _lookup_id(attempts: list[tuple[str, dict[str, str]]]) -> str:
    return json.dumps(attempts, separators=(",", ":"))


def _card(attempts: list[tuple[str, dict[str, str]]]) -> Card | NoPrice | None:
    from holynb import price_cards

    return price_cards.recall(_lookup_id(attempts))


def _official_attempts(
    key: str, base_url: str | None, relay: bool
) -> list[tuple[str, dict[str, str]]]:
    """The (name, provider hint) pairs genai-prices is asked for, in order."""
    attempts: list[tuple[str, dict[str, str]]] = []
    if base_url and not relay:
        attempts.append((key, {"provider_api_url": base_url}))
    attempts.append((key, {}))
    if "/" in key:
        prefix, rest = key.split("/", 1)
        if prefix in _VENDORS:
            attempts.append((rest, {"provider_id": _VENDORS[prefix]}))
        attempts.append((rest, {}))
    return attempts


def _genai_prices_may_price(refs: Iterable[str], *, create: bool = True) -> bool:
    """False when genai-prices' index says none of ``refs`` has a price there (True when
    there is no index to ask: genai-prices is asked itself)."""
    from holynb import price_index

    index = price_index.current(create=create)
    return index is None or any(index.may_price(ref) for ref in refs)


def _batch_variant_active(found: _Official, at: datetime) -> bool:
    return _variant_active(found, {"processing": "batch"}, at)


def _tier_variant_active(found: _Official, tier: str, at: datetime) -> bool:
    """Whether the price data has ``found``'s own price on service tier ``tier``."""
    return _variant_active(found, {"service_tier": tier}, at)


def _variant_active(found: _Official, when: dict[str, str], at: datetime) -> bool:
    # genai-prices applies request variants only to a provider's own models (not fallbacks).
    if not any(found.info is m for m in found.provider.models):
        return False
    for variant in found.info.price_variants or ():
        if variant.when == when and (variant.constraint is None or variant.constraint.active(at)):
            return True
    return False


def _official_cost(
    found: _Official | Card, usage: Usage, batch: bool, at: datetime, tier: str | None = None
) -> float:
    """genai-prices' cost of ``usage`` (a card's, when ``found`` is one: plain calls only)."""
    cached = min(max(usage.cached_tokens, 0), usage.prompt_tokens)
    written = min(max(usage.cache_write_tokens, 0), usage.prompt_tokens - cached)
    extra = 0.0  # USD genai-prices does not know of: Anthropic's prompt cache rules
    if usage.cache_ttl is not None and (cached or written):
        price = _official_price(found, at)
        if price is not None and usage.cache_ttl == "1h" and written:
            extra += written * price.input * (CACHE_WRITE_1H_FACTOR - 1.0) / TOKENS_PER_PRICE_UNIT
            written = 0  # priced as input above, plus the 1-hour premium here
        if price is not None and price.cached_input is None and cached:
            extra -= cached * price.input * (1.0 - CACHE_READ_FACTOR) / TOKENS_PER_PRICE_UNIT
    if isinstance(found, Card):
        assert not batch and tier is None
        total = found.total(usage.prompt_tokens, cached, written, usage.completion_tokens)
        return _tidy(float(total) + extra)
    import genai_prices

    counted = genai_prices.Usage(
        input_tokens=usage.prompt_tokens,  # with cache reads and writes, as genai-prices expects
        cache_read_tokens=cached,
        cache_write_tokens=written,
        output_tokens=usage.completion_tokens,  # includes reasoning tokens: not added again
    )
    context = None
    factor = 1.0
    if batch:
        if _batch_variant_active(found, at):
            context = {"processing": "batch"}
        else:
            factor = 0.5  # no batch price in the data: the Batch API's usual half price
    if tier is not None:
        context = {"service_tier": tier}
    calc = found.info.calc_price(
        counted, found.provider, genai_request_timestamp=at, price_context=context
    )
    return _tidy((float(calc.total_price) + extra) * factor)


def _official_price(found: _Official | Card, at: datetime) -> ModelPrice | None:
    if isinstance(found, Card):
        return ModelPrice(**found.price, as_of=at.date())
    import genai_prices
    from genai_prices.types import TieredPrices

    prices = found.info.get_prices(at)

    def base(value: Any) -> float | None:
        if value is None:
            return None
        return float(value.base if isinstance(value, TieredPrices) else value)

    input_price = base(prices.input_mtok)
    if input_price is None:
        return None  # priced by something other than tokens (characters, images, seconds)
    tiers = [
        tier.start
        for value in (prices.input_mtok, prices.output_mtok)
        if isinstance(value, TieredPrices)
        for tier in value.tiers
    ]
    source = f"genai-prices {genai_prices.__version__}: {found.provider.id} {found.info.id}"
    if tiers:
        source += f" (a higher price applies above {min(tiers):,} prompt tokens)"
    discount = 0.5
    if _batch_variant_active(found, at):
        batch = found.info.get_prices(at, {"processing": "batch"})
        batch_input = base(batch.input_mtok)
        if batch_input is not None and input_price > 0:
            discount = min(1.0, max(0.0, 1.0 - batch_input / input_price))
    return ModelPrice(
        input=input_price,
        output=base(prices.output_mtok) or 0.0,
        cached_input=base(prices.cache_read_mtok),
        cache_write=base(prices.cache_write_mtok),
        batch_discount=discount,
        source=source,
        as_of=at.date(),
    )


# -- checking what users give -------------------------------------------------------------------


def _parse_entry(model: object, spec: PriceSpec) -> ModelPrice:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(
            f"Price table keys must be model names (non-empty strings), got {model!r}."
        )
    if isinstance(spec, ModelPrice):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"The price for {model!r} must be a dict like {_EXAMPLE} (USD per million tokens), "
            f"got {spec!r}."
        )
    unknown = sorted(str(k) for k in spec if k not in _ALLOWED_KEYS)
    if unknown:
        raise ConfigurationError(
            f"Unknown price key(s) {', '.join(map(repr, unknown))} for {model!r}: use "
            f"{', '.join(_ALLOWED_KEYS)} (numbers are USD per million tokens), e.g. {_EXAMPLE}."
        )
    missing = [k for k in ("input", "output") if k not in spec]
    if missing:
        raise ConfigurationError(
            f"The price for {model!r} lacks {' and '.join(map(repr, missing))}: give USD per "
            f"million tokens, e.g. {{{model!r}: {_EXAMPLE}}}."
        )
    fields = dict(spec)
    fields.setdefault("as_of", date.today())
    return _checked(model, lambda: ModelPrice(**fields))


def _checked(model: str, build: Any) -> ModelPrice:
    try:
        return build()
    except ConfigurationError as err:
        raise ConfigurationError(f"The price for {model!r}: {err}") from None


def _usd(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real | Decimal):
        raise ConfigurationError(
            f"{name} must be a number (USD per million tokens), got {value!r}; e.g. {_EXAMPLE}."
        )
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ConfigurationError(
            f"{name} must be a finite number >= 0 (USD per million tokens), got {value!r}."
        )
    return number


def _as_date(value: object) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigurationError(f"as_of must be a date or 'YYYY-MM-DD', got {value!r}.")


def _name_key(model: object) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"A model name must be a non-empty string, got {model!r}.")
    return model.strip().lower()


def _lookup_keys(model: str) -> list[str]:
    """The names to try in a table, most specific first: ``openai/gpt-4.1-2025-04-14`` tries
    itself, ``gpt-4.1-2025-04-14``, then ``gpt-4.1`` (a dated snapshot has its model's price)."""
    keys = [model.strip().lower()]
    if "/" in keys[0] and not keys[0].startswith("local/"):
        keys.append(keys[0].split("/", 1)[1])
    undated = _DATE_SUFFIX.sub("", keys[-1])
    if undated != keys[-1]:
        keys.append(undated)
    return keys


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _tidy(usd: float) -> float:
    # Float sums of per-token prices leave dust (0.024000000000000004); a trillionth of a
    # dollar is far below any price's precision.
    return round(usd, 12) + 0.0


# Models of holynb's own demo server (``local/echo``, ...) cost nothing, and say so.
FREE_LOCAL = ModelPrice(
    input=0.0, output=0.0, batch_discount=0.0, source="holynb's local demo server (free)"
)
