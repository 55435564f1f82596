"""The sync facade's engine: one event loop in a daemon thread, shared by every Session.

Why a thread and not nest-asyncio: a Jupyter cell already runs inside the kernel's loop, so a sync
call cannot simply ``asyncio.run``. nest-asyncio patches asyncio globally to re-enter the running
loop, which breaks other libraries' assumptions and leaves half-finished tasks behind when the
kernel interrupts a call. A dedicated loop thread works the same in a notebook, a script and
inside an asyncio program; a KeyboardInterrupt in the calling thread cancels the task on the loop,
which closes its connection, and the loop itself is never touched by the interrupt.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_CANCEL_GRACE_S = 5.0


class LoopThread:
    """A private event loop running in a daemon thread.

    >>> loop = LoopThread()
    >>> loop.run(asyncio.sleep(0.1, result=42))
    42
    """

    def __init__(self, name: str = "holynb-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        if self._loop is None or self._loop.is_closed():
            with self._lock:
                if self._loop is None or self._loop.is_closed():
                    self._start()
        assert self._loop is not None
        return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=main, name=self._name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def in_loop_thread(self) -> bool:
        """Whether the caller is running on this loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def _check_caller(self) -> None:
        if self.in_loop_thread():
            raise RuntimeError(
                "A sync holynb call was made from holynb's own event loop; use the async "
                "form (await session.achat(...)) there."
            )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it. KeyboardInterrupt cancels it cleanly."""
        self._check_caller()
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            concurrent.futures.wait([future], timeout=_CANCEL_GRACE_S)
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator on the loop from synchronous code.

        Items cross threads in batches: the loop side appends to a queue, this side drains it.
        Stopping early (``break``, an exception, KeyboardInterrupt) cancels the loop side and
        waits for its cleanup, so what it records is complete when this returns.
        """
        self._check_caller()
        items: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for item in agen:
                    items.put((0, item))
            except BaseException as exc:  # handed to the consumer, re-raised there
                items.put((1, exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                items.put((2, None))
            finally:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()

        future = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        finished = False
        try:
            while True:
                kind, value = items.get()
                if kind == 0:
                    yield value
                elif kind == 1:
                    finished = True
                    raise value
                else:
                    finished = True
                    return
        finally:
            if not finished:
                future.cancel()
            concurrent.futures.wait([future], timeout=_CANCEL_GRACE_S)

    def shutdown(self) -> None:
        """Close what the loop's async generators hold (connection pools), then stop it."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(2.0)
        loop.call_soon_threadsafe(loop.stop)


_default: LoopThread | None = None
_default_lock = threading.Lock()


def in_default_loop() -> bool:
    """Whether the caller runs on the sync facade's loop (a sync call being served)."""
    return _default is not None and _default.in_loop_thread()


def default_loop() -> LoopThread:
    """The process-wide loop thread used by every Session's sync methods."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = LoopThread()
                atexit.register(_default.shutdown)
    return _default
