"""When to retry a failed request and how long to wait first (rules of the official SDKs)."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping

from holynb._config import RetryPolicy


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait the server asked for: ``retry-after-ms``, then ``retry-after`` as seconds or as
    an HTTP date. None when absent or unreadable."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_seconds(policy: RetryPolicy, retries_done: int) -> float:
    """Exponential backoff with jitter: ``min(initial * 2**n, max) * U(0.75, 1)``."""
    base = min(policy.initial_delay * (2.0**retries_done), policy.max_delay)
    return base * (1.0 - 0.25 * random.random())


def should_retry_header(headers: Mapping[str, str] | None) -> bool | None:
    """The server's own verdict from ``x-should-retry``, if it gave one."""
    if not headers:
        return None
    value = headers.get("x-should-retry")
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def plan_retry(
    policy: RetryPolicy,
    retries_done: int,
    *,
    status: int | None,
    headers: Mapping[str, str] | None = None,
) -> tuple[bool, float]:
    """Whether to retry after a failure, and the wait before it.

    ``status`` is None for connection errors and timeouts (always retryable). Returns
    ``(False, retry_after)`` when the server asked for a wait longer than the policy accepts.
    """
    if retries_done >= policy.max_retries:
        return False, 0.0
    verdict = should_retry_header(headers)
    if verdict is False:
        return False, 0.0
    if verdict is None and status is not None and not policy.should_retry_status(status):
        return False, 0.0
    wait = retry_after_seconds(headers)
    if wait is not None:
        if wait > policy.max_retry_after:
            return False, wait
        return True, wait
    return True, backoff_seconds(policy, retries_done)
