"""What a request can cost at most: the one rule every budget applies before anything is sent.

A request's worst case is its prompt (estimated offline, images counted by the wire format's
rule, plus a margin; with Anthropic's prompt cache asked for, all of it at the cache-write price)
and every answer it asks for at its length cap: ``max_tokens`` (or
``max_completion_tokens``) times ``n``. The price is the asked model's, or the price of a pricier
model the endpoint was seen answering for it (relays may route ``gpt-4.1-mini`` to
``gpt-4.1``): an answering model is remembered, and from then on the dearer of the two prices
bounds the request. A request whose worst case is unknown (no price, no length cap and no known
context window) is refused with ``UnboundedCall``, whose message says what to pass.

>>> bounds = WorstCase(prices, api="openai")
>>> bounds.usd({"model": "gpt-4.1", "messages": [...], "max_tokens": 100, "n": 4})
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from holynb.prompt_cache import ttl_of
from holynb.results import Usage

if TYPE_CHECKING:
    from holynb.prices import PriceTable

__all__ = ["PROMPT_MARGIN", "UnboundedCall", "WorstCase", "answers_asked", "output_cap"]

# A budget reserves the prompt estimate plus this share (the estimate is within about 10%).
PROMPT_MARGIN = 1.25


class UnboundedCall(Exception):
    """A request whose worst case holynb cannot bound; the message says what to pass."""


def output_cap(body: Mapping[str, Any]) -> int | None:
    """The length cap of one answer (``max_tokens`` or ``max_completion_tokens``), or None."""
    cap = body.get("max_tokens") or body.get("max_completion_tokens")
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None


def answers_asked(body: Mapping[str, Any]) -> int:
    """How many answers a request is billed for: ``n`` (chat completions) or ``best_of``
    (legacy completions, which bills every candidate), at least 1."""
    most = 1
    for name in ("n", "best_of"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > most:
            most = value
    return most


def prompt_estimate(messages: list[dict[str, Any]], api: str) -> int:
    """The offline estimate of a prompt's tokens, its images counted by the rule of the wire
    format ``api`` (see ``holynb.image_tokens``) instead of a fixed amount."""
    from holynb.image_tokens import messages_image_tokens
    from holynb.tokens import IMAGE_TOKENS, estimate_messages_tokens

    count, tokens = messages_image_tokens(messages, api)
    return estimate_messages_tokens(messages) - count * IMAGE_TOKENS + tokens


class WorstCase:
    """The worst case of requests on one endpoint, and what it learned about that endpoint's
    answering models. Thread-safe."""

    def __init__(self, prices: PriceTable, api: str = "openai") -> None:
        self.prices = prices
        self.api = api
        self._answered_by: dict[str, str] = {}  # asked model -> a pricier model that answered
        self._lock = threading.Lock()

    def usd(self, body: Mapping[str, Any], *, batch: bool = False) -> float:
        """The most ``body`` can cost, in USD; raises ``UnboundedCall`` when unknown."""
        asked = str(body["model"])
        worst = self._usd_for(asked, body, batch)
        substitute = self.answering_model(asked)
        if substitute is not None:
            worst = max(worst, self._usd_for(substitute, body, batch))
        return worst

    def _usd_for(self, model: str, body: Mapping[str, Any], batch: bool) -> float:
        price = self.prices.lookup(model)
        if price is None:
            raise UnboundedCall(
                f"holynb knows no price for model {model!r}, so the budget cannot bound this "
                f"call; it was not sent. Add its price in USD per million tokens, e.g. "
                f"Session(prices={{{model!r}: {{'input': 3.0, 'output': 15.0}}}}), or remove "
                "the budget (session.budget_usd = None)."
            )
        prompt = math.ceil(prompt_estimate(list(body["messages"]), self.api) * PROMPT_MARGIN)
        cap = output_cap(body)
        if cap is None and price.output > 0:
            window = self.prices.context_window(model)
            if window is None:
                raise UnboundedCall(
                    f"This call sets no max_tokens and holynb knows no output limit for model "
                    f"{model!r}, so its cost has no upper bound and the budget cannot hold it; "
                    "it was not sent. Pass max_tokens=... (%%llm --max-tokens N), or remove "
                    "the budget (session.budget_usd = None)."
                )
            cap = max(window - prompt, 0)  # the answer cannot outgrow the context window
        out = (cap or 0) * answers_asked(body)
        usage = Usage(prompt_tokens=prompt, completion_tokens=out, estimated=True)
        worst = self.prices.cost(model, usage, batch=batch)
        ttl = ttl_of(body) if self.api == "anthropic" else None
        if worst is not None and ttl is not None:  # the whole prompt may be a cache write
            written = replace(usage, cache_write_tokens=prompt, cache_ttl=ttl)
            worst = max(worst, self.prices.cost(model, written, batch=batch) or worst)
        tier = body.get("service_tier")
        if worst is not None and isinstance(tier, str) and not batch:
            worst = self._tier_worst(model, usage, tier, worst)
        if worst is None:
            raise UnboundedCall(
                f"holynb could not price model {model!r}, so the budget cannot bound this "
                f"call; it was not sent. Set its price with Session(prices={{{model!r}: "
                "{'input': 3.0, 'output': 15.0}}), or remove the budget."
            )
        return worst

    def _tier_worst(self, model: str, usage: Usage, tier: str, worst: float) -> float:
        """The worst case on the service tier asked for: a cheaper tier (flex) may be answered
        on the default one, so the default price holds; a dearer one (priority) needs its
        price."""
        from holynb.prices import DEFAULT_TIERS, HALF_PRICE_TIERS

        if tier in DEFAULT_TIERS or tier in HALF_PRICE_TIERS:
            return worst
        if not self.prices.knows_tier(model, tier):
            raise UnboundedCall(
                f"holynb knows no price for model {model!r} on the {tier!r} service tier, so "
                "the budget cannot bound this call; it was not sent. Ask for the default or "
                "flex tier, or remove the budget (session.budget_usd = None)."
            )
        on_tier = self.prices.cost(model, replace(usage, service_tier=tier))
        return worst if on_tier is None else max(worst, on_tier)

    def answering_model(self, asked: str) -> str | None:
        """A pricier model seen answering for ``asked``, or None."""
        with self._lock:
            return self._answered_by.get(asked)

    def learn(self, asked: str, answered: str) -> bool:
        """Note that ``answered`` answered a request for ``asked``; True when it is new and
        pricier (its price now bounds ``asked``'s requests too)."""
        if not answered or answered == asked:
            return False
        with self._lock:
            if self._answered_by.get(asked) == answered:
                return False
        if not _pricier(self.prices, answered, asked):
            return False
        with self._lock:
            self._answered_by[asked] = answered
        return True


def _pricier(prices: PriceTable, model: str, than: str) -> bool:
    mine, theirs = prices.lookup(model), prices.lookup(than)
    if mine is None:
        return False  # nothing to bound with: its calls cost None and are warned about
    if theirs is None:
        return True
    return mine.input > theirs.input or mine.output > theirs.output
