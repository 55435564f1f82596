"""Spending limits: refuse a call before it is sent once the budget would be exceeded.

A call reserves its worst case (``holynb.worst_case``) before it is sent and settles to its
real cost when it ends, so concurrent calls cannot jointly overshoot what they were allowed.
With a ledger log (``log_path``) the reservations live in the log file too (``SharedHolds``),
so every kernel sharing the file sees the calls the others have in flight, and they hold one
budget together. A settlement never lowers what was spent (a negative cost counts as 0), and a
call that cost more than its reservation (an endpoint answering with a pricier model than the
one asked) is warned about once with the reason, whenever it takes spending past the limit.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from holynb.errors import BudgetExceededError, ConfigurationError, HolynbWarning
from holynb.units import money

if TYPE_CHECKING:
    from holynb.ledger import CallRecord

WARN_AT = 0.8
JOB_OWNER = "job:"  # who holds a batch job's worst case: "job:<job id>", until its results
_CENT_FRACTION = 1e-9  # costs are floats: below this, a cost is not "more" than its hold


class BudgetWarning(HolynbWarning):
    """The session has spent 80% of its budget."""


class BudgetOvershootWarning(HolynbWarning):
    """A call cost more than the worst case reserved for it (e.g. the endpoint answered with a
    pricier model than the one asked), so spending may pass the budget; the message says why."""


Check = Callable[[Sequence["CallRecord"], float], None]


class SharedHolds(Protocol):
    """Where reservations live when several processes share one budget (the ledger log)."""

    def hold(self, usd: float, check: Check) -> int:
        """In one transaction: call ``check(others_new_records, held_usd)`` (it raises to
        refuse), then hold ``usd``; the hold's id."""
        ...

    def hold_all(
        self, amounts: Sequence[float], check: Check, owner: str | None = None
    ) -> list[int]:
        """``hold`` for several amounts checked together, held by ``owner`` (None: this
        process)."""
        ...

    def release(self, hold: int) -> None:
        """End a hold (a no-op when it has ended already)."""
        ...


class Budget:
    """A USD limit shared by all of a session's calls, including those in flight.

    >>> b = Budget(1.00)
    >>> token = b.reserve(0.02)     # raises BudgetExceededError when it would not fit
    >>> b.settle(token, 0.015)

    ``shared`` keeps the reservations in a store other processes see (the ledger log), and
    ``on_others`` receives the records other processes wrote, read while reserving.
    """

    def __init__(
        self,
        limit_usd: float,
        spent_usd: float = 0.0,
        *,
        shared: SharedHolds | None = None,
        on_others: Callable[[list[CallRecord]], None] | None = None,
    ) -> None:
        if not isinstance(limit_usd, (int, float)) or not limit_usd > 0:
            raise ConfigurationError(f"budget_usd must be a positive number, got {limit_usd!r}.")
        self.limit_usd = float(limit_usd)
        self.spent_usd = max(float(spent_usd), 0.0)
        self.shared = shared
        self._on_others = on_others
        self._reserved: dict[int, float] = {}  # this process's holds
        self._adopted: dict[str, int] = {}  # a batch part's key -> its hold here
        self._held_elsewhere = 0.0  # in a shared store: every hold, as last read
        self._next = 0
        self._warned = False
        self._overshoot_warned = False
        self._lock = threading.Lock()

    @property
    def reserved_usd(self) -> float:
        """What calls in flight may still spend (with a shared store: as last read there)."""
        with self._lock:
            mine = sum(self._reserved.values())
        return max(mine, self._held_elsewhere) if self.shared is not None else mine

    def reserve(self, estimate_usd: float, *, here_only: bool = False) -> int:
        """Hold ``estimate_usd`` for a call about to be sent; raise if it would not fit.
        ``here_only`` holds it in this process alone (the shared store could not be written),
        counting the holds last read from the store too."""
        if self.shared is not None and not here_only:
            return self._reserve_shared(estimate_usd)
        with self._lock:
            mine = sum(self._reserved.values())
            held = max(mine, self._held_elsewhere) if self.shared is not None else mine
            self._refuse_unless_fits(estimate_usd, held)
            self._next -= 1  # negative: a hold no shared store knows about
            self._reserved[self._next] = estimate_usd
            return self._next

    def reserve_all(self, amounts: Sequence[float], *, owner: str | None = None) -> list[int]:
        """Hold several amounts (a batch job's parts) if they fit together, else raise and
        hold none. ``owner`` (``job:<id>``) keeps the holds in the shared store after this
        process ends, until ``settle``."""
        total = sum(amounts)
        if self.shared is not None:
            tokens = self._reserve_shared(total, amounts, owner)
        else:
            with self._lock:
                self._refuse_unless_fits(total, sum(self._reserved.values()))
                tokens = []
                for usd in amounts:
                    self._next -= 1
                    self._reserved[self._next] = usd
                    tokens.append(self._next)
        return tokens

    def adopt(self, key: str, usd: float, hold: int | None = None) -> int:
        """Hold again, without a check, what an earlier session reserved for ``key`` (a
        batch part reattached after a restart): the shared store's ``hold`` when there is
        one, else a hold in this process. Idempotent per key; ``settle`` ends it."""
        with self._lock:
            if key in self._adopted:
                return self._adopted[key]
            if hold is not None and (
                hold in self._reserved or (self.shared is not None and hold > 0)
            ):
                token = hold  # held here already, or in the shared store
            else:
                self._next -= 1
                token = self._next
            self._reserved[token] = usd
            self._adopted[key] = token
            return token

    def _reserve_shared(
        self,
        estimate_usd: float,
        amounts: Sequence[float] | None = None,
        owner: str | None = None,
    ) -> Any:
        assert self.shared is not None

        def check(others: Sequence[CallRecord], held_usd: float) -> None:
            if others:
                with self._lock:
                    self.spent_usd += sum(max(r.cost_usd or 0.0, 0.0) for r in others)
                if self._on_others is not None:
                    self._on_others(list(others))
            with self._lock:
                self._held_elsewhere = held_usd
                self._refuse_unless_fits(estimate_usd, held_usd)

        if amounts is None:
            token = self.shared.hold(estimate_usd, check)
            with self._lock:
                self._reserved[token] = estimate_usd
            return token
        tokens = self.shared.hold_all(amounts, check, owner)
        with self._lock:
            self._reserved.update(zip(tokens, amounts, strict=True))
        return tokens

    def _refuse_unless_fits(self, estimate_usd: float, held_usd: float) -> None:
        committed = self.spent_usd + held_usd
        if committed >= self.limit_usd or committed + estimate_usd > self.limit_usd:
            raise BudgetExceededError(
                f"Budget reached: spent {money(self.spent_usd)} of {money(self.limit_usd)}"
                + (f" ({money(held_usd)} held by calls in flight)" if held_usd > 0 else "")
                + f"; this call could cost up to {money(estimate_usd)}, so it was not sent.",
                hint="Raise the limit with session.budget_usd = ... or lower max_tokens.",
                spent_usd=self.spent_usd,
                limit_usd=self.limit_usd,
            )

    def count_spent(self, cost_usd: float | None) -> None:
        """Add a cost that held no reservation here (e.g. a call of another process)."""
        self.settle(None, cost_usd)

    def settle(
        self,
        token: int | None,
        cost_usd: float | None,
        *,
        reason: str | None = None,
        released: bool = False,
    ) -> None:
        """Replace a reservation by the call's real cost (None: nothing known to add).
        ``token=None`` adds a cost that held no reservation (another process's call). A cost
        below zero counts as 0: no settlement lowers what was spent. ``reason`` says why a call
        may have cost more than its reservation (shown if it takes spending past the limit);
        ``released`` says the shared store ended the hold already (with the call's record)."""
        cost = cost_usd if cost_usd is not None and cost_usd > 0 else 0.0
        with self._lock:
            held = self._reserved.pop(token, None) if token is not None else None
            if held is not None and self._adopted:
                self._adopted = {k: t for k, t in self._adopted.items() if t != token}
            if held is not None and self.shared is not None:
                self._held_elsewhere = max(self._held_elsewhere - held, 0.0)
            self.spent_usd += cost
            crossed = not self._warned and self.spent_usd >= WARN_AT * self.limit_usd
            if crossed:
                self._warned = True
            over = (
                held is not None
                and cost > held + _CENT_FRACTION
                and self.spent_usd > self.limit_usd
                and not self._overshoot_warned
            )
            if over:
                self._overshoot_warned = True
            spent = self.spent_usd
        if held is not None and self.shared is not None and not released and token > 0:  # type: ignore[operator]
            self.shared.release(token)  # type: ignore[arg-type]
        if over:
            why = f" {reason}" if reason else ""
            warnings.warn(
                f"holynb: a call cost {money(cost)}, more than the {money(held or 0.0)} "
                f"reserved for it, so spending ({money(spent)}) exceeds the "
                f"{money(self.limit_usd)} budget.{why} The calls after it see the real spend.",
                BudgetOvershootWarning,
                stacklevel=2,
            )
        if crossed:
            warnings.warn(
                f"holynb: {money(spent)} spent, {spent / self.limit_usd:.0%} of the "
                f"{money(self.limit_usd)} budget.",
                BudgetWarning,
                stacklevel=2,
            )
