"""Map checkpoints in the team database: one job per name, its items split between processes.

``map(..., checkpoint="name")`` with a database keeps the job in ``holynb_items``: one row per
request key (``request_key``: the same key as a file checkpoint), ``done`` with its answer once
finished. A process registers its keys, then claims open items a few at a time with
``FOR UPDATE SKIP LOCKED`` under its lease (``holynb.team.lease``): two processes never claim
the same item, so each is sent once. A claim whose lease ran out (its process died) is open
again; a process ending its run frees its claims of items that failed, for another to try.
Everyone then reads the answers of the items the others finished: each returns the whole frame.
``keep_soon`` stores answers by group commit (``holynb.team.group_commit``), gathered for 20 ms
before each statement: nobody waits on them, and a statement for every few answers took the
interpreter from the calls (a kernel killed meanwhile loses at most those 20 ms of answers from
the checkpoint; the ledger has their calls). ``flush`` waits for them, before a run frees its
claims.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, wait as wait_for
from typing import TYPE_CHECKING, Any

from holynb.errors import StoreError, StoreWarning
from holynb.keystore import UnreadableAnswer, result_from_json, result_to_json
from holynb.team.group_commit import GroupCommit

if TYPE_CHECKING:
    from holynb.results import ChatResult
    from holynb.team.database import Database
    from holynb.team.lease import Lease

__all__ = ["TeamCheckpoint"]

_GATHER_S = 0.02  # answers gathered before each statement (the bench: 0.89x -> 0.92x SQLite)

_OPEN = (
    "NOT done AND (lease IS NULL OR NOT EXISTS (SELECT 1 FROM holynb_leases l"
    " WHERE l.id = i.lease AND l.expires > now()))"
)


class TeamCheckpoint:
    """One named map job in the team database, as this process takes part in it.

    >>> cp = TeamCheckpoint(db, "reviews-2026-12", lease)
    >>> cp.register(keys); mine = cp.claim(keys, 16)
    >>> cp.keep(key, result)            # done: every process reads it
    """

    def __init__(self, db: Database, job: str, lease: Lease) -> None:
        self.db = db.ensure()
        self.job = job
        self.lease = lease
        self.path = f"{db.where} checkpoint {job!r}"
        self._warned = False
        self._answers: GroupCommit[tuple[str, ChatResult], None] = GroupCommit(
            self._put_many, "holynb-checkpoint", linger=_GATHER_S
        )
        self._kept: list[Future[None]] = []  # keep_soon's writes, until flush

    def __repr__(self) -> str:
        return f"TeamCheckpoint({self.db.where!r}, {self.job!r})"

    def register(self, keys: Sequence[str]) -> None:
        """Add the run's items (by key, in input order) to the job; existing ones stay."""
        with self.db.connection("register a map job in") as conn:
            conn.execute(
                "INSERT INTO holynb_items (job, key, position)"
                " SELECT %s, k, p FROM unnest(%b::text[]) WITH ORDINALITY AS u(k, p)"
                " ON CONFLICT (job, key) DO NOTHING",
                (self.job, list(keys)),
            )

    def claim(self, keys: Sequence[str], limit: int) -> list[str]:
        """Up to ``limit`` of ``keys`` that are open (not done, not claimed by a live
        process), now claimed by this process; each goes to exactly one claimer."""
        with self.db.connection("claim map items in") as conn:
            rows = conn.execute(
                "UPDATE holynb_items SET lease = %s, claimed = now() WHERE job = %s AND key IN ("
                " SELECT key FROM holynb_items i WHERE job = %s AND key = ANY(%b::text[])"
                f" AND {_OPEN}"
                " ORDER BY position LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING key",
                (self.lease.id, self.job, self.job, list(keys), limit),
            ).fetchall()
        return [key for (key,) in rows]

    def release_mine(self) -> None:
        """Free this process's claims of items not done (failed or stopped ones)."""
        with self.db.connection("free map claims in") as conn:
            conn.execute(
                "UPDATE holynb_items SET lease = NULL WHERE job = %s AND lease = %s AND NOT done",
                (self.job, self.lease.id),
            )

    def put(self, key: str, result: ChatResult) -> None:
        """Store the answer of ``key``: the item is done for every process."""
        with self.db.connection("store a map answer in") as conn:
            conn.execute(
                "INSERT INTO holynb_items (job, key, position, done, value) VALUES"
                " (%s, %s, 0, true, %s) ON CONFLICT (job, key) DO UPDATE SET done = true,"
                " value = EXCLUDED.value, lease = NULL",
                (self.job, key, result_to_json(result)),
            )

    def keep(self, key: str, result: ChatResult) -> bool:
        """``put`` an answer already paid for; a failure is warned about once."""
        try:
            self.put(key, result)
        except StoreError as err:
            self._warn_once(
                f"holynb could not store an answer in {self.path} ({err}); it is in this "
                "run's frame, and asked again by the next run (said once)."
            )
            return False
        return True

    def keep_soon(self, key: str, result: ChatResult) -> None:
        """``keep`` without waiting: stored with the answers finished meanwhile; ``flush``
        waits for every one (and warns, once, if one could not be stored)."""
        self._kept.append(self._answers.submit((key, result)))

    def flush(self) -> None:
        """Wait until every answer given to ``keep_soon`` is stored (or has failed)."""
        kept, self._kept = self._kept, []
        wait_for(kept)
        for future in kept:
            err = future.exception()
            if isinstance(err, StoreError):
                self._warn_once(
                    f"holynb could not store an answer in {self.path} ({err}); it is in this "
                    "run's frame, and asked again by the next run (said once)."
                )

    def _put_many(self, group: list[tuple[str, ChatResult]]) -> list[None]:
        answers = {key: result_to_json(result) for key, result in group}  # a key once
        with self.db.connection("store map answers in") as conn:
            # %b: the keys and JSON texts go as they are (binary), not quoted and escaped, quote
            # by quote, into an array's text form (that cost more than the rest of the statement)
            conn.execute(
                "INSERT INTO holynb_items (job, key, position, done, value)"
                " SELECT %s, k, 0, true, v FROM unnest(%b::text[], %b::text[]) AS u(k, v)"
                " ON CONFLICT (job, key) DO UPDATE SET done = true, value = EXCLUDED.value,"
                " lease = NULL",
                (self.job, list(answers), list(answers.values())),
            )
        return [None] * len(group)

    def present(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` that are done."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        with self.db.connection("read a map job in") as conn:
            rows = conn.execute(
                "SELECT key FROM holynb_items WHERE job = %s AND key = ANY(%b::text[]) AND done",
                (self.job, wanted),
            )
            return {key for (key,) in rows}

    def get_many(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        """``{key: answer}`` of those of ``keys`` that are done (unreadable ones left out)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self.db.connection("read a map job in") as conn:
            rows = conn.execute(
                "SELECT key, value FROM holynb_items WHERE job = %s AND key = ANY(%b::text[])"
                " AND done",
                (self.job, wanted),
            ).fetchall()
        found: dict[str, ChatResult] = {}
        for key, value in rows:
            try:
                found[key] = result_from_json(value)
            except UnreadableAnswer as err:
                self._warn_once(
                    f"holynb: an answer in {self.path} cannot be read ({err}); it is asked "
                    "again (said once)."
                )
        return found

    def get(self, key: str) -> ChatResult | None:
        """The answer of ``key``, or None."""
        return self.get_many([key]).get(key)

    def delete(self, key: str) -> bool:
        """Forget the item ``key``; whether there was one."""
        with self.db.connection("change a map job in") as conn:
            return (
                conn.execute(
                    "DELETE FROM holynb_items WHERE job = %s AND key = %s", (self.job, key)
                ).rowcount
                > 0
            )

    def stats(self) -> dict[str, Any]:
        """``path``, ``entries`` (items done), ``items`` (all), ``claimed`` (open, claimed)."""
        with self.db.connection("read a map job in") as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE done), count(*),"
                f" count(*) FILTER (WHERE NOT done AND NOT ({_OPEN}))"
                " FROM holynb_items i WHERE job = %s",
                (self.job,),
            ).fetchone()
        done, total, claimed = row if row else (0, 0, 0)
        return {"path": self.path, "entries": done, "items": total, "claimed": claimed}

    def clear(self) -> int:
        """Forget the whole job; how many items it had."""
        with self.db.connection("clear a map job in") as conn:
            return conn.execute("DELETE FROM holynb_items WHERE job = %s", (self.job,)).rowcount

    def close(self) -> None:
        """Nothing to close: the pool is shared."""

    def __len__(self) -> int:
        return int(self.stats()["entries"])

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(StoreWarning(message), stacklevel=4)
