"""Named budgets in the team database, held exactly across processes and machines.

``set_budget("research", usd=500, database=URL, period="month")`` makes or changes one;
``Session(database=URL, budget="research")`` charges every call to it (and to the session's own
``budget_usd`` if set: both apply). Each call's worst case is reserved by one statement,
``holynb_reserve_many`` (``holynb.team.schema``): under the budget's row lock it drops the holds
of expired leases, then compares spent + every hold in flight + this worst case with the limit
and inserts the hold or refuses. Reservations asked while one runs go together in the next
statement (``holynb.team.group_commit``: the amounts in order, each checked as if alone, after
the ones before it), and ``areserve`` lets a task await its hold. A call's record,
the end of its hold and its real cost added to ``spent_usd`` are one statement too
(``TeamLog.append``), so no cost is counted twice or lost. A period (``"day"``, ``"month"``,
UTC) starts its spending again from the ledger's calls of the new period. A batch job's parts
are held together (``reserve_all``) on a lease of the job's own, ``job:<id>``, which outlives
the process that made it (``JOB_HOLD_S`` from each time a session follows the job); each part's
hold ends when its results are recorded (``TeamLog.extend``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from holynb.errors import BudgetExceededError, ConfigurationError, StoreError
from holynb.team.group_commit import GroupCommit
from holynb.units import money

if TYPE_CHECKING:
    import pandas as pd

    from holynb.team.database import Database
    from holynb.team.lease import Lease

__all__ = ["BUDGET_COLUMNS", "JOB_HOLD_S", "TeamBudget", "budgets", "set_budget"]

PERIODS = (None, "day", "month")
# How long a batch job's holds last unless a session follows it (each save renews them): the
# providers' completion window (24 h) and an hour for finalizing and downloading.
JOB_HOLD_S = 25 * 3600.0
BUDGET_COLUMNS = (
    "name", "limit_usd", "spent_usd", "reserved_usd", "remaining_usd", "period",
    "period_start", "calls_in_flight", "updated",
)  # fmt: skip


class TeamBudget:
    """One named budget as a session charges it: ``reserve`` before sending, ``release``
    when a call ends without a record (its record settles it otherwise)."""

    def __init__(self, db: Database, name: str, lease: Lease) -> None:
        self.db = db
        self.name = name
        self.lease = lease
        self._holds: GroupCommit[float, int] = GroupCommit(
            self._reserve, "holynb-budget", orphan=self.release
        )  # a hold landing for a task whose loop is gone is ended, not left to its lease
        with db.connection("read the budgets of") as conn:
            found = conn.execute("SELECT 1 FROM holynb_budgets WHERE name = %s", (name,))
            if found.fetchone() is None:
                raise ConfigurationError(_unknown(name, db))

    def __repr__(self) -> str:
        return f"TeamBudget({self.name!r}, {self.db.where!r})"

    def reserve(self, usd: float) -> int:
        """Hold ``usd`` for a call about to be sent; ``BudgetExceededError`` (nothing held)
        when spent, the holds in flight and ``usd`` together would pass the limit."""
        return self._holds.submit(float(usd)).result()

    async def areserve(self, usd: float) -> int:
        """``reserve`` for a task: its event loop serves other calls while the database
        answers. A hold that lands after the task was cancelled is released at once."""
        waiter = self._holds.wait(float(usd))
        try:
            return await asyncio.shield(waiter)
        except asyncio.CancelledError:
            waiter.add_done_callback(self._release_landed)
            raise

    def _release_landed(self, waiter: asyncio.Future[int]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            with contextlib.suppress(StoreError):  # else its lease ends it
                self.release(waiter.result())

    def _reserve(self, amounts: list[float]) -> list[int | BaseException]:
        with self.db.connection("reserve on the budgets of") as conn:
            rows = conn.execute(
                "SELECT o_hold, o_limit, o_spent, o_held"
                " FROM holynb_reserve_many(%s, %s, %s::double precision[])",
                (self.name, self.lease.id, amounts),
            ).fetchall()
        if not rows:  # the function found no budget of that name
            rows = [None] * len(amounts)
        return [self._answer(row, usd) for row, usd in zip(rows, amounts, strict=True)]

    def _answer(self, row: Any, usd: float) -> int | BaseException:
        if row is None or row[1] is None:  # the function found no budget of that name
            return BudgetExceededError(_unknown(self.name, self.db) + " This call was not sent.")
        hold, limit, spent, held = row
        if hold is not None:
            return int(hold)
        what = f"this call could cost up to {money(usd)}, so it was not sent"
        return self._reached(limit, spent, held, what)

    def reserve_all(self, amounts: Sequence[float], *, owner: str) -> list[int]:
        """Hold every amount (a batch job's parts at batch prices) if they fit together, else
        ``BudgetExceededError`` and hold none: one transaction under the budget's row lock.
        The holds hang on the lease ``owner`` (``job:<id>``), not on this process's: a batch
        runs, and may cost, for hours after the process that made it is gone. The lease lasts
        as long as a process's until the job's manifest is first saved (a crash before leaves
        no holds behind for long); each save then makes it last ``JOB_HOLD_S`` from then
        (``holynb.team.jobs``)."""
        total = float(sum(amounts))
        seconds = self.lease.seconds
        with self.db.connection("reserve on the budgets of") as conn, conn.transaction():
            conn.execute(
                'INSERT INTO holynb_leases (id, "user", host, pid, expires)'
                " VALUES (%s, %s, %s, %s, now() + %s * interval '1 second')"
                " ON CONFLICT (id) DO UPDATE SET expires = greatest(holynb_leases.expires,"
                " EXCLUDED.expires)",
                (owner, self.lease.user, socket.gethostname(), os.getpid(), seconds),
            )
            row = conn.execute(
                "SELECT o_hold, o_limit, o_spent, o_held FROM holynb_reserve(%s, %s, %s)",
                (self.name, owner, total),
            ).fetchone()
            if row is None:
                raise BudgetExceededError(_unknown(self.name, self.db) + " Nothing was uploaded.")
            hold, limit, spent, held = row
            if hold is None:  # raised inside the transaction: the lease is not made either
                what = f"this batch job could cost up to {money(total)} at batch prices"
                raise self._reached(limit, spent, held, what + ", so nothing was uploaded")
            conn.execute("DELETE FROM holynb_holds WHERE id = %s", (hold,))
            holds = []
            for usd in amounts:  # one per part, under the row lock holynb_reserve took
                got = conn.execute(
                    "INSERT INTO holynb_holds (budget, lease, usd) VALUES (%s, %s, %s)"
                    " RETURNING id",
                    (self.name, owner, float(usd)),
                ).fetchone()
                assert got is not None
                holds.append(int(got[0]))
        return holds

    def _reached(self, limit: float, spent: float, held: float, what: str) -> BudgetExceededError:
        """The refusal: which budget, what is spent and held, what was asked (``what``)."""
        return BudgetExceededError(
            f"Budget {self.name!r} reached: spent {money(spent)} of {money(limit)}"
            + (f" ({money(held)} held by calls in flight)" if held > 0 else "")
            + f"; {what}.",
            hint=f"Raise it with holynb.set_budget({self.name!r}, usd=...) or lower max_tokens.",
            spent_usd=float(spent),
            limit_usd=float(limit),
        )

    def release(self, hold: int) -> None:
        """End a hold without a cost (a no-op once it has ended)."""
        with self.db.connection("release a hold in") as conn:
            conn.execute("DELETE FROM holynb_holds WHERE id = %s", (hold,))


def _unknown(name: str, db: Database) -> str:
    return (
        f"There is no budget named {name!r} in the team database {db.where}: make it with "
        f"holynb.set_budget({name!r}, usd=..., database=...) or `holynb budget set {name} USD`."
    )


def _database(database: str | None) -> Database:
    from holynb.team.database import Database, database_url

    url = database_url(database)
    if url is None:
        raise ConfigurationError(
            "No team database: pass database='postgresql://...' or set HOLYNB_DATABASE_URL."
        )
    return Database.of(url)


def set_budget(
    name: str, usd: float, *, database: str | None = None, period: str | None = None
) -> None:
    """Make or change the named budget ``name``: a limit of ``usd`` USD over everything every
    session naming it spends, all time (``period=None``) or per UTC ``"day"`` / ``"month"``.
    What was spent stays counted; ``database`` defaults to ``HOLYNB_DATABASE_URL``.

    >>> holynb.set_budget("research", usd=500, database=URL, period="month")
    >>> s = holynb.Session(database=URL, budget="research")
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"A budget needs a name, got {name!r}.")
    if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not usd > 0:
        raise ConfigurationError(f"usd must be a positive number of dollars, got {usd!r}.")
    if period not in PERIODS:
        raise ConfigurationError(f'period must be None, "day" or "month", got {period!r}.')
    db = _database(database)
    with db.connection("set a budget in") as conn:
        conn.execute(
            "INSERT INTO holynb_budgets (name, limit_usd, period) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET limit_usd = EXCLUDED.limit_usd,"
            " period = EXCLUDED.period, updated = now(), period_start = CASE"
            " WHEN holynb_budgets.period IS NOT DISTINCT FROM EXCLUDED.period"
            " THEN holynb_budgets.period_start END",
            (name.strip(), float(usd), period),
        )


_BUDGETS_QUERY = """
SELECT b.name, b.limit_usd, b.spent_usd, coalesce(sum(h.usd), 0), b.period, b.period_start,
       count(h.id), b.updated,
       CASE WHEN b.period IS NULL THEN NULL
            ELSE date_trunc(b.period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' END
FROM holynb_budgets b
LEFT JOIN holynb_holds h ON h.budget = b.name AND EXISTS (
    SELECT 1 FROM holynb_leases l WHERE l.id = h.lease AND l.expires > now())
GROUP BY b.name ORDER BY b.name
"""


def budgets(database: str | None = None) -> pd.DataFrame:
    """Every named budget: ``name``, ``limit_usd``, ``spent_usd`` (this period), ``reserved_usd``
    (held by calls in flight now), ``remaining_usd``, ``period``, ``period_start``,
    ``calls_in_flight``, ``updated``. Nothing is changed.

    >>> holynb.budgets(database=URL)
    """
    import pandas as pd

    db = _database(database)
    rows: list[dict[str, Any]] = []
    with db.connection("read the budgets of") as conn:
        for name, limit, spent, held, period, start, flying, updated, current in conn.execute(
            _BUDGETS_QUERY
        ).fetchall():
            if current is not None and (start is None or start < current):
                got = conn.execute(  # a new period began: what its calls spent so far
                    "SELECT coalesce(sum(greatest(cost_usd, 0)), 0) FROM holynb_calls"
                    " WHERE budget = %s AND ts >= %s",
                    (name, current),
                ).fetchone()
                spent, start = (got[0] if got else 0.0), current
            rows.append(
                {
                    "name": name, "limit_usd": float(limit), "spent_usd": float(spent),
                    "reserved_usd": float(held),
                    "remaining_usd": max(float(limit) - float(spent) - float(held), 0.0),
                    "period": period, "period_start": start, "calls_in_flight": int(flying),
                    "updated": updated,
                }
            )  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(BUDGET_COLUMNS))
    frame["period"] = frame["period"].astype(object).where(frame["period"].notna(), None)
    for column in ("period_start", "updated"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
