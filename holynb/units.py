"""Money as people read it: one format for every figure holynb shows (a leaf module)."""

from __future__ import annotations

import math

__all__ = ["money"]

_SIGNIFICANT = 3
_SMALLEST = 1e-9


def money(usd: float | None) -> str:
    """Dollars with at least two decimals and three significant digits below a dollar;
    ``"cost unknown"`` for None (no price: never shown as $0).

    >>> money(0.00003), money(0.5), money(1234.5), money(None)
    ('$0.00003', '$0.50', '$1,234.50', 'cost unknown')
    """
    if usd is None:
        return "cost unknown"
    if usd < 0:
        return "-" + money(-usd)
    if usd == 0:
        return "$0.00"
    if usd < _SMALLEST:
        return "<$0.000000001"
    decimals = max(2, _SIGNIFICANT - 1 - math.floor(math.log10(usd)))
    text = f"{usd:,.{decimals}f}"
    if decimals > 2:
        text = text.rstrip("0")
        whole, _, fraction = text.partition(".")
        text = f"{whole}.{fraction.ljust(2, '0')}"
    return "$" + text
