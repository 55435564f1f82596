"""The response cache: answers already received are given again without sending anything.

``Session(cache="cache.sqlite")`` (or ``cache=True`` for ``$HOLYNB_HOME/cache.sqlite``, or the
``HOLYNB_CACHE`` environment variable) keeps every complete, successful answer in a ``KeyStore``
keyed by its exact request; asking the same thing again (same endpoint, model, messages and
parameters, and the same asker: the wire format and the API key, see ``CallerIdentity``) is
answered from the file: nothing is sent, nothing is billed. That is what makes a tutorial re-run
free and identical for everyone (holynb's offline server has one identity whatever its port).

Per call, ``cache=False`` neither reads nor writes the cache and ``cache="refresh"`` asks again
and replaces the stored answer (``%%llm --no-cache`` and ``--refresh`` in a notebook).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from holynb._config import Settings, holynb_home
from holynb.errors import ConfigurationError
from holynb.keystore import AnswerStore, CallerIdentity, KeyStore, request_key
from holynb.results import ChatResult

__all__ = ["CACHE_ENV", "CallCache", "ResponseCache", "cache_report", "open_cache"]

CACHE_ENV = "HOLYNB_CACHE"
DEFAULT_FILE = "cache.sqlite"
CallCache = bool | Literal["refresh"] | None  # a call's cache= argument
_ON = {"1", "true", "yes", "on"}
_OFF = {"", "0", "false", "no", "off"}
_PIECE = re.compile(r"\S+\s*|\s+")
_PIECE_CHARS = 24
_NOT_AN_ANSWER = frozenset({"error", "content_filter"})  # finish reasons never stored


class ResponseCache:
    """A session's response cache: a ``KeyStore`` plus this session's hit and miss counts.

    >>> s = holynb.Session(cache="cache.sqlite")
    >>> s.chat("Say hi"); s.chat("Say hi")   # the second is a hit: nothing sent
    >>> s.cache.stats()   # entries, bytes, hits, misses, saved_usd (this session), path
    >>> s.cache.clear()   # forget every stored answer
    """

    def __init__(self, path: str | os.PathLike[str] | AnswerStore, settings: Settings) -> None:
        self.store: AnswerStore = (
            KeyStore(path) if isinstance(path, (str, os.PathLike)) else path
        )  # a file, or a store already open (the team database's, a derived session's)
        self.base_url = settings.base_url
        self.identity = CallerIdentity.of(settings)  # whose answers: the key covers it
        self.hits = 0
        self.misses = 0
        self.saved_usd = 0.0
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | str:
        """The cache file (or, in a team database, ``host:port/db (holynb_answers)``)."""
        return self.store.path

    def key(self, body: Mapping[str, Any]) -> str:
        """The key of a request body asked by this cache's session (its ``identity``)."""
        return request_key(body, self.identity)

    def lookup(self, body: Mapping[str, Any]) -> ChatResult | None:
        """The stored answer to ``body`` (counted as a hit), or None (counted as a miss)."""
        found = self.store.get(self.key(body))
        with self._lock:
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
        return found

    def has(self, body: Mapping[str, Any]) -> bool:
        """Whether an answer to ``body`` is stored (not counted as a hit or a miss)."""
        key = self.key(body)
        return key in self.store.present([key])

    def note_saved(self, saved_usd: float | None) -> None:
        """Add what a hit would have cost to this session's savings."""
        if saved_usd:
            with self._lock:
                self.saved_usd += saved_usd

    def save(self, body: Mapping[str, Any], result: ChatResult) -> bool:
        """Store ``result`` as the answer to ``body`` if it is complete; whether it was (a file
        that cannot take it is warned about once: the caller keeps its answer)."""
        if not is_complete(result):
            return False
        return self.store.keep(self.key(body), result)

    def stats(self) -> dict[str, Any]:
        """``entries``, ``bytes`` and ``models`` of the file, and this session's ``hits``,
        ``misses`` and ``saved_usd`` (what the hits would have cost)."""
        with self._lock:
            counts = {"hits": self.hits, "misses": self.misses, "saved_usd": self.saved_usd}
        return {**self.store.stats(), **counts}

    def clear(self) -> int:
        """Forget every stored answer (for every session using this file); how many."""
        return self.store.clear()

    def close(self) -> None:
        """Close the file."""
        self.store.close()

    def __len__(self) -> int:
        return len(self.store)

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"


# What Session.cache takes: a file, True/False/None, an open cache or store.
CacheSetting = bool | str | os.PathLike[str] | ResponseCache | AnswerStore | None


def is_complete(result: ChatResult) -> bool:
    """Whether ``result`` is a clean, whole, successful answer worth storing (cache and
    checkpoint): ended by the server with a finish reason, not interrupted, nothing repaired
    in it (``warning``: e.g. a stream whose bytes were not UTF-8, its text mangled to U+FFFD),
    not stopped by a content filter, and not empty. Anything else is asked again next time."""
    return (
        not result.interrupted
        and result.finish_reason is not None
        and result.finish_reason not in _NOT_AN_ANSWER
        and result.warning is None
        and result.text != ""
    )


def as_hit(stored: ChatResult, *, saved_usd: float | None, latency_ms: float) -> ChatResult:
    """The ChatResult a cache hit returns: the stored answer, free, marked as a hit."""
    return replace(
        stored,
        cost_usd=0.0,
        cache_hit=True,
        saved_usd=saved_usd,
        latency_ms=latency_ms,
        ttft_ms=latency_ms,
        attempts=0,
        interrupted=False,
    )


def replay_pieces(text: str, size: int = _PIECE_CHARS) -> Iterator[str]:
    """``text`` cut at word boundaries into pieces of about ``size`` characters, so a cached
    answer still arrives in a stream's widget piece by piece."""
    piece = ""
    for match in _PIECE.finditer(text):
        piece += match.group()
        if len(piece) >= size:
            yield piece
            piece = ""
    if piece:
        yield piece


def open_cache(
    cache: CacheSetting,
    settings: Settings,
    log: Any = None,
) -> ResponseCache | None:
    """The cache a Session asked for: ``True`` (the default: in the team database when the
    session's ledger ``log`` is there, else a file under ``HOLYNB_HOME``), a path, an open
    store, ``False`` (none), or None (the ``HOLYNB_CACHE`` environment variable: ``1``/``true``
    for the default, a path, or unset for none)."""
    if isinstance(cache, ResponseCache):
        return cache
    if all(hasattr(cache, name) for name in ("get_many", "keep", "present")):
        return ResponseCache(cache, settings)  # type: ignore[arg-type]  # an open AnswerStore
    if cache is None:
        value = os.environ.get(CACHE_ENV, "").strip()
        if value.lower() in _OFF:
            return None
        cache = True if value.lower() in _ON else value
    if cache is False:
        return None
    if cache is True:
        shared = log.answer_store() if log is not None else None
        return ResponseCache(holynb_home() / DEFAULT_FILE if shared is None else shared, settings)
    if isinstance(cache, (str, os.PathLike)) and str(cache).strip():
        return ResponseCache(cache, settings)
    raise ConfigurationError(
        f"cache must be True, False, or a file path such as 'cache.sqlite', got {cache!r}."
    )


def cache_report(cache: ResponseCache | None) -> str:
    """A few lines about ``cache`` for ``%llm cache`` (or how to turn one on)."""
    if cache is None:
        return (
            "No response cache. Turn it on with %llm cache on [PATH], "
            "holynb.Session(cache=True), or HOLYNB_CACHE=1 in the environment."
        )
    st = cache.stats()
    models = ", ".join(f"{m} {n}" for m, n in st["models"].items()) or "none"
    rows = [
        ("cache", st["path"]),
        ("entries", f"{st['entries']:,} ({st['bytes'] / 1024:,.1f} KB): {models}"),
        ("hits", f"{st['hits']:,}, misses: {st['misses']:,} (this session)"),
        ("saved", f"${st['saved_usd']:,.4f} this session"),
    ]
    return "\n".join(f"{k:>9}: {v}" for k, v in rows)
