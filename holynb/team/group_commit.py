"""Group commit: the statements of many calls in flight written as one, by one thread.

A ``GroupCommit`` owns a queue and a thread. ``submit(item)`` returns a future at once; the
thread takes every item waiting (up to ``limit``), hands them to ``write`` (one statement for all
of them, one round trip) and completes each item's future with its result, or with the
statement's error. Nothing waits on purpose: the first item of a quiet moment is written at
once, and those that arrive while a statement runs go together in the next one. So an item
waits at most for one statement before its own starts. Unless ``linger`` is given: then the
thread gathers for that many seconds before each statement, for writes nobody waits on
(fewer, larger statements, and fewer wake-ups of a thread that competes with the event loop
for the interpreter). ``wait(item)`` is the same for a task:
its event loop serves other calls meanwhile, and is woken once per group, not once per item.
A submitted item is always written: its future cannot be cancelled. The thread ends after a
few idle seconds and starts again with the next item (in a forked child too). A result nobody
can take any more (its loop closed before the group was written) goes to ``orphan``, if given:
a hold that lands for a task whose loop is gone is released there, not left to its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

_IDLE_S = 5.0


class _Pending(Future[R]):
    def cancel(self) -> bool:  # a submitted item is written whatever its waiter does
        return False


# Who waits for an item: a thread (a concurrent future), or a task on an event loop (an asyncio
# future, completed on its loop: one wake-up of each loop per group, not one per item).
_Waiter = Future[R] | tuple[asyncio.AbstractEventLoop, "asyncio.Future[R]"]


class GroupCommit(Generic[T, R]):
    """Items written together by one thread: ``write(items)`` returns one result (or an
    exception) per item, in order; an exception it raises fails every item of the group.
    ``linger``: seconds to gather items before each statement (0: none).

    >>> group = GroupCommit(lambda items: [len(items)] * len(items), "example")
    >>> group.submit("a").result()
    1
    >>> await group.wait("b")             # on an event loop
    1
    """

    def __init__(
        self,
        write: Callable[[list[T]], Sequence[R | BaseException]],
        name: str,
        limit: int = 256,
        orphan: Callable[[R], None] | None = None,
        linger: float = 0.0,
    ) -> None:
        self._write = write
        self._orphan = orphan
        self.name = name
        self.limit = limit
        self.linger = linger
        self._waiting: list[tuple[T, _Waiter[R]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"GroupCommit({self.name!r})"

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; its future has ``write``'s result for it once its group is written."""
        future: Future[R] = _Pending()
        self._queue(item, future)
        return future

    def wait(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` from a task on the running event loop; the asyncio future has its
        result once its group is written (the item is written even if that future is
        cancelled: await it through ``asyncio.shield``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue(item, (loop, future))
        return future

    def _queue(self, item: T, waiter: _Waiter[R]) -> None:
        if self._pid != os.getpid():  # a forked child: what waits is the parent's to write
            self._pid = os.getpid()
            self._waiting, self._thread = [], None
            self._lock = threading.Lock()
            self._wake = threading.Condition(self._lock)
        with self._lock:
            self._waiting.append((item, waiter))
            thread = self._thread
            if thread is None or not thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._wake.wait(_IDLE_S)
                if not self._waiting:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
            if self.linger:
                time.sleep(self.linger)
            with self._lock:
                group, self._waiting = self._waiting[: self.limit], self._waiting[self.limit :]
            self._commit(group)

    def _commit(self, group: list[tuple[T, _Waiter[R]]]) -> None:
        for _, waiter in group:
            if isinstance(waiter, Future):
                waiter.set_running_or_notify_cancel()
        try:
            results: Sequence[R | BaseException] = self._write([item for item, _ in group])
        except BaseException as err:  # the whole group failed: each waiter gets the error
            results = [err] * len(group)
        on_loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], Any]]] = {}
        for (_, waiter), result in zip(group, results, strict=True):
            if isinstance(waiter, Future):
                if isinstance(result, BaseException):
                    waiter.set_exception(result)
                else:
                    waiter.set_result(result)
            else:
                on_loops.setdefault(waiter[0], []).append((waiter[1], result))
        for loop, done in on_loops.items():
            try:
                loop.call_soon_threadsafe(self._complete, done)
            except RuntimeError:  # that loop is closed: nobody waits
                self._orphans([result for _, result in done])

    def _complete(self, done: list[tuple[asyncio.Future[R], R | BaseException]]) -> None:
        untaken: list[R | BaseException] = []
        for future, result in done:
            if future.done():  # its waiter was cancelled
                untaken.append(result)
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._orphans(untaken)

    def _orphans(self, results: list[R | BaseException]) -> None:
        if self._orphan is None:
            return
        for result in results:
            if not isinstance(result, BaseException):
                with contextlib.suppress(Exception):  # best effort: nobody is left to tell
                    self._orphan(result)
