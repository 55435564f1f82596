"""Several models at once: ``Session.compare`` (every prompt to every model, one long frame)
and ``astream_models`` (one prompt streamed from several models, for ``%%llm -m a,b,c``).

The long frame has one row per (prompt, model), prompts in input order and models in the
order given: ``prompt_index``, ``prompt``, ``model`` and the columns of ``map``
(``holynb.bulk.RESULT_COLUMNS``). A model that fails (404, 429s after the retries, timeouts)
has its failure on its own rows; the other models' rows are intact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from holynb.errors import APIError, HolynbError

if TYPE_CHECKING:
    from holynb.results import ChatResult
    from holynb.session import Prompt, Session

__all__ = ["astream_models", "models_from"]

Event = tuple[int, str, Any]  # (column, "text" | "done" | "failed" | "interrupted", payload)


def models_from(models: str | Sequence[str]) -> list[str]:
    """A list of model names from a list or a comma-separated string; duplicates dropped.

    >>> models_from("gpt-4.1, claude-sonnet-4-5,gpt-4.1")
    ['gpt-4.1', 'claude-sonnet-4-5']
    """
    names = models.split(",") if isinstance(models, str) else list(models)
    cleaned = [n.strip() for n in names if isinstance(n, str) and n.strip()]
    if not cleaned or len(cleaned) != len(names):
        raise ValueError(
            "models must be model names, e.g. ['gpt-4.1', 'deepseek-v3.2'] or "
            f"'gpt-4.1,deepseek-v3.2', got {models!r}."
        )
    return list(dict.fromkeys(cleaned))


async def astream_models(
    session: Session, prompt: Prompt, models: Sequence[str], **kwargs: Any
) -> AsyncIterator[Event]:
    """Stream ``prompt`` from every model in ``models`` at once; yields ``(i, kind, payload)``
    events as they happen: ``"text"`` (a delta), then one ``"done"`` (the ChatResult),
    ``"failed"`` (the error) or ``"interrupted"`` per model. One model failing does not stop
    the others. Closing the generator (an interrupt) cancels every stream; each records what
    arrived in the ledger.

    >>> async for i, kind, payload in astream_models(s, "Hi", ["gpt-4.1", "deepseek-v3.2"]):
    ...     ...
    """
    queue: asyncio.Queue[Event] = asyncio.Queue()

    async def one(i: int, model: str) -> None:
        try:
            async for text in session.astream(prompt, model=model, **kwargs):
                queue.put_nowait((i, "text", text))
            # Read at once, with no await in between: the result of this very stream.
            queue.put_nowait((i, "done", session.last_result))
        except asyncio.CancelledError:
            raise
        except (HolynbError, ValueError, TypeError) as err:
            queue.put_nowait((i, "failed", err))
        except Exception as err:  # an unexpected bug in one column must not hide the others
            queue.put_nowait((i, "failed", err))

    tasks = [asyncio.ensure_future(one(i, m)) for i, m in enumerate(models)]
    ended = 0
    try:
        while ended < len(tasks):
            event = await queue.get()
            if event[1] in ("done", "failed"):
                ended += 1
            yield event
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def failure_text(err: BaseException) -> str:
    """``"Class: message"`` for a row's ``error`` column (no hint, no traceback)."""
    message = err.message if isinstance(err, APIError) else str(err).split("\nHint:")[0]
    return f"{type(err).__name__}: {message}"


def partial_of(err: BaseException) -> ChatResult | None:
    """What arrived before ``err`` (a stream cut, a schema mismatch), or None."""
    from holynb.results import ChatResult

    for name in ("partial", "result"):
        value = getattr(err, name, None)
        if isinstance(value, ChatResult):
            return value
    return None
