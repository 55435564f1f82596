"""What a session with a database opens: its ledger log there and its named budget."""

from __future__ import annotations

from holynb.team.budgets import TeamBudget
from holynb.team.database import Database
from holynb.team.lease import Lease
from holynb.team.ledger import TeamLog

__all__ = ["open_team"]


def open_team(
    url: str, *, user: str | None = None, budget: str | None = None
) -> tuple[TeamLog, TeamBudget | None]:
    """The ledger log in the database at ``url`` (connected and migrated now: a bad URL, a
    wrong password or a server that is down fail here, within seconds) and, when ``budget``
    names one, that budget, reserved on under this process's lease."""
    db = Database.of(url)
    log = TeamLog(db, user=user, budget=budget)
    if budget is None:
        return log, None
    return log, TeamBudget(db, budget, Lease.of(db, log.user))
