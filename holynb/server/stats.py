"""What the local server did, counted on its side, for reconciling with a client's ledger.

Counting rules (chat requests only):

- ``requests``: every ``POST /v1/chat/completions`` or ``/v1/messages`` received, faulted or
  not.
- ``by_status``: responses by HTTP status; ``0`` means the connection was dropped without a
  response (``drop`` fault) and ``499`` that the client had gone before the answer was sent.
- ``completed``: answers delivered to the end (a stream through its finish chunk).
- ``prompt_tokens``: the prompt of every response that delivered content (a whole answer, or
  at least one streamed content chunk).
- ``completion_tokens``: content tokens actually sent; for a complete answer this is the usage
  reported to the client, for a cut or broken stream the chunks sent before it broke.
- ``connections``: TCP connections accepted (any path).

Everything a handler records is stamped with the epoch it started in; ``reset()`` starts a new
epoch, so a slow request left over from before a reset never leaks into the fresh counters.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerStats:
    """A consistent snapshot of the server's counters (see the module docstring)."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    completed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    connections: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (status codes become string keys)."""
        data = asdict(self)
        data["by_status"] = {str(k): v for k, v in sorted(self.by_status.items())}
        data["total_tokens"] = self.total_tokens
        return data


class Recorder:
    """The live counters and the request log, updated from the server's thread."""

    def __init__(self, log_limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._log: deque[dict[str, Any]] = deque(maxlen=log_limit)
        self.epoch = 0
        self._zero()

    def _zero(self) -> None:
        self._requests = 0
        self._by_status: dict[int, int] = {}
        self._completed = 0
        self._prompt = 0
        self._completion = 0
        self._connections = 0

    def connection(self) -> None:
        """A TCP connection was accepted."""
        with self._lock:
            self._connections += 1

    def request(self) -> int:
        """A chat request arrived; the epoch to stamp its outcome with."""
        with self._lock:
            self._requests += 1
            return self.epoch

    def outcome(
        self,
        epoch: int,
        status: int,
        *,
        completed: bool = False,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """How a chat request ended."""
        with self._lock:
            if epoch != self.epoch:
                return
            self._by_status[status] = self._by_status.get(status, 0) + 1
            self._completed += completed
            self._prompt += prompt_tokens
            self._completion += completion_tokens

    def correct(self, epoch: int, *, completed: int = 0, completion_tokens: int = 0) -> None:
        """Undo part of an outcome recorded before its last write, when that write failed."""
        with self._lock:
            if epoch == self.epoch:
                self._completed += completed
                self._completion += completion_tokens

    def log(self, epoch: int, entry: dict[str, Any]) -> None:
        """Add one entry to the request log."""
        with self._lock:
            if epoch == self.epoch:
                self._log.append(entry)

    def snapshot(self) -> ServerStats:
        """The counters as they are now."""
        with self._lock:
            return ServerStats(
                requests=self._requests,
                by_status=dict(self._by_status),
                completed=self._completed,
                prompt_tokens=self._prompt,
                completion_tokens=self._completion,
                connections=self._connections,
            )

    def entries(self) -> list[dict[str, Any]]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Zero the counters, empty the log and start a new epoch."""
        with self._lock:
            self.epoch += 1
            self._zero()
            self._log.clear()
