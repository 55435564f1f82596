"""Several models at once: ``Session.compare`` (every prompt to every model, one long frame)
and ``astream_models`` (one prompt streamed from several models, for ``%%llm -m a,b,c``).

The long frame has one row per (prompt, model), prompts in input order and models in the
order given: ``prompt_index``, ``prompt``, ``model`` and the columns of ``map``
(``holynb.frames.RESULT_COLUMNS``). A model that fails (404, 429s after the retries, timeouts)
has its failure on its own rows; the other models' rows are intact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from holynb.errors import APIError, HolynbError

if TYPE_CHECKING:
    import pandas as pd

    from holynb.bulk import MapRun, Prompts
    from holynb.calls.caller import Core
    from holynb.prompts import Prompt
    from holynb.results import ChatResult

__all__ = [
    "LEADING_COLUMNS",
    "acompare",
    "astream_models",
    "compare_sync",
    "long_frame",
    "models_from",
]

LEADING_COLUMNS = ("prompt_index", "prompt", "model")
_RUN_OPTIONS = ("concurrency", "checkpoint", "progress", "errors", "tag")

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
    core: Core, prompt: Prompt, models: Sequence[str], **kwargs: Any
) -> AsyncIterator[Event]:
    """Stream ``prompt`` from every model in ``models`` at once; yields ``(i, kind, payload)``
    events as they happen: ``"text"`` (a delta), then one ``"done"`` (the ChatResult),
    ``"failed"`` (the error) or ``"interrupted"`` per model. One model failing does not stop
    the others. Closing the generator (an interrupt) cancels every stream; each records what
    arrived in the ledger.

    >>> async for i, kind, payload in astream_models(s, "Hi", ["gpt-4.1", "deepseek-v3.2"]):
    ...     ...
    """
    from holynb.answers import split_options, stream_answer
    from holynb.calls.caller import caller_of
    from holynb.parameters import check_params

    caller = caller_of(core)
    named, params = split_options({"kind": "stream", **kwargs})
    check_params(params, "stream")
    queue: asyncio.Queue[Event] = asyncio.Queue()

    async def one(i: int, model: str) -> None:
        try:
            stream = stream_answer(caller, prompt, **{**named, "model": model}, params=params)
            async for text in stream:
                queue.put_nowait((i, "text", text))
            queue.put_nowait((i, "done", stream.result))
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


# -- compare: every prompt to every model ------------------------------------------------------


def _make_run(
    core: Core, prompts: Prompts, models: str | Sequence[str], **kwargs: Any
) -> tuple[MapRun, list[Any]]:
    from holynb.bulk import MapRun, requests_for
    from holynb.prompts import read_prompts

    names = models_from(models)
    if isinstance(prompts, str) or (
        isinstance(prompts, list) and prompts and all(isinstance(m, dict) for m in prompts)
    ):
        prompts = [prompts]  # one prompt (a string or a message list) is welcome here
        if kwargs.get("images") is not None:
            kwargs["images"] = [kwargs["images"]]  # its images: one source or a list
    options = {name: kwargs.pop(name) for name in _RUN_OPTIONS if name in kwargs}
    template = kwargs.pop("template", None)
    parsed = read_prompts(prompts, template, images=kwargs.pop("images", None), what="compare")
    base, index = requests_for(parsed, **kwargs), parsed.index
    requests, labels = [], []
    for label, request in zip(range(len(base)) if index is None else index, base, strict=True):
        for model in names:  # prompt by prompt: every model gets its share from the start
            requests.append(replace(request, model=model))
            labels.append(label)
    run = MapRun(
        core, requests, kind="compare", description="compare",
        shape=lambda frame: long_frame(frame, labels), **options,
    )  # fmt: skip
    return run, labels


def long_frame(frame: pd.DataFrame, labels: Sequence[Any]) -> pd.DataFrame:
    """``frame`` (MapRun's rows, indexed by position) with ``prompt_index`` (the prompt's
    label in the input), ``prompt`` and ``model`` first."""
    out = frame.copy()
    out.insert(0, "prompt_index", [labels[i] for i in frame.index])
    rest = [c for c in out.columns if c not in LEADING_COLUMNS]
    return out[[*LEADING_COLUMNS, *rest]]


async def acompare(
    core: Core, prompts: Prompts, models: str | Sequence[str], **kwargs: Any
) -> pd.DataFrame:
    """``Session.acompare``: the long frame (see the module docstring); ``dry_run=True``: the
    dry run's, one row per (prompt, model), nothing sent (``holynb.dry_run``)."""
    dry_run = kwargs.pop("dry_run", False)
    run, labels = _make_run(core, prompts, models, **kwargs)
    return long_frame(run.plan(), labels) if dry_run else await run.arun()


def compare_sync(
    core: Core, prompts: Prompts, models: str | Sequence[str], **kwargs: Any
) -> pd.DataFrame:
    """``Session.compare``: ``acompare`` on holynb's loop thread; an interrupt raises
    ``MapInterrupted`` with the finished rows (in the long form)."""
    __tracebackhide__ = True  # an interrupt shows the user's cell, not holynb's frames
    from holynb._loop import default_loop
    from holynb.bulk import interrupted

    dry_run = kwargs.pop("dry_run", False)
    run, labels = _make_run(core, prompts, models, **kwargs)
    if dry_run:
        return long_frame(run.plan(), labels)
    try:
        return default_loop().run(run.arun())
    except KeyboardInterrupt:
        raise interrupted(run, "compare", "answers") from None
