"""The ledger: one record per call, failures included, shown as a pandas DataFrame."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from holynb.results import ChatResult


STOPPED = "Interrupted: stopped by the user"


def stopped_by_user(interrupted: Any, error: Any) -> bool:
    """Whether a ledger row is a call the user stopped (Stop button, Interrupt), as opposed to
    a failure: ``interrupted`` is also True for a stream cut by the network (with its error)."""
    if isinstance(error, str):
        return error.startswith("Interrupted")
    return bool(interrupted)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as the ledger keeps it (the columns of ``Session.ledger``)."""

    ts: datetime
    model: str
    kind: str
    ok: bool
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int = 1
    request_id: str | None = None
    tag: str | None = None
    interrupted: bool = False
    usage_estimated: bool = False
    cache_hit: bool = False
    saved_usd: float | None = None
    # the providers' cheaper paths: the tier the answer was served on, prompt-cache writes
    # (inside prompt_tokens, like cached_tokens: the reads) and the cache's ttl asked for
    service_tier: str | None = None
    cache_write_tokens: int = 0
    cache_ttl: str | None = None

    @classmethod
    def from_result(
        cls,
        result: ChatResult,
        *,
        kind: str,
        tag: str | None = None,
        error: str | None = None,
    ) -> CallRecord:
        """The record of a call that produced ``result`` (complete or partial)."""
        u = result.usage
        if error is None and result.interrupted:
            error = STOPPED  # the error kind of a call the user stopped: not a failure
        if error is None:
            error = result.warning  # a repaired answer is not an ok one
        return cls(
            ts=datetime.now(UTC),
            model=result.model,
            kind=kind,
            ok=error is None and not result.interrupted,
            error=error,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            cached_tokens=u.cached_tokens,
            reasoning_tokens=u.reasoning_tokens,
            cost_usd=result.cost_usd,
            latency_ms=round(result.latency_ms, 3),
            ttft_ms=None if result.ttft_ms is None else round(result.ttft_ms, 3),
            attempts=result.attempts,
            request_id=result.request_id,
            tag=tag,
            interrupted=result.interrupted,
            usage_estimated=u.estimated,
            cache_hit=result.cache_hit,
            saved_usd=result.saved_usd,
            service_tier=u.service_tier,
            cache_write_tokens=u.cache_write_tokens,
            cache_ttl=u.cache_ttl,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (``ts`` stays a datetime)."""
        return asdict(self)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CallRecord))


class Ledger:
    """An append-only, thread-safe list of CallRecords.

    >>> session.ledger          # the DataFrame view
    >>> len(session.records)    # the records themselves
    """

    def __init__(self) -> None:
        self._records: list[CallRecord] = []
        self._lock = threading.Lock()

    def append(self, record: CallRecord) -> None:
        """Add one record."""
        with self._lock:
            self._records.append(record)

    def extend(self, records: list[CallRecord]) -> None:
        """Add several records (e.g. loaded from a log)."""
        with self._lock:
            self._records.extend(records)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[CallRecord]:
        with self._lock:
            return iter(list(self._records))

    def to_frame(self) -> pd.DataFrame:
        """The records as a DataFrame with the ledger's columns (empty but typed if none)."""
        import pandas as pd

        with self._lock:
            records = list(self._records)
        # column by column: 16x faster than a dict per row (dataclasses.asdict deep-copies)
        frame = pd.DataFrame(
            {c: [getattr(r, c) for r in records] for c in COLUMNS}, columns=list(COLUMNS)
        )
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        return frame
