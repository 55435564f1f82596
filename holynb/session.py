"""The Session: the user's handle on an endpoint. Calls, streams, and the ledger of every call.

Async first; the sync methods run the same coroutines on holynb's loop thread (see ``_loop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import threading
import time
import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from holynb._config import (
    RetryPolicy,
    Secret,
    Settings,
    Timeout,
    is_loopback_url,
    resolve_settings,
)
from holynb._loop import default_loop
from holynb.budget import Budget
from holynb.chat_stream import AsyncChatStream, ChatStream
from holynb.errors import APIError, BudgetExceededError, HolynbWarning
from holynb.ledger import CallRecord, Ledger
from holynb.results import ChatResult, CostEstimate, Usage

if TYPE_CHECKING:
    import pandas as pd

    from holynb._client import ChatClient
    from holynb.batch_jobs import BatchJob
    from holynb.bulk import Prompts
    from holynb.cache import CallCache, ResponseCache
    from holynb.images import ImagePreset
    from holynb.prices import PriceTable
    from holynb.store import LedgerStore

Prompt = str | Sequence[dict[str, Any]]


class _Unchanged:
    """The default of ``Session.derive`` arguments where ``None`` has a meaning."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()


class LogWriteWarning(HolynbWarning):
    """A call could not be written to the ledger log file; it is in ``session.ledger`` only."""


class Session:
    """A connection to one OpenAI-compatible endpoint that records every call.

    Explicit arguments win over environment variables (``HOLYSHEEP_API_KEY`` or
    ``HOLYNB_API_KEY``, ``HOLYNB_BASE_URL``, ``HOLYNB_MODEL``), which win over defaults.

    >>> s = holynb.Session(model="gpt-4.1")
    >>> r = s.chat("Say hi")
    >>> r.text, r.usage.total_tokens, r.latency_ms
    >>> stream = s.stream("Count to five")
    >>> for text in stream: print(text, end="")
    >>> stream.result.cost_usd
    >>> s.ledger            # one row per call, failures included

    ``api="anthropic"`` (or ``HOLYNB_API``) speaks Anthropic's Messages API instead of OpenAI's
    chat completions: ``POST {base_url}/messages`` (``{base_url}/v1/messages`` for a root URL),
    the key as ``x-api-key`` (``bearer=True`` also sends it as ``Authorization: Bearer``, for
    relays that want it), ``max_tokens`` always sent; everything else works the same.

    ``budget_usd`` refuses calls before sending once they could exceed it (a call must then have
    a known price, and ``max_tokens`` unless the model is free or its context window is known);
    ``log_path`` (or ``HOLYNB_LOG_PATH``) keeps every call in SQLite and reloads it on start,
    and a budget counts the calls other processes append to the same file; ``prices`` adds or
    overrides USD prices per million tokens, e.g. ``{"my-model": {"input": 3, "output": 15}}``;
    ``cache`` (a file, or True for one under ``HOLYNB_HOME``; env ``HOLYNB_CACHE``) answers a
    request already asked from the file, sending nothing (see ``holynb.cache``);
    ``max_image_bytes`` is the size limit per image (by default 20 MB, and 5 MB with
    ``api="anthropic"``, Anthropic's limit; see ``holynb.images``).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        api: str | None = None,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: Timeout | float | None = None,
        concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        budget_usd: float | None = None,
        log_path: str | os.PathLike[str] | None = None,
        prices: Mapping[str, Mapping[str, Any]] | None = None,
        cache: bool | str | os.PathLike[str] | None = None,
        bearer: bool | None = None,
        max_image_bytes: int | None = None,
    ) -> None:
        self.settings: Settings = resolve_settings(
            api=api,
            bearer=bearer,
            base_url=base_url,
            api_key=api_key,
            model=model,
            timeout=timeout,
            max_retries=max_retries,
            retry=retry,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
        )
        from holynb.prices import PriceTable
        from holynb.worst_case import WorstCase

        self._bounds = WorstCase(PriceTable.default(self.settings.base_url, prices), self.api)
        _prefetch(self.prices.needs_genai_prices(self.settings.model))
        self._ledger = Ledger()
        if log_path is None and os.environ.get("HOLYNB_LOG_PATH", "").strip():
            from holynb.store import default_log_path

            log_path = default_log_path()
        self._store: LedgerStore | None = None
        if log_path:  # sqlite3 and the store load only for a log
            from holynb.store import LedgerStore

            self._store = LedgerStore(log_path)
            self._ledger.extend(self._store.load())  # a restarted kernel picks up where it was
        self._budget: Budget | None = None
        if budget_usd is not None:
            self.budget_usd = budget_usd
        self._client_obj: ChatClient | None = None
        self._log_warned = False
        # The most recently finished call (with concurrent calls, whichever ended last): a
        # call's own result is what chat() returns and a stream's ``result``.
        self.last_result: ChatResult | None = None
        self._cache: ResponseCache | None = None
        self.cache = cache
        from holynb.structured import FormatSupport

        self._format_support = FormatSupport()  # which endpoints take response_format json_schema
        self._max_image_bytes = max_image_bytes

    # -- configuration -------------------------------------------------------------------------

    @property
    def max_image_bytes(self) -> int:
        """The size limit per image: as given, else 5 MB with ``api="anthropic"`` and 20 MB
        with OpenAI's format."""
        if self._max_image_bytes is not None:
            return self._max_image_bytes
        from holynb.images import default_max_image_bytes

        return default_max_image_bytes(getattr(self.settings, "api", "openai"))

    @max_image_bytes.setter
    def max_image_bytes(self, limit: int | None) -> None:
        self._max_image_bytes = limit

    @property
    def prices(self) -> PriceTable:
        """The prices this session charges calls at (USD per million tokens); settable."""
        return self._bounds.prices

    @prices.setter
    def prices(self, table: PriceTable) -> None:
        self._bounds.prices = table

    @property
    def model(self) -> str:
        """The default model of this session."""
        return self.settings.model

    @property
    def api(self) -> str:
        """The wire format: ``"openai"`` (chat completions) or ``"anthropic"`` (messages)."""
        return self.settings.api

    @property
    def base_url(self) -> str:
        """The endpoint this session talks to."""
        return self.settings.base_url

    @property
    def is_local(self) -> bool:
        """Whether the endpoint is on this machine (no key needed unless it asks for one): holynb's
        offline server or any other (vLLM, Ollama, a LiteLLM relay). Whether it is holynb's own
        offline server, with its ``local/...`` models, is ``uses_offline_server``."""
        return is_loopback_url(self.settings.base_url)

    @property
    def uses_offline_server(self) -> bool:
        """Whether the endpoint is holynb's own offline server running in this process (a
        ``LocalServer``, e.g. from ``holynb.local_session()``; its token is sent unless another
        ``api_key`` was given). ``is_local`` is broader: any endpoint on this machine."""
        from holynb._config import offline_server_token

        return offline_server_token(self.settings.base_url) is not None

    @property
    def _client(self) -> ChatClient:
        if self._client_obj is None:
            if not self.is_local:
                self.settings.require_key()
            from holynb._client import ChatClient  # the HTTP stack loads on first use

            self._client_obj = ChatClient(self.settings)
        return self._client_obj

    @property
    def budget_usd(self) -> float | None:
        """The spending limit in USD (None: no limit). Settable; past calls count against it."""
        return None if self._budget is None else self._budget.limit_usd

    @budget_usd.setter
    def budget_usd(self, limit: float | None) -> None:
        if limit is None:
            self._budget = None
            return
        # With a log, reservations live in the file: kernels sharing it hold one budget.
        self._budget = Budget(
            limit,
            spent_usd=self.total_cost_usd,
            shared=self._store,
            on_others=self._ledger.extend,
        )

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache (None: no cache). Settable: a path, True, False or None.

        >>> s.cache.stats(); s.cache.clear()
        """
        return self._cache

    @cache.setter
    def cache(self, cache: bool | str | os.PathLike[str] | ResponseCache | None) -> None:
        if cache is False or (cache is None and not os.environ.get("HOLYNB_CACHE", "").strip()):
            self._cache = None  # no cache asked for: sqlite3 and the store stay unimported
            return
        from holynb.cache import open_cache

        self._cache = open_cache(cache, self.settings.base_url)

    def derive(
        self,
        *,
        model: str | None = None,
        api: str | None = None,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        budget_usd: float | _Unchanged | None = UNCHANGED,
    ) -> Session:
        """A new session like this one with some settings changed; the rest (retries,
        timeouts, limits, the key unless given) stays, and so do the prices, the log file, the
        response cache and the ledger (past spending counts against ``budget_usd``, which
        stays the same unless given; ``None`` removes it).

        >>> s2 = s.derive(model="deepseek-v3.2")
        """
        settings = self.settings
        fresh = Session(
            model=model or self.model,
            api=api or settings.api,
            bearer=settings.bearer,
            base_url=base_url or self.base_url,
            api_key=api_key or settings.api_key,
            retry=settings.retry,
            timeout=settings.timeout,
            concurrency=settings.limits.concurrency,
            rpm=settings.limits.rpm,
            tpm=settings.limits.tpm,
            log_path="",  # not HOLYNB_LOG_PATH again: this session's open log carries over
            max_image_bytes=self._max_image_bytes,
        )
        fresh.prices = self.prices
        fresh._store = self._store
        fresh.cache = self.cache.path if self.cache is not None else False
        fresh._ledger.extend(self.records)
        # after the ledger, so that past spending counts
        fresh.budget_usd = self.budget_usd if isinstance(budget_usd, _Unchanged) else budget_usd
        return fresh

    def __repr__(self) -> str:
        key = "set" if self.settings.api_key else "missing"
        api = f", api={self.api!r}" if self.api != "openai" else ""
        return (
            f"Session(model={self.model!r}{api}, base_url={self.base_url!r}, key={key}, "
            f"calls={len(self._ledger)}, cost={self.cost_summary()})"
        )

    def _repr_html_(self) -> str:
        from holynb.report import summary_html

        title = f"holynb session: {self.base_url}"
        return summary_html(self.summary(), self.total_cost_usd, self.unpriced_calls, title)

    # -- requests ------------------------------------------------------------------------------

    def _body(
        self,
        prompt: Prompt,
        model: str | None,
        system: str | None,
        temperature: float | None,
        max_tokens: int | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model or self.settings.model,
            "messages": build_messages(prompt, system),
        }
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        elif self.settings.api == "anthropic" and "max_completion_tokens" not in params:
            from holynb._wire.anthropic import DEFAULT_MAX_TOKENS

            body["max_tokens"] = DEFAULT_MAX_TOKENS  # always sent: budgets and caches see it
        body.update(params)
        return body

    def _with_images(
        self, prompt: Prompt, system: str | None, images: Any, preset: str | ImagePreset | None
    ) -> tuple[Prompt, str | None]:
        """The prompt as messages with ``images`` prepared (bad or oversized ones refused
        before anything is sent) and added to its last user message; unchanged without."""
        if images is None:
            return prompt, system
        from holynb.images import attach_images, prepare_images

        prepared = prepare_images(images, preset, max_bytes=self.max_image_bytes)
        return attach_images(build_messages(prompt, system), prepared), None

    async def achat(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tag: str | None = None,
        kind: str = "chat",
        cache: CallCache = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> ChatResult:
        """Ask once and wait for the whole answer (async). Extra keyword arguments go into the
        request body as they are (``top_p=``, ``response_format=``, ...). With a response cache,
        ``cache=False`` skips it for this call and ``cache="refresh"`` asks again.

        ``schema`` (a pydantic model class or a JSON schema dict) asks for a structured answer:
        ``result.parsed`` holds it validated; see :mod:`holynb.structured`. Raises
        ``SchemaValidationError`` when it still does not fit after one repair round-trip.

        ``images``: paths, bytes, PIL images, URLs, figures or arrays sent with the prompt,
        shrunk by ``image_preset`` (``"high"``, ``"medium"``, ``"low"`` or an ``ImagePreset``);
        see :mod:`holynb.images`."""
        prompt, system = self._with_images(prompt, system, images, image_preset)
        if schema is not None:
            from holynb.structured import achat_structured

            if temperature is not None:
                params["temperature"] = temperature
            if max_tokens is not None:
                params["max_tokens"] = max_tokens
            if cache is not None:
                params["cache"] = cache
            return await achat_structured(
                self, prompt, schema, model=model, system=system, tag=tag, kind=kind, **params
            )
        body = self._body(prompt, model, system, temperature, max_tokens, params)
        hit = self._cache_hit(body, cache, kind, tag)
        if hit is not None:
            return hit
        client = self._client
        hold = self._reserve(body)
        try:
            result = await client.complete(body)
        except APIError as err:
            self._record_failure(body, kind, tag, hold, err, err.partial)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._record_failure(body, kind, tag, hold, None, None, interrupted=True)
            raise
        else:
            result = self._record(result, body, kind, tag, hold)
            self._cache_save(body, result, cache)
            return result
        finally:
            self._release(hold)  # whatever happened above, the reservation ends with the call

    def chat(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tag: str | None = None,
        kind: str = "chat",
        cache: CallCache = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> ChatResult:
        """Ask once and wait for the whole answer. Works in a notebook cell, a script, and
        inside a running asyncio program.

        >>> r = s.chat("Say hi", max_tokens=20)
        >>> r.text, r.cost_usd

        ``system`` is a system message; ``tag`` labels the ledger row; ``cache=False`` skips
        the response cache for this call and ``cache="refresh"`` asks again; ``schema`` (a
        pydantic model or a JSON schema dict) asks for a structured answer in
        ``result.parsed``; ``images`` (paths, bytes, PIL images, URLs, figures, arrays) go with
        the prompt, prepared by ``image_preset``. Other keyword arguments go into the request
        body as they are (``top_p=``, ``response_format=``, ...). The async twin is ``achat``."""
        return default_loop().run(
            self.achat(
                prompt, model=model, system=system, temperature=temperature,
                max_tokens=max_tokens, tag=tag, kind=kind, cache=cache, schema=schema,
                images=images, image_preset=image_preset, **params,
            )
        )  # fmt: skip

    def astream(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tag: str | None = None,
        kind: str = "stream",
        cache: CallCache = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> AsyncChatStream:
        """The answer's text as it arrives (``async for``). When the stream ends, stops early or
        fails, what arrived is recorded in the ledger and kept in the stream's own ``result``.
        A cached answer is replayed in pieces (``cache=`` as for ``achat``). ``schema`` asks
        for a structured answer, validated when the stream ends (into ``result.parsed``); no
        repair round-trip, since the text was shown. ``images`` and ``image_preset`` as for
        ``achat`` (prepared, or refused, when the stream is made).

        >>> stream = s.astream("Count to five")
        >>> async for text in stream: print(text, end="")
        >>> stream.result.usage
        """
        prompt, system = self._with_images(prompt, system, images, image_preset)
        stream = AsyncChatStream()
        args = (prompt, model, system, temperature, max_tokens, tag, kind, cache, schema, params)
        return stream._attach(self._stream_texts(stream, *args))

    async def _stream_texts(
        self,
        stream: AsyncChatStream,
        prompt: Prompt,
        model: str | None,
        system: str | None,
        temperature: float | None,
        max_tokens: int | None,
        tag: str | None,
        kind: str,
        cache: CallCache,
        schema: Any,
        params: dict[str, Any],
    ) -> AsyncGenerator[str, None]:
        from holynb._client import StreamState

        if schema is not None:
            from holynb.structured import astream_structured

            if temperature is not None:
                params["temperature"] = temperature
            if max_tokens is not None:
                params["max_tokens"] = max_tokens
            if cache is not None:
                params["cache"] = cache
            async for text in astream_structured(
                self,
                prompt,
                schema,
                stream,
                model=model,
                system=system,
                tag=tag,
                kind=kind,
                **params,
            ):
                yield text
            return

        body = self._body(prompt, model, system, temperature, max_tokens, params)
        hit = self._cache_hit(body, cache, kind, tag)
        if hit is not None:
            from holynb.cache import replay_pieces

            stream.result = hit
            for piece in replay_pieces(hit.text):
                yield piece
                await asyncio.sleep(0)
            return
        client = self._client
        hold = self._reserve(body)
        progress = StreamState(model=body["model"], on_retry=stream._retrying)
        try:
            async for text in client.stream(body, progress):
                yield text
        except APIError as err:
            self._record_failure(body, kind, tag, hold, err, err.partial)
            stream.result = err.partial
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            stream.result = self._record(progress.result(interrupted=True), body, kind, tag, hold)
            raise
        else:
            stream.result = self._record(progress.result(), body, kind, tag, hold)
            self._cache_save(body, stream.result, cache)
        finally:
            self._release(hold)

    def stream(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tag: str | None = None,
        kind: str = "stream",
        cache: CallCache = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> ChatStream:
        """The answer's text as it arrives (``for``), then the call's own ``result``. The
        arguments are ``chat``'s; an interrupt or a ``break`` stops the request and records
        what arrived. The async twin is ``astream``.

        >>> stream = s.stream("Count to five")
        >>> text = "".join(stream)
        >>> stream.result.cost_usd
        """
        return ChatStream(
            self.astream(
                prompt, model=model, system=system, temperature=temperature,
                max_tokens=max_tokens, tag=tag, kind=kind, cache=cache, schema=schema,
                images=images, image_preset=image_preset, **params,
            ),
            default_loop(),
        )  # fmt: skip

    async def amap(
        self,
        prompts: Prompts,
        *,
        template: str | None = None,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        concurrency: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        progress: bool = True,
        errors: str = "record",
        tag: str | None = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> pd.DataFrame:
        """Ask many prompts concurrently (async); see ``map``."""
        from holynb.bulk import amap

        return await amap(
            self, prompts, template=template, model=model, system=system,
            temperature=temperature, max_tokens=max_tokens, concurrency=concurrency,
            checkpoint=checkpoint, progress=progress, errors=errors, tag=tag, schema=schema,
            images=images, image_preset=image_preset, **params,
        )  # fmt: skip

    def map(
        self,
        prompts: Prompts,
        *,
        template: str | None = None,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        concurrency: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        progress: bool = True,
        errors: str = "record",
        tag: str | None = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> pd.DataFrame:
        """Ask many prompts concurrently; one row per prompt, in input order.

        >>> df = s.map(reviews, template="Classify: {review}", checkpoint="run.sqlite")
        >>> reviews.join(df[["text", "ok"]])

        ``prompts``: a list of strings or message lists, a pandas Series, or a DataFrame with
        ``template``. A failed item is recorded on its row (``ok=False``, ``error``); with
        ``errors="raise"`` the first failure stops the run. ``checkpoint`` keeps every finished
        answer in a file as it arrives: running the same call again sends only what is not
        stored. An interrupt raises ``holynb.MapInterrupted`` carrying the finished rows
        (``.frame``). ``schema`` (a pydantic model or a JSON schema) asks each item for a
        structured answer: its fields become columns, and an answer that does not fit (after
        one repair) is that item's error. ``images``: one entry per prompt (a source, a list of
        sources, or None), or with a DataFrame the name of its column of images; a bad image
        is that item's error. See ``holynb.bulk`` for the columns.
        """
        from holynb.bulk import map_sync

        return map_sync(
            self, prompts, template=template, model=model, system=system,
            temperature=temperature, max_tokens=max_tokens, concurrency=concurrency,
            checkpoint=checkpoint, progress=progress, errors=errors, tag=tag, schema=schema,
            images=images, image_preset=image_preset, **params,
        )  # fmt: skip

    async def acompare(
        self,
        prompts: Prompts,
        models: str | Sequence[str],
        *,
        template: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        concurrency: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        progress: bool = True,
        errors: str = "record",
        tag: str | None = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> pd.DataFrame:
        """Every prompt to every model, concurrently (async); see ``compare``."""
        from holynb.compare import acompare

        return await acompare(
            self, prompts, models, template=template, system=system, temperature=temperature,
            max_tokens=max_tokens, concurrency=concurrency, checkpoint=checkpoint,
            progress=progress, errors=errors, tag=tag, schema=schema, images=images,
            image_preset=image_preset, **params,
        )  # fmt: skip

    def compare(
        self,
        prompts: Prompts,
        models: str | Sequence[str],
        *,
        template: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        concurrency: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        progress: bool = True,
        errors: str = "record",
        tag: str | None = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> pd.DataFrame:
        """Every prompt to every model, concurrently; one row per (prompt, model).

        >>> cmp = s.compare(["Define entropy"], models=["gpt-4.1", "deepseek-v3.2"])
        >>> holynb.side_by_side(cmp)    # one row per prompt, a column group per model

        Columns: ``prompt_index`` (the prompt's label in the input), ``prompt``, ``model``, then
        map's columns (and the fields of ``schema``). A model that fails (404, 429s, timeouts)
        has the failure on its own rows; the others are intact. ``prompts``, ``template``,
        ``checkpoint``, ``concurrency``, ``images`` (one entry per prompt; every model gets the
        same images) and the rest work as in ``map``. With one prompt, ``images`` is that
        prompt's images (one source or a list).
        """
        from holynb.compare import compare_sync

        return compare_sync(
            self, prompts, models, template=template, system=system, temperature=temperature,
            max_tokens=max_tokens, concurrency=concurrency, checkpoint=checkpoint,
            progress=progress, errors=errors, tag=tag, schema=schema, images=images,
            image_preset=image_preset, **params,
        )  # fmt: skip

    async def amodels(self) -> list[str]:
        """The model ids the endpoint offers (async)."""
        payload = await self._client.get_json("models")
        return sorted(m["id"] for m in payload.get("data", []) if "id" in m)

    def models(self) -> list[str]:
        """The model ids the endpoint offers (also a quick check that the key works)."""
        return default_loop().run(self.amodels())

    # -- the Batch API -------------------------------------------------------------------------

    async def abatch(
        self,
        prompts: Any,
        template: str | None = None,
        *,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        metadata: dict[str, str] | None = None,
        max_requests_per_file: int = 50_000,
        max_bytes_per_file: int = 200 * 2**20,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> BatchJob:
        """Submit ``prompts`` to the provider's Batch API (async); see ``batch``."""
        from holynb.batch_jobs import BatchJob

        return await BatchJob.acreate(
            self,
            prompts,
            template=template,
            model=model,
            system=system,
            max_tokens=max_tokens,
            temperature=temperature,
            metadata=metadata,
            max_requests_per_file=max_requests_per_file,
            max_bytes_per_file=max_bytes_per_file,
            params=params,
            schema=schema,
            images=images,
            image_preset=image_preset,
        )

    def batch(
        self,
        prompts: Any,
        template: str | None = None,
        *,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        metadata: dict[str, str] | None = None,
        max_requests_per_file: int = 50_000,
        max_bytes_per_file: int = 200 * 2**20,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> BatchJob:
        """Submit ``prompts`` to the provider's Batch API (half price, answers within 24 h) and
        return a ``BatchJob`` at once. Prompts as for ``map``; the requests are split into
        files of at most ``max_requests_per_file`` and ``max_bytes_per_file``, one provider
        batch each. ``schema`` (a pydantic model or a JSON schema) asks for structured answers;
        ``results()`` then has a column per field, as ``map``. ``images``: one entry per prompt
        as for ``map``, prepared by ``image_preset`` and put into each request's body; a bad or
        oversized image refuses the whole job before anything is uploaded, naming every row
        concerned. An endpoint without a Batch API raises BatchNotSupportedError.

        >>> job = s.batch(df, template="Classify: {review}", max_tokens=20)
        >>> job.wait(); job.results()
        """
        return default_loop().run(
            self.abatch(
                prompts,
                template,
                model=model,
                system=system,
                max_tokens=max_tokens,
                temperature=temperature,
                metadata=metadata,
                max_requests_per_file=max_requests_per_file,
                max_bytes_per_file=max_bytes_per_file,
                schema=schema,
                images=images,
                image_preset=image_preset,
                **params,
            )
        )

    def batches(self) -> pd.DataFrame:
        """The batch jobs this machine knows (from the manifests under ``HOLYNB_HOME``), newest
        first, as last seen; nothing is sent. ``BatchJob.attach(s, job_id)`` picks one up."""
        from holynb.batch_jobs import jobs_frame

        return jobs_frame()

    # -- the ledger ----------------------------------------------------------------------------

    def estimate(
        self,
        prompt: Prompt,
        model: str | None = None,
        max_tokens: int | None = None,
        *,
        system: str | None = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        **params: Any,
    ) -> CostEstimate:
        """What a call would cost, before sending it, from an offline token estimate.

        The prompt is counted with holynb's tokenizer heuristic (within about 10% for English
        and code); the completion is counted as ``max_tokens`` for every answer asked for
        (``n=``, as the call would send it: the most it can cost). Images
        are prepared as a call would send them and counted by the rule of this session's wire
        format (``image_tokens``; see ``holynb.images``).
        """
        from holynb.images import prepare_images
        from holynb.tokens import estimate_messages_tokens

        model = model or self.settings.model
        prepared = prepare_images(images, image_preset, max_bytes=self.max_image_bytes)
        image_tokens = sum(i.tokens(getattr(self.settings, "api", "openai")) for i in prepared)
        prompt_tokens = estimate_messages_tokens(build_messages(prompt, system)) + image_tokens
        from holynb.worst_case import answers_asked

        out = (max_tokens or 0) * answers_asked(params)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=out, estimated=True)
        return CostEstimate(
            model=model,
            prompt_tokens=prompt_tokens,
            max_completion_tokens=max_tokens,
            cost_usd=self.prices.cost(model, usage),
            image_tokens=image_tokens,
        )

    def _reserve(self, body: dict[str, Any]) -> int | None:
        """Hold the call's worst-case cost against the budget; refuse a call whose worst case
        is unknown (no price, or no bound on the answer's length). See ``holynb.worst_case``."""
        budget = self._budget
        if budget is None:
            return None
        from holynb.worst_case import UnboundedCall

        try:
            worst = self._bounds.usd(body)
        except UnboundedCall as err:
            raise self._refusal(budget, str(err)) from None
        if budget.shared is None:
            return budget.reserve(worst)
        import sqlite3  # loaded with the store already

        try:
            return budget.reserve(worst)
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise self._refusal(
                    budget,
                    f"holynb could not read the budget shared through the ledger log ({err}), "
                    "so this call was not sent. Try again, or give this session its own "
                    "log_path.",
                ) from None
            self._warn_log(err)  # another process holds the log's write lock for now
            return budget.reserve(worst, here_only=True)
        except sqlite3.Error as err:
            raise self._refusal(
                budget,
                f"holynb could not read the budget shared through the ledger log ({err}), so "
                "this call was not sent. Try again, or give this session its own log_path.",
            ) from None

    def _prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        """The offline prompt estimate, its images counted by this session's wire format."""
        from holynb.worst_case import prompt_estimate

        return prompt_estimate(messages, self.api)

    @staticmethod
    def _refusal(budget: Budget, message: str) -> BudgetExceededError:
        return BudgetExceededError(message, spent_usd=budget.spent_usd, limit_usd=budget.limit_usd)

    def _release(self, hold: int | None) -> None:
        if self._budget is not None and hold is not None:
            self._budget.settle(hold, None)  # a no-op once the call was settled

    def _warn_log(self, err: Exception, action: str = "write") -> None:
        if self._log_warned:
            return
        self._log_warned = True
        what = "this call is" if action == "write" else "calls are"
        warnings.warn(
            f"holynb could not {action} the ledger log ({err}); {what} kept in session.ledger "
            "only. This warning is shown once.",
            LogWriteWarning,
            stacklevel=4,
        )

    def _with_cost(self, result: ChatResult, body: dict[str, Any], batch: bool) -> ChatResult:
        usage = result.usage
        if usage.estimated:  # the server sent no usage: count offline, and say so
            from holynb.tokens import estimate_tokens

            completion = usage.completion_tokens or estimate_tokens(result.text)
            limit = body.get("max_tokens") or body.get("max_completion_tokens")
            if isinstance(limit, int) and limit > 0:
                completion = min(completion, limit)  # the server stops there
            usage = replace(
                usage,
                prompt_tokens=usage.prompt_tokens or self._prompt_tokens(body["messages"]),
                completion_tokens=completion,
            )
            result = replace(result, usage=usage)
        return result.with_cost(self.prices.cost(result.model, usage, batch=batch))

    def _cache_hit(
        self, body: dict[str, Any], cache: CallCache, kind: str, tag: str | None
    ) -> ChatResult | None:
        """The cached answer to ``body``, recorded in the ledger as a free hit; or None."""
        if self._cache is None or cache is False or cache == "refresh":
            return None
        started = time.perf_counter()
        stored = self._cache.lookup(body)
        if stored is None:
            return None
        from holynb.cache import as_hit

        saved = self.prices.cost(stored.model, stored.usage)
        self._cache.note_saved(saved)
        elapsed = (time.perf_counter() - started) * 1000.0
        hit = as_hit(stored, saved_usd=saved, latency_ms=elapsed)
        self._append(CallRecord.from_result(hit, kind=kind, tag=tag), None)
        self.last_result = hit
        return hit

    def _cache_save(self, body: dict[str, Any], result: ChatResult, cache: CallCache) -> None:
        if self._cache is not None and cache is not False:
            self._cache.save(body, result)

    def _append(self, record: CallRecord, hold: int | None, *, asked: str | None = None) -> None:
        """Record one call: the ledger, the log (ending its budget hold in the same write when
        the budget is shared through it) and the budget. ``asked`` is the model the call asked
        for, to say why a call cost more than its hold."""
        self._ledger.append(record)
        budget = self._budget
        released = False
        if self._store is not None:
            import sqlite3  # loaded with the store already

            shared = budget is not None and budget.shared is self._store and hold is not None
            try:
                self._store.append(record, release=hold if shared else None)
                released = shared
            except sqlite3.Error as err:  # locked by another process, disk full, ...
                self._warn_log(err)
        if budget is not None and hold is not None:
            budget.settle(hold, record.cost_usd, reason=_overshoot_reason(asked, record.model),
                          released=released)  # fmt: skip

    def _record(
        self,
        result: ChatResult,
        body: dict[str, Any],
        kind: str,
        tag: str | None,
        hold: int | None,
        *,
        batch: bool = False,
    ) -> ChatResult:
        result = self._with_cost(result, body, batch)
        self._learn_answering_model(body["model"], result.model)
        self._append(CallRecord.from_result(result, kind=kind, tag=tag), hold, asked=body["model"])
        self.last_result = result
        return result

    def _learn_answering_model(self, asked: str, answered: str) -> None:
        """Remember an endpoint answering ``asked`` with a pricier model: from then on its
        price bounds ``asked``'s calls too (said once, when a budget is set)."""
        if self._bounds.learn(asked, answered) and self._budget is not None:
            from holynb.budget import BudgetOvershootWarning

            warnings.warn(
                f"holynb: {asked!r} was asked, and the endpoint answered with {answered!r}, "
                f"which costs more; the budget now reserves {asked!r}'s calls at "
                f"{answered!r}'s price.",
                BudgetOvershootWarning,
                stacklevel=5,
            )

    def _record_failure(
        self,
        body: dict[str, Any],
        kind: str,
        tag: str | None,
        hold: int | None,
        err: APIError | None,
        partial: ChatResult | None,
        *,
        interrupted: bool = False,
    ) -> None:
        if err is not None:
            error = f"{type(err).__name__}: {err.message}"
        else:
            error = "Interrupted: the call was cancelled before an answer arrived"
        if partial is not None:
            result = self._with_cost(partial, body, False)  # what arrived was paid for
            self.last_result = result
            if err is not None:
                err.partial = result
        else:
            result = ChatResult(
                text="",
                model=body["model"],
                usage=Usage(),
                attempts=err.attempts if err is not None else 1,
                request_id=err.request_id if err is not None else None,
                interrupted=interrupted,
                cost_usd=0.0,
            )
        self._append(
            CallRecord.from_result(result, kind=kind, tag=tag, error=error),
            hold,
            asked=body["model"],
        )

    @property
    def records(self) -> list[CallRecord]:
        """The ledger's records, oldest first."""
        return list(self._ledger)

    @property
    def ledger(self) -> pd.DataFrame:
        """Every call as a DataFrame, one row per call, failures included."""
        return self._ledger.to_frame()

    @property
    def total_cost_usd(self) -> float:
        """The sum of the known costs, a float. Calls to a model with no known price are not in
        it (they are not free either): ``unpriced_calls`` counts them, and ``cost_summary()``
        says both, e.g. ``"$0.0123 + 4 calls without a price"``."""
        return float(sum(r.cost_usd for r in self._ledger if r.cost_usd is not None))

    @property
    def unpriced_calls(self) -> int:
        """Calls that used tokens of a model holynb has no price for (cost ``None``), so their
        cost is missing from ``total_cost_usd``. Add the price to count them:
        ``Session(prices={"my-model": {"input": 0.15, "output": 0.6}})`` (USD per 1M tokens)."""
        return sum(
            1
            for r in self._ledger
            if r.cost_usd is None and (r.prompt_tokens or r.completion_tokens)
        )

    def cost_summary(self) -> str:
        """What this session spent, as text: the known total and how many calls have no price.

        >>> s.cost_summary()
        '$0.0123 + 4 calls without a price'
        """
        from holynb.formatting import cost_text

        return cost_text(self.total_cost_usd, self.unpriced_calls)

    def summary(self) -> pd.DataFrame:
        """Per model: calls, success rate, tokens, cost, latency p50/p95/p99, ttft p50."""
        from holynb.report import summarize

        return summarize(self.ledger)

    def plot(self) -> Any:
        """Cumulative cost over time and latency per model (needs matplotlib)."""
        from holynb.report import plot

        return plot(self.ledger)

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this loop's connections (``async with Session() as s`` does it for you)."""
        if self._client_obj is not None:
            await self._client_obj.aclose()

    def close(self) -> None:
        """Close the connections of the sync facade and the log file."""
        if self._client_obj is not None:
            default_loop().run(self._client_obj.aclose())
        if self._store is not None:
            self._store.close()
        if self._cache is not None:
            self._cache.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _overshoot_reason(asked: str | None, answered: str) -> str:
    """Why a call may have cost more than the worst case reserved for it."""
    if asked is not None and answered and answered != asked:
        return f"{asked!r} was asked, and the endpoint answered with {answered!r}."
    return "The endpoint reported more tokens than the call's limits allow."


def _prefetch(genai_prices: bool) -> None:
    """Start importing the HTTP stack (aiohttp, httpx2: ~200 ms of a cold start), and
    genai-prices (~150 ms) when the default model's price will need it, in a thread, once per
    process: the session's set-up and the first request's flight then hide them."""
    global _prefetching
    wanted = ["holynb._client", "genai_prices"] if genai_prices else ["holynb._client"]
    modules = [m for m in wanted if m not in sys.modules]
    if _prefetching or not modules:
        return
    _prefetching = True
    threading.Thread(target=_import_quietly, args=(modules,), daemon=True).start()


def _import_quietly(modules: list[str]) -> None:
    for module in modules:
        with contextlib.suppress(Exception):  # the call that needs it imports it and says why
            importlib.import_module(module)


_prefetching = False


def build_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages from a prompt string or a list of ``{"role", "content"}`` dicts."""
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(isinstance(m, dict) for m in prompt):
        messages = [dict(m) for m in prompt if isinstance(m, dict)]
        for i, m in enumerate(messages):
            if "role" not in m or "content" not in m:
                raise ValueError(
                    f"Message {i} needs 'role' and 'content' keys, got {sorted(m)}: e.g. "
                    '{"role": "user", "content": "Hi"}.'
                )
    else:
        raise TypeError(
            "prompt must be a string or a list of messages like "
            f'[{{"role": "user", "content": "Hi"}}], got {type(prompt).__name__}.'
        )
    if not messages:
        raise ValueError("The prompt has no messages: give at least one user message.")
    if system and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages
