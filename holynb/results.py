"""Plain result objects: what a call returns (ChatResult) and the tokens it used (Usage)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

MAX_TOKENS = 10**12  # more than any call has used: a count beyond it is not believed


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call used, as the API reported them.

    ``cached_tokens`` (cache reads) and ``cache_write_tokens`` (prompt tokens written to the
    provider's cache, Anthropic's ``cache_creation_input_tokens``) are already inside
    ``prompt_tokens``, and ``reasoning_tokens`` already inside ``completion_tokens`` (OpenAI's
    convention, which Anthropic's usage is mapped onto); they are never added twice.
    ``estimated`` is True when the server sent no usage and holynb counted it itself.
    ``service_tier`` is the tier the answer says it was served on (``"default"``, ``"flex"``,
    ...; None when it said none): calls are priced by it. ``cache_ttl`` is the prompt cache
    the request asked for (``"5m"``, ``"1h"``): a write then costs 1.25x or 2x the input price
    and a read 0.1x, unless the model has its own cache prices.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    cache_write_tokens: int = 0
    service_tier: str | None = None
    cache_ttl: str | None = None  # "5m" | "1h": the prompt cache asked for (prices its writes)

    def __post_init__(self) -> None:
        # An endpoint's counts are checked before they are believed: a negative one would
        # make a cost negative and credit a budget.
        if (
            self.prompt_tokens < 0
            or self.completion_tokens < 0
            or self.cached_tokens < 0
            or self.reasoning_tokens < 0
            or self.cache_write_tokens < 0
        ):
            raise ValueError(
                "the endpoint reported a negative token count (prompt_tokens="
                f"{self.prompt_tokens}, completion_tokens={self.completion_tokens}, "
                f"cached_tokens={self.cached_tokens}, reasoning_tokens={self.reasoning_tokens}, "
                f"cache_write_tokens={self.cache_write_tokens})"
            )
        counts = (
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.reasoning_tokens,
            self.cache_write_tokens,
        )
        if max(counts) > MAX_TOKENS:
            raise ValueError(
                f"the endpoint reported an implausible token count ({max(counts):,} tokens, "
                f"more than {MAX_TOKENS:,}): the answer's usage is not believed"
            )

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_api(cls, data: dict[str, Any] | None, tier: Any = None) -> Usage | None:
        """Usage from an OpenAI-style ``usage`` object (None when absent or null), served on
        ``tier`` (the answer's ``service_tier``)."""
        if not data:
            return None
        prompt_details = data.get("prompt_tokens_details") or {}
        completion_details = data.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            cached_tokens=int(prompt_details.get("cached_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
            service_tier=tier_name(tier),
        )


def tier_name(value: Any) -> str | None:
    """An answer's ``service_tier`` as holynb believes it: None when it sent none, a short
    name, or ``"invalid"`` for anything else (not a string, too long, not a plain word),
    which no price covers: such a call costs None rather than a guess."""
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value) <= 32 and value.replace("_", "").isalnum():
        return value.lower()
    return "invalid"


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The answer to one chat call, with what it cost in tokens, money and time.

    >>> r = session.chat("Say hi")
    >>> r.text, r.usage.total_tokens, r.cost_usd, r.latency_ms
    >>> r.cache_hit, r.saved_usd    # from the cache: cost_usd is 0.0, saved_usd what it saved
    >>> session.chat("Classify: ...", schema=Sentiment).parsed   # the validated answer
    """

    text: str
    model: str
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    attempts: int = 1
    request_id: str | None = None
    cost_usd: float | None = None
    interrupted: bool = False
    warning: str | None = None  # what holynb had to repair in the answer, if anything
    parsed: Any = None  # with schema=: the validated answer (a pydantic instance or a dict)
    cache_hit: bool = False  # answered from the response cache or a checkpoint: nothing sent
    saved_usd: float | None = None  # for a cache hit, what the call would have cost

    def with_cost(self, cost_usd: float | None) -> ChatResult:
        """A copy with the cost filled in."""
        return replace(self, cost_usd=cost_usd)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """What a call would cost before it is sent (``Session.estimate``).

    ``cost_usd`` counts the prompt (estimated offline) plus ``max_completion_tokens`` of
    output, the most the call can cost; None when the model's price is unknown.
    ``image_tokens`` is the part of ``prompt_tokens`` that the images are.
    """

    model: str
    prompt_tokens: int
    max_completion_tokens: int | None
    cost_usd: float | None
    image_tokens: int = 0

    def __repr__(self) -> str:
        from holynb.units import money

        cost = "unknown" if self.cost_usd is None else money(self.cost_usd)
        return (
            f"CostEstimate(model={self.model!r}, prompt_tokens={self.prompt_tokens:,}, "
            f"max_completion_tokens={self.max_completion_tokens!r}, cost={cost}, "
            f"image_tokens={self.image_tokens:,})"
        )
