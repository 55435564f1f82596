"""Group commit: the statements of many calls in flight written as one, by one thread.

A ``GroupCommit`` owns a queue and a thread. ``submit(item)`` returns a future at once; the
thread takes every item waiting (up to ``limit``), hands them to ``write`` (one statement for all
of them, one round trip) and completes each item's future with its result, or with the
statement's error. Nothing waits on purpose: the first item of a quiet moment is written at
once, and those that arrive while a statement runs go together in the next one. So an item
waits at most for one statement before its own starts, and an event loop awaiting the future
(``asyncio.wrap_future``) keeps serving other calls meanwhile. A submitted item is always
written: its future cannot be cancelled. The thread ends after a few idle seconds and starts
again with the next item (in a forked child too).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

_IDLE_S = 5.0


class _Pending(Future[R]):
    def cancel(self) -> bool:  # a submitted item is written whatever its waiter does
        return False


class GroupCommit(Generic[T, R]):
    """Items written together by one thread: ``write(items)`` returns one result (or an
    exception) per item, in order; an exception it raises fails every item of the group.

    >>> group = GroupCommit(lambda items: [len(items)] * len(items), "example")
    >>> group.submit("a").result()
    1
    """

    def __init__(
        self, write: Callable[[list[T]], Sequence[R | BaseException]], name: str, limit: int = 256
    ) -> None:
        self._write = write
        self.name = name
        self.limit = limit
        self._waiting: list[tuple[T, Future[R]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"GroupCommit({self.name!r})"

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; its future has ``write``'s result for it once its group is written."""
        future: Future[R] = _Pending()
        if self._pid != os.getpid():  # a forked child: what waits is the parent's to write
            self._pid = os.getpid()
            self._waiting, self._thread = [], None
            self._lock = threading.Lock()
            self._wake = threading.Condition(self._lock)
        with self._lock:
            self._waiting.append((item, future))
            thread = self._thread
            if thread is None or not thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._wake.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._wake.wait(_IDLE_S)
                if not self._waiting:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
                group, self._waiting = self._waiting[: self.limit], self._waiting[self.limit :]
            self._commit(group)

    def _commit(self, group: list[tuple[T, Future[R]]]) -> None:
        for _, future in group:
            future.set_running_or_notify_cancel()
        try:
            results = self._write([item for item, _ in group])
        except BaseException as err:  # the whole group failed: each waiter gets the error
            for _, future in group:
                future.set_exception(err)
            return
        for (_, future), result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
