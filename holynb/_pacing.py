"""Request and token pacing that works from any event loop and any thread.

A reservation limiter (GCRA): each call reserves its slot under a thread lock and learns how
long to sleep; nothing is bound to an event loop, so the sync facade's loop and a notebook's own
loop share one budget. (aiolimiter was considered: its waiters are futures of one loop, which
breaks the moment sync and async calls share a session.)
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import UTC, datetime


class Pacer:
    """At most ``per_minute`` units per minute, with bursts of up to ``burst`` units.

    >>> p = Pacer(per_minute=60)        # one request a second, one at a time
    >>> await p.acquire()               # sleeps as long as needed
    """

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        self.interval = 60.0 / per_minute
        self.burst = max(1.0, burst if burst is not None else per_minute / 60.0)
        self._tat = 0.0  # theoretical arrival time of the next unit
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def reserve(self, units: float = 1.0) -> float:
        """Reserve ``units`` now; the seconds to wait before using them."""
        with self._lock:
            now = time.monotonic()
            tat = max(self._tat, now, self._blocked_until)
            allowed_at = tat - (self.burst - 1.0) * self.interval
            self._tat = tat + units * self.interval
            return max(0.0, allowed_at - now, self._blocked_until - now)

    def adjust(self, units: float) -> None:
        """Correct an earlier reservation by ``units`` (negative gives budget back)."""
        with self._lock:
            self._tat += units * self.interval

    def block_for(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the server said its budget is spent)."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)

    async def acquire(self, units: float = 1.0) -> None:
        """Wait until ``units`` may be used."""
        delay = self.reserve(units)
        if delay > 0:
            await asyncio.sleep(delay)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """Seconds from an ``x-ratelimit-reset-*`` value such as ``6s``, ``1m30s`` or ``250ms``, or
    until an ``anthropic-ratelimit-*-reset`` time (RFC 3339, e.g. ``2026-11-27T10:00:30Z``)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    if "T" in value:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - time.time())
    parts = _DURATION.findall(value)
    if not parts:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
