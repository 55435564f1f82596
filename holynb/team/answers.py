"""The shared response cache in the team database: ``holynb.keystore.KeyStore``'s twin.

``Session(database=URL, cache=True)`` keeps answers in ``holynb_answers``, under the same key as
the SQLite cache (``request_key``: endpoint, wire format, a fingerprint of the credential, and
the request), so a teammate re-running a notebook on another machine sends nothing already
asked, and never sees answers asked with another key. Stored answers are checked when read
(``result_from_json``), as from a file: an unreadable one is asked again and replaced.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from holynb.errors import StoreError, StoreWarning
from holynb.keystore import UnreadableAnswer, result_from_json, result_to_json

if TYPE_CHECKING:
    from holynb.results import ChatResult
    from holynb.team.database import Database

__all__ = ["TeamAnswers"]


class TeamAnswers:
    """Finished answers keyed by their exact request, in the team database.

    >>> store = TeamAnswers(Database.of(url))
    >>> store.put(key, result); store.get(key)
    """

    def __init__(self, db: Database) -> None:
        self.db = db.ensure()
        self.path = f"{db.where} (holynb_answers)"  # how stats and messages name it
        self._warned = False

    def __repr__(self) -> str:
        return f"TeamAnswers({self.db.where!r})"

    def put(self, key: str, result: ChatResult) -> None:
        """Store ``result`` under ``key`` (replacing what was there); committed on return."""
        with self.db.connection("store an answer in") as conn:
            conn.execute(
                "INSERT INTO holynb_answers (key, model, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (key) DO UPDATE SET model = EXCLUDED.model,"
                " value = EXCLUDED.value, created = now()",
                (key, result.model, result_to_json(result)),
            )

    def keep(self, key: str, result: ChatResult) -> bool:
        """``put`` an answer already paid for: a failure is warned about once and the caller
        keeps its answer; whether it was stored."""
        try:
            self.put(key, result)
        except StoreError as err:
            self._warn_once(
                f"holynb could not store an answer in {self.path} ({err}); the answer is "
                "returned all the same, and asked again next time (said once)."
            )
            return False
        return True

    def get(self, key: str) -> ChatResult | None:
        """The answer stored under ``key``, or None."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        """``{key: answer}`` for those of ``keys`` that are stored (one query)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self.db.connection("read answers from") as conn:
            rows = conn.execute(
                "SELECT key, value FROM holynb_answers WHERE key = ANY(%s)", (wanted,)
            ).fetchall()
        found: dict[str, ChatResult] = {}
        for key, value in rows:
            result = self._read(value)
            if result is not None:
                found[key] = result
        return found

    def present(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` that are stored."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        with self.db.connection("read answers from") as conn:
            rows = conn.execute("SELECT key FROM holynb_answers WHERE key = ANY(%s)", (wanted,))
            return {key for (key,) in rows}

    def _read(self, value: Any) -> ChatResult | None:
        try:
            return result_from_json(value)
        except UnreadableAnswer as err:
            self._warn_once(
                f"holynb: an answer stored in {self.path} cannot be read ({err}); it is asked "
                "again and replaced (said once: others may follow)."
            )
            return None

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(StoreWarning(message), stacklevel=4)

    def delete(self, key: str) -> bool:
        """Forget the answer under ``key``; whether there was one."""
        with self.db.connection("delete an answer in") as conn:
            return conn.execute("DELETE FROM holynb_answers WHERE key = %s", (key,)).rowcount > 0

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.present([key]))

    def __len__(self) -> int:
        with self.db.connection("count answers in") as conn:
            row = conn.execute("SELECT count(*) FROM holynb_answers").fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> dict[str, Any]:
        """``path`` (the database, no password), ``entries``, ``bytes`` (of the stored
        answers), ``models`` (entries per model)."""
        with self.db.connection("read answers from") as conn:
            rows = conn.execute(
                "SELECT model, count(*), sum(octet_length(value)) FROM holynb_answers"
                " GROUP BY model ORDER BY model"
            ).fetchall()
        return {
            "path": self.path,
            "entries": sum(n for _, n, _ in rows),
            "bytes": int(sum(b or 0 for _, _, b in rows)),
            "models": {m: n for m, n, _ in rows},
        }

    def clear(self) -> int:
        """Forget every stored answer (the whole team's); how many there were."""
        with self.db.connection("clear answers in") as conn:
            return conn.execute("DELETE FROM holynb_answers").rowcount

    def close(self) -> None:
        """Nothing to close: the database's pool is shared by the process's sessions."""
