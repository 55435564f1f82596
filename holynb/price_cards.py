"""genai-prices' answers for the model names a machine has used, kept so that pricing them
again does not import genai-prices.

Importing genai-prices costs ~0.3 s (pydantic, then its data), more than a script's whole call
with raw httpx. ``price_index`` already answers "no price" without it; a card answers for a
name it did price. A card is genai-prices' own answer, written down: which model and provider
the name found, its price as ``PriceTable.lookup`` shows it, its context window, and four
numbers read back from genai-prices by pricing tokens of each kind (prompt, cache read, cache
write, answer) for each band of prompt sizes its tiers make. A card is made only when
genai-prices' price is that linear function of the tokens in each band (no per-request fee,
no price change scheduled ahead), and this is checked by asking genai-prices to price more
usages (each band, each side of each tier's start) and comparing to the exact Decimal; a name
that finds no token price gets a card that says so.

Cards are kept in ``$HOLYNB_HOME/genai_prices_cards.json``, keyed by genai-prices' version and
data file (``price_index.stamp``), so a new release starts afresh. They price only the plain
case: a call priced now, not on a Batch API or a service tier of its own; everything else, and
every process that has imported genai-prices already, asks genai-prices itself.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from holynb._config import holynb_home

__all__ = [
    "NO_PRICE",
    "Card",
    "NoPrice",
    "cards_path",
    "checks",
    "coefficients",
    "probe_sizes",
    "probes",
    "recall",
    "remember",
]

FORMAT = 1
FILE_NAME = "genai_prices_cards.json"
MILLION = 1_000_000
MOST = 1_000  # cards kept; the oldest go first (one per name and endpoint asked about)
Coefficients = tuple[
    Decimal, Decimal, Decimal, Decimal
]  # USD per million: prompt, read, write, answer
Tokens = tuple[
    int, int, int, int
]  # prompt (with cache reads and writes), cache read, write, answer


def probe_sizes(thresholds: list[int]) -> list[tuple[int, int]] | None:
    """The price bands that tier ``thresholds`` make (genai-prices charges a tier's price when
    the prompt has more tokens than its start), as (above, size): a band holds prompts of more
    than ``above`` tokens, up to the next band's ``above``; ``size``, a power of ten inside it,
    is the prompt its probes use (powers of ten keep the arithmetic exact). None when a band
    holds no power of ten."""
    aboves = [-1, *sorted(set(thresholds))]
    sizes = []
    for i, above in enumerate(aboves):
        upper = aboves[i + 1] if i + 1 < len(aboves) else None
        inside = [10**k for k in range(13) if 10**k > above and (upper is None or 10**k <= upper)]
        if not inside:
            return None
        fitting = [size for size in inside if size <= MILLION]
        sizes.append((above, fitting[-1] if fitting and upper is not None else _top(inside)))
    return sizes


def _top(inside: list[int]) -> int:
    return next((size for size in inside if size >= MILLION), inside[-1])


def probes(size: int) -> tuple[Tokens, ...]:
    """The usages a band's coefficients are read from, each with a prompt of ``size``."""
    return ((size, 0, 0, 0), (size, size, 0, 0), (size, 0, size, 0), (size, 0, 0, size))


def coefficients(size: int, totals: list[Decimal]) -> Coefficients:
    """A band's coefficients from what genai-prices charged for ``probes(size)``."""
    prompt, read, write, answer = (total * MILLION / size for total in totals)
    return (prompt, read, write, answer - prompt)


def checks(sizes: list[tuple[int, int]]) -> list[Tokens]:
    """The usages a card must price exactly as genai-prices does, or it is not made: each
    band's middle and both sides of each tier's start, and a few of no particular size."""
    found: list[Tokens] = [(0, 0, 0, 0), (1, 0, 0, 1), (98_765, 8_765, 0, 1)]
    found.append((1_234_567, 234_567, 34_567, 4_567))
    for above, size in sizes:
        found += [(size, 0, 0, 1), (size, size // 4, size // 8, 12_345)]
        if above >= 0:
            found += [(above, 0, 0, 1), (above + 1, 0, 0, 1)]
    return found


@dataclass(frozen=True)
class Card:
    """genai-prices' price for one name, from ``built`` on: for each band of prompt sizes
    (prompts of more than ``above`` tokens), USD per million tokens of each kind, and what
    ``lookup`` shows (``price``)."""

    model: str
    provider: str
    bands: tuple[tuple[int, Coefficients], ...]  # (above, coefficients), ``above`` ascending
    price: dict[str, Any]  # the ModelPrice fields, as_of left out
    context_window: int | None
    built: datetime

    def total(self, prompt: int, cached: int, written: int, completion: int) -> Decimal:
        """What genai-prices charges for these tokens (``prompt`` includes ``cached`` and
        ``written``), in USD, as the exact Decimal it computes."""
        per_prompt, per_read, per_write, per_answer = next(
            c for above, c in reversed(self.bands) if prompt > above
        )
        return (
            per_prompt * (prompt - cached - written)
            + per_read * cached
            + per_write * written
            + per_answer * completion
        ) / MILLION

    def covers(self, at: datetime) -> bool:
        """Whether the card holds at ``at`` (it was read from genai-prices at ``built``)."""
        return at >= self.built

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "bands": [[above, [str(c) for c in coeffs]] for above, coeffs in self.bands],
            "price": self.price,
            "context_window": self.context_window,
            "built": self.built.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Any) -> Card:
        bands = []
        for above, coeffs in data["bands"]:
            values = tuple(Decimal(str(c)) for c in coeffs)
            if type(above) is not int or len(values) != 4:
                raise ValueError("bad band")
            if not all(c.is_finite() for c in values):
                raise ValueError("bad coefficients")
            bands.append((above, values))
        if not bands or bands[0][0] != -1 or [a for a, _ in bands] != sorted({a for a, _ in bands}):
            raise ValueError("bad bands")
        window = data["context_window"]
        built = datetime.fromisoformat(data["built"])
        if not isinstance(data["price"], dict) or built.tzinfo is None:
            raise ValueError("bad card")
        return cls(
            model=str(data["model"]),
            provider=str(data["provider"]),
            bands=tuple(bands),
            price=data["price"],
            context_window=window if isinstance(window, int) and window > 0 else None,
            built=built.astimezone(UTC),
        )


class NoPrice:
    """The card of a name genai-prices has no token price for."""

    def __repr__(self) -> str:
        return "NoPrice()"


NO_PRICE = NoPrice()


def cards_path() -> Path:
    """Where the cards are kept: ``$HOLYNB_HOME/genai_prices_cards.json``."""
    return holynb_home() / FILE_NAME


def recall(lookup: str, *, path: Path | None = None) -> Card | NoPrice | None:
    """The card for ``lookup`` (the names and provider hints genai-prices would be asked
    for), or None: no card yet, or genai-prices is imported already (then it is asked)."""
    if "genai_prices" in sys.modules:
        return None
    from holynb import price_index

    key = price_index.stamp()
    if key is None:
        return None
    entry = _cards(path or cards_path(), key).get(lookup)
    if entry is None:
        return None
    if entry is False:
        return NO_PRICE
    try:
        return Card.from_json(entry)
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return None  # a card this holynb cannot read: genai-prices is asked


def remember(lookup: str, card: Card | NoPrice, *, path: Path | None = None) -> None:
    """Keep ``card`` for ``lookup``. A file that cannot be written only means genai-prices is
    asked again next time."""
    from holynb import price_index

    key = price_index.stamp()
    if key is None:
        return
    path = path or cards_path()
    entry: Any = False if isinstance(card, NoPrice) else card.to_json()
    with _lock:
        kept = _read(path, key)
        kept.pop(lookup, None)
        cards = dict([*list(kept.items())[-(MOST - 1) :], (lookup, entry)])
        _loaded[(path, key)] = cards
        price_index.write_json(path, {"format": FORMAT, "key": key, "cards": cards})


_lock = threading.Lock()
_loaded: dict[tuple[Path, str], dict[str, Any]] = {}


def _cards(path: Path, key: str) -> dict[str, Any]:
    with _lock:
        found = _loaded.get((path, key))
        if found is None:
            found = _loaded[(path, key)] = _read(path, key)
        return found


def _read(path: Path, key: str) -> dict[str, Any]:
    from holynb.price_index import read_stamped

    data = read_stamped(path, key, FORMAT)
    cards = data.get("cards") if data is not None else None
    return cards if isinstance(cards, dict) else {}
