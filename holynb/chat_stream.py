"""One streamed call: its text as it arrives, then that call's own ``ChatResult``.

``Session.stream()`` and ``Session.astream()`` return these, so concurrent streams on one session
each keep their own answer (``session.last_result`` is only the most recently finished call).

>>> stream = session.stream("Count to five")
>>> for text in stream:
...     print(text, end="")
>>> stream.result.usage.completion_tokens
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from holynb._loop import LoopThread
    from holynb.results import ChatResult

__all__ = ["AsyncChatStream", "ChatStream"]


class AsyncChatStream:
    """The text of one streamed answer (``async for``), and ``result`` once it has ended.

    ``result`` is the call's ``ChatResult`` as recorded in the ledger: the whole answer, or what
    arrived before the stream was stopped or broke (None if nothing was recorded yet).

    >>> stream = session.astream("Count to five")
    >>> async for text in stream:
    ...     print(text, end="")
    >>> stream.result.text
    """

    def __init__(self) -> None:
        self.result: ChatResult | None = None
        self._texts: AsyncGenerator[str, None] | None = None
        # Set before iterating to hear of retries: on_retry(error, retry, most, wait_s), e.g.
        # a display's "429, retrying 1/2 in 0.5 s". Called on holynb's loop thread.
        self.on_retry: Callable[[Exception, int, int, float], None] | None = None

    def _retrying(self, err: Exception, retry: int, most: int, wait: float) -> None:
        if self.on_retry is not None:
            self.on_retry(err, retry, most, wait)

    def _attach(self, texts: AsyncGenerator[str, None]) -> AsyncChatStream:
        self._texts = texts
        return self

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> str:
        assert self._texts is not None
        return await self._texts.__anext__()

    async def aclose(self) -> None:
        """Stop the request; what arrived is recorded and kept in ``result``."""
        if self._texts is not None:
            await self._texts.aclose()

    def __repr__(self) -> str:
        state = "running" if self.result is None else "done"
        return f"<{type(self).__name__} {state}>"


class ChatStream:
    """The text of one streamed answer (``for``), and ``result`` once it has ended.

    The synchronous twin of ``AsyncChatStream``: the request runs on holynb's loop thread;
    leaving a ``for`` loop over it (``break``, an exception), ``close()`` or KeyboardInterrupt
    stop it, and ``result`` then holds what arrived.

    >>> stream = session.stream("Count to five")
    >>> text = "".join(stream)
    >>> stream.result.cost_usd
    """

    def __init__(self, source: AsyncChatStream, loop: LoopThread) -> None:
        self._source = source
        self._texts: Iterator[str] = loop.iterate(source)

    @property
    def on_retry(self) -> Callable[[Exception, int, int, float], None] | None:
        """Called before each retry's wait (see ``AsyncChatStream.on_retry``)."""
        return self._source.on_retry

    @on_retry.setter
    def on_retry(self, callback: Callable[[Exception, int, int, float], None] | None) -> None:
        self._source.on_retry = callback

    @property
    def result(self) -> ChatResult | None:
        """This call's ``ChatResult`` once the stream has ended (None before)."""
        return self._source.result

    def __iter__(self) -> Iterator[str]:
        """The text deltas. Leaving the loop early (``break``, an exception in its body) stops
        the request at once, so ``result`` holds what arrived as soon as the loop is left.

        A plain ``break`` never calls ``close()`` on the object iterated, and a stream kept in
        a variable is not garbage-collected: so the loop iterates a generator of its own, which
        Python drops (and so closes) the moment the loop ends, and whose ``finally`` closes the
        request."""
        try:
            yield from self._texts
        finally:
            self.close()

    def __next__(self) -> str:
        """The next text delta (for ``next(stream)``; a ``for`` loop uses ``__iter__``)."""
        return next(self._texts)

    def close(self) -> None:
        """Stop the request; what arrived is recorded and kept in ``result``."""
        close = getattr(self._texts, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        state = "running" if self.result is None else "done"
        return f"<{type(self).__name__} {state}>"
