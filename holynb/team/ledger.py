"""The ledger log in the team database: every call of every user, one row each.

``TeamLog`` is the PostgreSQL twin of ``holynb.store.LedgerStore`` (the ``LedgerLog``
interface the meter writes to): ``append`` / ``extend`` commit a call's row when they return,
with who made it (``user``), the notebook where known (``JPY_SESSION_NAME``), the session and
its named budget. With a named budget, ``release=`` is the call's hold: the row, the end of the
hold and the cost added to the budget's ``spent_usd`` are one statement. Rows are written by
group commit (``holynb.team.group_commit``): the rows of calls that end while a statement runs
go together in the next one, with their holds' ends and costs, and ``aappend`` lets a task
await its row without holding up its event loop. ``load`` returns nothing:
``session.ledger`` holds the session's own calls, ``team_ledger`` reads everyone's. Reads are
indexed by ``ts`` and by ``(user, ts)``.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import os
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from math import isfinite
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import orjson

from holynb.errors import ConfigurationError, StoreError
from holynb.ledger import COLUMNS, CallRecord
from holynb.team.group_commit import GroupCommit

if TYPE_CHECKING:
    import pandas as pd

    from holynb.team.answers import TeamAnswers
    from holynb.team.checkpoints import TeamCheckpoint
    from holynb.team.database import Database
    from holynb.team.jobs import TeamJobs

__all__ = ["TEAM_COLUMNS", "USER_ENV", "TeamLog", "default_user"]

USER_ENV = "HOLYNB_USER"
_PROBE_EVERY_S = 2.0
TEAM_COLUMNS: tuple[str, ...] = (*COLUMNS, "user", "notebook", "session", "budget")
_QUOTED = ", ".join(f'"{c}"' for c in TEAM_COLUMNS)
_QUOTED_RECORD = ", ".join(f'"{c}"' for c in COLUMNS)
_INSERT = f"INSERT INTO holynb_calls ({_QUOTED}) VALUES ({', '.join(['%s'] * len(TEAM_COLUMNS))})"
_BOOLS = ("ok", "interrupted", "usage_estimated", "cache_hit")
_TEXTS = ("model", "kind", "error", "request_id", "tag", "user", "notebook", "session", "budget")
_NULLABLE = ("error", "request_id", "tag", "notebook", "budget", "cost_usd", "latency_ms",
             "ttft_ms", "saved_usd")  # fmt: skip
_DTYPES: dict[str, Any] = {
    **{c: "object" for c in (*_TEXTS, *_BOOLS)},
    **{c: "int64" for c in ("prompt_tokens", "completion_tokens", "cached_tokens",
                            "reasoning_tokens", "attempts")},
    **{c: "float64" for c in ("cost_usd", "latency_ms", "ttft_ms", "saved_usd")},
}  # fmt: skip
# a group of one session's rows in one statement: the records as JSON objects (orjson writes
# the dataclasses), read by the table's own row type; who, where and which budget are the
# group's own four parameters
_INSERT_MANY = (
    f"INSERT INTO holynb_calls ({_QUOTED})"
    f" SELECT {_QUOTED_RECORD}, %s, %s, %s, %s"
    " FROM json_populate_recordset(NULL::holynb_calls, %s)"
)
_SETTLE_MANY = (
    f"WITH row AS ({_INSERT_MANY}), gone AS (DELETE FROM holynb_holds WHERE id = ANY(%s))"
    " UPDATE holynb_budgets SET spent_usd = spent_usd + %s, updated = now() WHERE name = %s"
)
_values = attrgetter(*COLUMNS)  # a record's columns, in order


def default_user() -> str:
    """Who is charged: ``HOLYNB_USER``, else the operating system's user name."""
    name = os.environ.get(USER_ENV, "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class TeamLog:
    """The ledger log of one session in the team database.

    >>> log = TeamLog(Database.of(url), user="alice")
    >>> log.append(record)                 # committed when it returns
    >>> log.frame(user="alice")            # the team's calls as a DataFrame
    """

    shares_holds = False  # a session's own budget_usd stays in the session (see Meter)

    def __init__(
        self,
        db: Database,
        *,
        user: str | None = None,
        notebook: str | None = None,
        budget: str | None = None,
    ) -> None:
        self.db = db.ensure()
        self.user = user or default_user()
        self.notebook = notebook or os.environ.get("JPY_SESSION_NAME") or None
        self.session = uuid.uuid4().hex[:16]
        self.budget = budget
        self.unwritable: StoreError | None = None  # the last write's failure, until one works
        self._probe_at = 0.0
        self._rows: GroupCommit[tuple[CallRecord, int | None], None] = GroupCommit(
            self._write, "holynb-ledger"
        )

    def __repr__(self) -> str:
        return f"TeamLog({self.db.where!r}, user={self.user!r})"

    def _row(self, record: CallRecord, budget: str | None) -> tuple[Any, ...]:
        return (*_values(record), self.user, self.notebook, self.session, budget)

    def append(self, record: CallRecord, *, release: int | None = None) -> None:
        """Write one call's row, committed when this returns; with ``release`` (its budget
        hold) end the hold and add the call's cost to the budget in the same statement."""
        self._rows.submit((record, release)).result()

    async def aappend(self, record: CallRecord, *, release: int | None = None) -> None:
        """``append`` for a task: its event loop serves other calls while the row is written
        (with the rows of other calls that end meanwhile); a cancelled task's row is written
        all the same."""
        await asyncio.shield(self._rows.wait((record, release)))

    def _write(self, group: list[tuple[CallRecord, int | None]]) -> list[None]:
        records = [record for record, _ in group]
        settled = [(r, hold) for r, hold in group if hold] if self.budget is not None else []
        ends = [hold for _, hold in settled]
        cost = sum(max(r.cost_usd or 0.0, 0.0) for r, _ in settled)
        who = (self.user, self.notebook, self.session, self.budget)
        try:
            with self.db.connection("record a call in") as conn:
                values = _as_json(records)
                if values is None:  # NaN, infinity or a huge int, which JSON cannot carry
                    rows = [self._row(record, self.budget) for record in records]
                    with conn.transaction(), conn.cursor() as cur:
                        cur.executemany(_INSERT, rows)
                        if ends:
                            conn.execute(
                                "WITH gone AS (DELETE FROM holynb_holds WHERE id = ANY(%s))"
                                " UPDATE holynb_budgets SET spent_usd = spent_usd + %s,"
                                " updated = now() WHERE name = %s",
                                (ends, cost, self.budget),
                            )
                elif ends:
                    conn.execute(_SETTLE_MANY, (*who, values, ends, cost, self.budget))
                else:
                    conn.execute(_INSERT_MANY, (*who, values))
        except StoreError as err:
            self.unwritable, self._probe_at = err, time.monotonic() + _PROBE_EVERY_S
            raise
        self.unwritable = None
        return [None] * len(group)

    def check_writable(self) -> None:
        """Raise ``StoreError`` while the database cannot take records: after a failed write,
        until a probe (one connection, at most every 2 s) answers again; calls are not sent
        when they could not be recorded."""
        err = self.unwritable
        if err is None:
            return
        if time.monotonic() < self._probe_at:
            raise err
        self._probe_at = time.monotonic() + _PROBE_EVERY_S
        self.db.probe()
        self.unwritable = None

    def extend(
        self,
        records: Iterable[CallRecord],
        *,
        release: int | None = None,
        budget: str | None = None,
        once: str | None = None,
    ) -> bool:
        """Write several rows in one transaction (all or none). With ``release`` (a hold on
        the named budget) end the hold and add the rows' cost to the budget in it too.
        ``budget`` (a batch job's named budget, whoever reads its results) charges the rows
        to that budget instead of the session's, with or without a hold still open; ``""``
        charges them to none (a job made without a named budget). ``once`` (a batch part's
        key) is kept in ``holynb_batch_parts`` in the same transaction: a part already
        recorded (its manifest's save lost to a crash) writes nothing. Whether it wrote."""
        charged = self.budget if budget is None else (budget or None)
        rows = [self._row(r, charged) for r in records]
        with self.db.connection("record calls in") as conn, conn.transaction():
            if once is not None:
                first = conn.execute(
                    "INSERT INTO holynb_batch_parts (key) VALUES (%s) ON CONFLICT DO NOTHING",
                    (once,),
                )
                if first.rowcount == 0:
                    return False
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(_INSERT, rows)
            if charged is not None and (release is not None or budget):
                cost = sum(max(r[COLUMNS.index("cost_usd")] or 0.0, 0.0) for r in rows)
                if release is not None:
                    conn.execute("DELETE FROM holynb_holds WHERE id = %s", (release,))
                conn.execute(
                    "UPDATE holynb_budgets SET spent_usd = spent_usd + %s, updated = now()"
                    " WHERE name = %s",
                    (cost, charged),
                )
        return True

    def end_holds(self, lease: str, keep: Iterable[int]) -> int:
        """End the holds on ``lease`` (a batch job's, ``job:<id>``) other than ``keep`` (those
        of its parts still running): what a crash between holding and sending left behind.
        How many ended."""
        with self.db.connection("release holds in") as conn:
            gone = conn.execute(
                "DELETE FROM holynb_holds WHERE lease = %s AND NOT (id = ANY(%s))",
                (lease, list(keep)),
            )
            return gone.rowcount

    def load(self) -> list[CallRecord]:
        """Nothing: a session starts with an empty ledger (``frame`` reads the team's)."""
        return []

    def close(self) -> None:
        """Nothing to close: the database's pool is shared by the process's sessions."""

    def shared_checkpoint(self, name: str) -> TeamCheckpoint:
        """The map job ``name`` in the team database, shared by every process naming it."""
        from holynb.team.checkpoints import TeamCheckpoint
        from holynb.team.lease import Lease

        return TeamCheckpoint(self.db, name, Lease.of(self.db, self.user))

    def job_store(self) -> TeamJobs:
        """Where this session's batch jobs live: the team database, shared by every machine."""
        from holynb.team.jobs import TeamJobs

        return TeamJobs(self.db, self.user)

    def answer_store(self) -> TeamAnswers:
        """The team's shared response cache (``cache=True`` with a database)."""
        from holynb.team.answers import TeamAnswers

        return TeamAnswers(self.db)

    def frame(self, since: datetime | str | None = None, user: str | None = None) -> pd.DataFrame:
        """Every call in the database (``since`` a time, ``user`` one user's), oldest first,
        with the ledger's columns and ``user``, ``notebook``, ``session``, ``budget``."""
        import pandas as pd

        where, params = _filters(since, user)
        query = f"SELECT {_QUOTED} FROM holynb_calls{where} ORDER BY ts, id"  # on an index
        buffer = io.BytesIO()
        with self.db.connection("read the ledger in") as conn, conn.cursor() as cur:
            # COPY as CSV and one read_csv: 10x faster than rows of Python objects
            copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, NULL '\\N')"
            with cur.copy(copy_sql, params) as copy:  # our own SQL
                for block in copy:
                    buffer.write(block)
        buffer.seek(0)
        frame = pd.read_csv(
            buffer, names=list(TEAM_COLUMNS), header=None, dtype=_DTYPES, keep_default_na=False,
            na_values={c: ["\\N"] for c in _NULLABLE},
        )  # fmt: skip
        for column in _TEXTS:  # None, as in session.ledger, for a text that is not there
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        for column in _BOOLS:
            frame[column] = frame[column].map({"t": True, "f": False}).astype(bool)
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        return frame

    def by_user(self, since: datetime | str | None = None) -> pd.DataFrame:
        """Per user, computed in the database: calls, ok, success rate, tokens, cost (None when
        any call's price is unknown), latency p50/p95 of successful sent calls, cache hits."""
        import pandas as pd

        where, params = _filters(since, None)
        # One pass with a hash aggregate (no sort of every row by user: an ordered-set
        # aggregate over the whole table would need one, 5x slower at a million rows); each
        # user's latencies are then sorted on their own for the two percentiles.
        query = f"""
            WITH per_user AS (
                SELECT "user", count(*) AS calls, count(*) FILTER (WHERE ok) AS ok,
                       count(*) FILTER (WHERE NOT ok AND error LIKE 'Interrupted%%') AS stopped,
                       sum(prompt_tokens) FILTER (WHERE NOT cache_hit) AS pt,
                       sum(completion_tokens) FILTER (WHERE NOT cache_hit) AS ct,
                       CASE WHEN bool_and(cost_usd IS NOT NULL) THEN sum(cost_usd) END AS cost,
                       array_agg(latency_ms)
                           FILTER (WHERE ok AND NOT cache_hit AND latency_ms IS NOT NULL) AS lat,
                       count(*) FILTER (WHERE cache_hit) AS hits,
                       coalesce(sum(saved_usd) FILTER (WHERE cache_hit), 0) AS saved
                FROM holynb_calls{where} GROUP BY "user"
            )
            SELECT "user", calls, ok, stopped, pt, ct, cost, q.p[1], q.p[2], hits, saved
            FROM per_user LEFT JOIN LATERAL (
                SELECT percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY x) AS p
                FROM unnest(per_user.lat) AS x
            ) AS q ON true
            ORDER BY "user"
        """
        with self.db.connection("summarise the ledger in") as conn:
            rows = conn.execute(query, params).fetchall()
        out = []
        for user, calls, ok, stopped, pt, ct, cost, p50, p95, hits, saved in rows:
            ended = calls - stopped
            out.append(
                {
                    "user": user, "calls": calls, "ok": ok, "interrupted": stopped,
                    "success_rate": ok / ended if ended else None,
                    "prompt_tokens": int(pt or 0), "completion_tokens": int(ct or 0),
                    "cost_usd": None if cost is None else float(cost),
                    "latency_p50_ms": p50, "latency_p95_ms": p95, "cache_hits": hits,
                    "saved_usd": float(saved),
                }
            )  # fmt: skip
        columns = ["user", "calls", "ok", "interrupted", "success_rate", "prompt_tokens",
                   "completion_tokens", "cost_usd", "latency_p50_ms", "latency_p95_ms",
                   "cache_hits", "saved_usd"]  # fmt: skip
        return pd.DataFrame(out, columns=columns)


def _as_json(records: list[CallRecord]) -> str | None:
    """Records as a JSON array of objects (``ts`` in ISO 8601), written by orjson from the
    dataclasses; None when one has a float that is not finite (orjson would write null: an
    unknown cost, not the NaN it was) or an int JSON cannot carry."""
    for r in records:  # NaN and infinity spread through a sum (a huge sum only says: be safe)
        if not isfinite((r.cost_usd or 0.0) + (r.latency_ms or 0.0) + (r.ttft_ms or 0.0)
                        + (r.saved_usd or 0.0)):  # fmt: skip
            return None
    try:
        return orjson.dumps(records).decode()
    except orjson.JSONEncodeError:
        return None


def _filters(since: datetime | str | None, user: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        if isinstance(since, str):
            try:
                since = datetime.fromisoformat(since)
            except ValueError:
                raise ConfigurationError(
                    f"since must be a datetime or an ISO date such as '2026-12-01', got {since!r}."
                ) from None
        if since.tzinfo is None:
            from datetime import UTC

            since = since.replace(tzinfo=UTC)
        clauses.append("ts >= %s")
        params.append(since)
    if user is not None:
        clauses.append('"user" = %s')
        params.append(user)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def team_log(store: object, by: str = "user") -> TeamLog:
    """``store`` as the team database's log: a ``ConfigurationError`` saying how to get one
    when the session has no database (or ``by`` is not ``"user"``: ``summary(by=...)``)."""
    if by != "user":
        raise ConfigurationError(f'summary(by=...) takes "model" or "user", got {by!r}.')
    if isinstance(store, TeamLog):
        return store
    raise ConfigurationError(
        "This session has no team database: create it with holynb.Session(database="
        "'postgresql://...') or set HOLYNB_DATABASE_URL, then every call is in team_ledger()."
    )
