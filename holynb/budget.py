"""Spending limits: refuse a call before it is sent once the budget would be exceeded."""

from __future__ import annotations

import threading
import warnings

from holynb.errors import BudgetExceededError, ConfigurationError

WARN_AT = 0.8


class BudgetWarning(UserWarning):
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
                    f"Budget reached: spent ${self.spent_usd:.4f} of ${self.limit_usd:.4f}"
                    + (
                        f" (${self.reserved_usd:.4f} held by calls in flight)"
                        if self._reserved
                        else ""
                    )
                    + f"; this call could cost up to ${estimate_usd:.4f}, so it was not sent. "
                    "Raise the limit with session.budget_usd = ... or lower max_tokens.",
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
                f"holynb: ${self.spent_usd:.4f} spent, {self.spent_usd / self.limit_usd:.0%} of "
                f"the ${self.limit_usd:.4f} budget.",
                BudgetWarning,
                stacklevel=2,
            )
