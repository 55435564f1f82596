"""The keyed store of finished answers: one SQLite file behind both the checkpoint and the cache.

Each answer is stored under the key of its exact request (``request_key``): a sha256 of a
canonical JSON of who asked (``CallerIdentity``: the endpoint, the wire format and a one-way
fingerprint of the API key) and the request body (model, messages and every parameter that
changes the answer). Another key, or the same body sent in Anthropic's format instead of
OpenAI's, is another request: tenants sharing a file never see each other's answers. Editing
one prompt changes that prompt's key only, so a re-run sends exactly the requests that are not
stored yet (not curator's whole-run fingerprint, where one edited row re-requests every row).

The file is SQLite in WAL mode with ``synchronous=NORMAL``: a ``put`` is committed when it
returns, a ``kill -9`` at any moment loses only the puts that had not returned, and the file is
never corrupted (JSONL tears under SIGKILL with big records: see REFERENCE.md). Several threads
and processes may read and write one file at once: writes wait for each other (busy timeout) and
the last writer of a key wins (``INSERT OR REPLACE``), so no row is lost. Keep the file on a local
disk: WAL does not work over network shares.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any, Protocol

import orjson

from holynb._config import Settings, credential_identity, endpoint_identity
from holynb._sqlite import Migration, SQLiteFile, use_wal
from holynb.errors import ConfigurationError, StoreError, StoreWarning
from holynb.results import ChatResult, Usage

__all__ = ["AnswerStore", "CallerIdentity", "KeyStore", "request_key"]

# Body fields that change how an answer is delivered or billed to whom, never what it says.
IGNORED_PARAMS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
_RESULT_FIELDS = frozenset(f.name for f in fields(ChatResult))
_NOT_STORED = frozenset({"cache_hit", "saved_usd", "interrupted", "parsed"})  # parsed: from text
_STORED = tuple(f.name for f in fields(ChatResult) if f.name not in _NOT_STORED)
_CHUNK = 500  # keys per SELECT ... IN (...)


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who asks, as stored answers know it: ``endpoint`` (``endpoint_identity``: the base URL,
    or ``"holynb-offline"`` for holynb's own offline server whatever its port), ``api`` (the
    wire format, ``"openai"`` or ``"anthropic"``) and ``credential`` (``credential_identity``:
    a one-way fingerprint of the API key, never the key; fixed for the offline server).

    >>> CallerIdentity.of(session.settings)
    CallerIdentity(endpoint='https://api.holysheep.ai/v1', api='openai', credential='5f0c...')
    """

    endpoint: str
    api: str = "openai"
    credential: str = ""

    @classmethod
    def of(cls, settings: Settings) -> CallerIdentity:
        """The identity of a session's settings (the key's fingerprint is computed once)."""
        return cls(endpoint_identity(settings), settings.api, credential_identity(settings))


def request_key(body: Mapping[str, Any], identity: CallerIdentity) -> str:
    """The key of one request: sha256 (hex) of a canonical JSON of who asks and the body.

    Keys are sorted at every level, so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` give one key;
    ``stream``, ``stream_options``, ``user``, ``metadata`` and ``store`` are left out (a streamed
    and a whole answer to the same request share one key). The one key function of every
    store of answers (this SQLite one and any other).

    >>> request_key({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]},
    ...             CallerIdentity.of(session.settings))
    """
    payload = {
        "endpoint": identity.endpoint.rstrip("/"),
        "api": identity.api,
        "credential": identity.credential,
        "body": {k: v for k, v in body.items() if k not in IGNORED_PARAMS},
    }
    data = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=_jsonable)
    return sha256(data).hexdigest()


def _jsonable(value: Any) -> Any:
    # e.g. a pydantic model or a set passed as a parameter: something stable and readable
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def result_to_json(result: ChatResult) -> str:
    """A ChatResult as JSON text (what the store keeps; cache flags are not stored). orjson
    writes the nested Usage itself: ``asdict``'s deep copy cost more than the rest of a
    checkpointed map item's bookkeeping."""
    data = {name: getattr(result, name) for name in _STORED}
    return orjson.dumps(data, default=_jsonable).decode()


class UnreadableAnswer(ValueError):
    """A stored answer that is not what ``result_to_json`` writes (the message says why)."""


def result_from_json(data: bytes | str) -> ChatResult:
    """The ChatResult stored by ``result_to_json`` (fields this holynb does not know are
    ignored, so a file written by a newer holynb still reads). Everything is checked before it
    is believed (a shared file may hold anything): raises ``UnreadableAnswer`` saying why."""
    try:
        values = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError) as err:
        raise UnreadableAnswer(f"not JSON: {err}") from None
    if not isinstance(values, dict):
        raise UnreadableAnswer(f"a JSON {type(values).__name__}, not an object")
    usage = values.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise UnreadableAnswer("usage is not an object")
    stored = {k: v for k, v in values.items() if k in _RESULT_FIELDS and k not in _NOT_STORED}
    stored.pop("usage", None)
    for name in ("text", "model"):
        if name not in stored:
            raise UnreadableAnswer(f"no {name}")
    _check_fields(stored, _RESULT_KINDS)
    counts = {k: v for k, v in usage.items() if k in _USAGE_KINDS}
    _check_fields(counts, _USAGE_KINDS, prefix="usage.")
    try:
        return ChatResult(**stored, usage=Usage(**counts))
    except (TypeError, ValueError) as err:  # e.g. a negative token count
        raise UnreadableAnswer(str(err)) from None


# What each stored field may be (exact types: a bool is not a count); numbers must be finite
# and not below 0.
_NUM = (int, float)
_RESULT_KINDS: dict[str, tuple[type, ...]] = {
    "text": (str,), "model": (str,), "finish_reason": (str, type(None)), "latency_ms": _NUM,
    "ttft_ms": (*_NUM, type(None)), "attempts": (int,), "request_id": (str, type(None)),
    "cost_usd": (*_NUM, type(None)), "warning": (str, type(None)),
}  # fmt: skip
_USAGE_KINDS: dict[str, tuple[type, ...]] = {
    "prompt_tokens": (int,), "completion_tokens": (int,), "cached_tokens": (int,),
    "reasoning_tokens": (int,), "estimated": (bool,), "cache_write_tokens": (int,),
    "service_tier": (str, type(None)), "cache_ttl": (str, type(None)),
}  # fmt: skip


def _check_fields(
    values: Mapping[str, Any], kinds: Mapping[str, tuple[type, ...]], prefix: str = ""
) -> None:
    for name, value in values.items():
        types = kinds.get(name)
        if types is None:
            continue  # a field this table does not list: ChatResult takes it as it is
        kind = type(value)
        if kind not in types or (kind in _NUM and not 0 <= value < math.inf):
            expected = " or ".join(t.__name__ for t in types)
            raise UnreadableAnswer(f"{prefix}{name} is {value!r}, not a valid {expected}")


class AnswerStore(Protocol):
    """A store of finished answers by ``request_key``: a SQLite file (``KeyStore``) or the
    team database (``holynb.team.answers.TeamAnswers``); the cache and checkpoints use only
    these names. ``keep`` warns instead of raising: the answer was paid for already."""

    @property
    def path(self) -> Path | str: ...

    def get(self, key: str) -> ChatResult | None: ...
    def get_many(self, keys: Iterable[str]) -> dict[str, ChatResult]: ...
    def present(self, keys: Iterable[str]) -> set[str]: ...
    def put(self, key: str, result: ChatResult) -> None: ...
    def keep(self, key: str, result: ChatResult) -> bool: ...
    def delete(self, key: str) -> bool: ...
    def stats(self) -> dict[str, Any]: ...
    def clear(self) -> int: ...
    def close(self) -> None: ...
    def __len__(self) -> int: ...


def _m001_answers(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE IF NOT EXISTS answers (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            created TEXT NOT NULL,
            value TEXT NOT NULL
        ) WITHOUT ROWID"""
    )


MIGRATIONS: tuple[Migration, ...] = (_m001_answers,)  # append new ones, never edit old ones


class KeyStore(SQLiteFile):
    """A SQLite file of finished answers keyed by their exact request; safe across processes.

    >>> store = KeyStore("run.sqlite")
    >>> key = request_key(body, CallerIdentity.of(session.settings))
    >>> store.put(key, result)          # committed when it returns
    >>> store.get(key)                  # the ChatResult, or None
    >>> store.get_many([k1, k2])        # {key: ChatResult} for the keys that are stored
    >>> store.stats(), store.clear()
    """

    MIGRATIONS = MIGRATIONS
    WHAT = "answer store"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        super().__init__(path, timeout=timeout)
        self._warned = False  # an unreadable answer was reported
        self._connect()

    def _open(self, db: sqlite3.Connection) -> None:
        use_wal(db)
        _migrate(db)

    def _unusable(self, err: sqlite3.DatabaseError) -> str:
        return (
            f"Cannot use {str(self.path)!r} as a holynb answer store ({err}): give a new "
            "file name, or a checkpoint/cache file holynb wrote."
        )

    def put(self, key: str, result: ChatResult) -> None:
        """Store ``result`` under ``key`` (replacing what was there); committed on return."""
        row = (key, result.model, datetime.now(UTC).isoformat(), result_to_json(result))
        with self._using() as db:
            db.execute(
                "INSERT OR REPLACE INTO answers (key, model, created, value) VALUES (?, ?, ?, ?)",
                row,
            )

    def keep(self, key: str, result: ChatResult) -> bool:
        """``put``, for an answer already received and paid for: when the file cannot take
        it (damaged, locked, disk full) that is warned about once and the caller keeps its
        answer; whether it was stored."""
        try:
            self.put(key, result)
        except (StoreError, sqlite3.Error) as err:
            self._warn_once(
                f"holynb could not store an answer in {str(self.path)!r} ({err}); the answer is "
                "returned all the same, and asked again next time (said once per file)."
            )
            return False
        return True

    def get(self, key: str) -> ChatResult | None:
        """The answer stored under ``key``, or None."""
        with self._using() as db:
            row = db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._read(row[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        """``{key: answer}`` for those of ``keys`` that are stored (one query per 500 keys)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ChatResult] = {}
        with self._using() as db:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, value in rows:
                    result = self._read(value)
                    if result is not None:
                        found[key] = result
        return found

    def _read(self, value: Any) -> ChatResult | None:
        """The answer in a stored ``value``, or None (warned once per store) when it cannot be
        read: treated as not stored, so it is asked again and replaced."""
        try:
            return result_from_json(value)
        except UnreadableAnswer as err:
            self._warn_once(
                f"holynb: an answer stored in {str(self.path)!r} cannot be read ({err}); it is "
                "asked again and replaced (said once per file: others may follow)."
            )
            return None

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(StoreWarning(message), stacklevel=4)

    def _damaged(self, err: sqlite3.DatabaseError) -> str:
        return (
            f"{str(self.path)!r} is damaged ({err}): move it away or delete it, then run again "
            "(the answers it held are asked again when needed; what they cost is already in "
            "the ledger), or give another path."
        )

    def present(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` that are stored (keys only: cheaper than ``get_many``)."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._using() as db:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(f"SELECT key FROM answers WHERE key IN ({marks})", chunk)
                found.update(key for (key,) in rows)
        return found

    def delete(self, key: str) -> bool:
        """Forget the answer under ``key``; whether there was one."""
        with self._using() as db:
            cur = db.execute("DELETE FROM answers WHERE key = ?", (key,))
        return cur.rowcount > 0

    def __contains__(self, key: object) -> bool:
        with self._using() as db:
            row = db.execute("SELECT 1 FROM answers WHERE key = ?", (key,)).fetchone()
        return row is not None

    def __len__(self) -> int:
        with self._using() as db:
            return db.execute("SELECT count(*) FROM answers").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """What the file holds: ``path``, ``entries``, ``bytes`` (file plus WAL), ``models``
        (entries per model)."""
        with self._using() as db:
            rows = db.execute(
                "SELECT model, count(*) FROM answers GROUP BY model ORDER BY model"
            ).fetchall()
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.path.getsize(str(self.path) + suffix)
        return {
            "path": str(self.path),
            "entries": sum(n for _, n in rows),
            "bytes": size,
            "models": dict(rows),
        }

    def clear(self) -> int:
        """Forget every stored answer; how many there were."""
        with self._using() as db:
            cur = db.execute("DELETE FROM answers")
        return cur.rowcount


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")  # several processes may open a new file at once
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise ConfigurationError(
                f"This answer store has schema version {version}, newer than this holynb knows "
                f"({len(MIGRATIONS)}): upgrade holynb, or use another file."
            )
        if version < 1:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if tables and "answers" not in tables:
                raise sqlite3.DatabaseError("the file holds other tables (is it a ledger log?)")
            _m001_answers(db)
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
