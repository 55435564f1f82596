"""Spending limits: refuse a call before it is sent once the budget would be exceeded."""

from __future__ import annotations

import threading
import warnings

from holynb.errors import BudgetExceededError, ConfigurationError, HolynbWarning
from holynb.formatting import money

WARN_AT = 0.8


class BudgetWarning(HolynbWarning):
    """The session has spent 80% of its budget."""


class Budget:
    """A USD limit shared by all of a session's calls, including those in flight.

    A call reserves its estimated worst case before it is sent and settles to its real cost
    when it ends, so concurrent calls cannot jointly overshoot what they were allowed.

    >>> b = Budget(1.00)
    >>> token = b.reserve(0.02)     # raises BudgetExceededError when it would not fit
    >>> b.settle(token, 0.015)
    """

    def __init__(self, limit_usd: float, spent_usd: float = 0.0) -> None:
        if not isinstance(limit_usd, (int, float)) or not limit_usd > 0:
            raise ConfigurationError(f"budget_usd must be a positive number, got {limit_usd!r}.")
        self.limit_usd = float(limit_usd)
        self.spent_usd = float(spent_usd)
        self._reserved: dict[int, float] = {}
        self._next = 0
        self._warned = False
        self._lock = threading.Lock()

    @property
    def reserved_usd(self) -> float:
        """What calls in flight may still spend."""
        return sum(self._reserved.values())

    def reserve(self, estimate_usd: float) -> int:
        """Hold ``estimate_usd`` for a call about to be sent; raise if it would not fit."""
        with self._lock:
            committed = self.spent_usd + sum(self._reserved.values())
            if committed >= self.limit_usd or committed + estimate_usd > self.limit_usd:
                raise BudgetExceededError(
                    f"Budget reached: spent {money(self.spent_usd)} of {money(self.limit_usd)}"
                    + (
                        f" ({money(self.reserved_usd)} held by calls in flight)"
                        if self._reserved
                        else ""
                    )
                    + f"; this call could cost up to {money(estimate_usd)}, so it was not sent.",
                    hint="Raise the limit with session.budget_usd = ... or lower max_tokens.",
                    spent_usd=self.spent_usd,
                    limit_usd=self.limit_usd,
                )
            self._next += 1
            self._reserved[self._next] = estimate_usd
            return self._next

    def settle(self, token: int | None, cost_usd: float | None) -> None:
        """Replace a reservation by the call's real cost (None: nothing known to add).
        ``token=None`` adds a cost that held no reservation (another process's call)."""
        with self._lock:
            if token is not None:
                self._reserved.pop(token, None)
            if cost_usd:
                self.spent_usd += cost_usd
            crossed = not self._warned and self.spent_usd >= WARN_AT * self.limit_usd
            if crossed:
                self._warned = True
        if crossed:
            warnings.warn(
                f"holynb: {money(self.spent_usd)} spent, {self.spent_usd / self.limit_usd:.0%} of "
                f"the {money(self.limit_usd)} budget.",
                BudgetWarning,
                stacklevel=2,
            )
