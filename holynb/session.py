"""The Session: the user's handle on an endpoint. Calls, streams, and the ledger of every call.

Async first; the sync methods run the same coroutines on holynb's loop thread (see ``_loop``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from holynb._config import (
    UNCHANGED as UNCHANGED,
    RetryPolicy,
    Secret,
    Settings,
    Timeout,
    Unchanged,
    is_loopback_url,
    offline_server_token,
    resolve_settings,
)
from holynb._loop import default_loop
from holynb._prefetch import prefetch
from holynb.answers import ask, stream_answer
from holynb.calls.caller import Caller
from holynb.calls.meter import LogWriteWarning as LogWriteWarning, Meter
from holynb.chat_stream import AsyncChatStream, ChatStream
from holynb.ledger import CallRecord
from holynb.parameters import check_params
from holynb.prices import PriceTable
from holynb.prompts import Prompt
from holynb.results import ChatResult, CostEstimate

if TYPE_CHECKING:
    import pandas as pd

    from holynb.batch.jobs import BatchJob
    from holynb.bulk import Prompts
    from holynb.cache import CacheSetting, CallCache, ResponseCache
    from holynb.images import ImagePreset


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

    ``api="anthropic"`` (or ``HOLYNB_API``) speaks Anthropic's Messages API: ``POST
    {base_url}/messages``, the key as ``x-api-key`` (``bearer=True`` also sends it as
    ``Authorization: Bearer``), ``max_tokens`` always sent; everything else works the same.

    ``budget_usd`` refuses calls before sending once they could exceed it (a call must then have
    a known price, and ``max_tokens`` unless the model is free or its context window is known);
    ``log_path`` (or ``HOLYNB_LOG_PATH``) keeps every call in SQLite and reloads it on start,
    and a budget counts the calls other processes append to the same file; ``prices`` adds or
    overrides USD prices per million tokens, e.g. ``{"my-model": {"input": 3, "output": 15}}``;
    ``cache`` (a file, or True for one under ``HOLYNB_HOME``; env ``HOLYNB_CACHE``) answers a
    request already asked from the file, sending nothing; ``max_image_bytes`` is the size
    limit per image (20 MB, and 5 MB with ``api="anthropic"``; see ``holynb.images``);
    ``service_tier`` and ``prompt_cache`` ("5m", "1h") go with every call that names none.
    ``database`` (a PostgreSQL URL, or ``HOLYNB_DATABASE_URL``) keeps the log there for the
    team, charged to ``user``; ``budget`` names a budget there (``holynb.team``).
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
        database: str | None = None,
        user: str | None = None,
        budget: str | None = None,
        service_tier: str | None = None,
        prompt_cache: str | None = None,
    ) -> None:
        settings = resolve_settings(
            api=api, bearer=bearer, base_url=base_url, api_key=api_key, model=model,
            timeout=timeout, max_retries=max_retries, retry=retry, concurrency=concurrency,
            rpm=rpm, tpm=tpm,
        )  # fmt: skip
        table = PriceTable.default(settings.base_url, prices)
        prefetch(table.needs_genai_prices(settings.model))  # while the log opens
        self._meter = Meter.open(table, settings.api, log_path=log_path, budget_usd=budget_usd,
                                 database=database, user=user, budget=budget)  # fmt: skip
        self._caller = Caller(settings, self._meter, max_image_bytes=max_image_bytes)
        self._caller.use_defaults(service_tier=service_tier, prompt_cache=prompt_cache)
        self.cache = cache

    # -- configuration -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The resolved settings: endpoint, key, model, retries, timeouts, limits."""
        return self._caller.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._caller.settings = settings

    @property
    def max_image_bytes(self) -> int:
        """The size limit per image (default 5 MB for Anthropic, else 20 MB); settable."""
        return self._caller.image_limit

    @max_image_bytes.setter
    def max_image_bytes(self, limit: int | None) -> None:
        self._caller.max_image_bytes_given = limit

    @property
    def prices(self) -> PriceTable:
        """The prices this session charges calls at (USD per million tokens); settable."""
        return self._meter.prices

    @prices.setter
    def prices(self, table: PriceTable) -> None:
        self._meter.prices = table

    @property
    def caller(self) -> Caller:
        """The core every call of this session goes through (``holynb.calls.caller``)."""
        return self._caller

    @property
    def meter(self) -> Meter:
        """The meter every call of this session goes through (``holynb.calls.meter``)."""
        return self._meter

    @property
    def last_result(self) -> ChatResult | None:
        """The most recently finished call (with concurrent calls, whichever ended last)."""
        return self._meter.last_result

    @property
    def last_map(self) -> pd.DataFrame | None:
        """The frame of the last ``map``/``compare``; after an interrupt, the rows finished."""
        return self._caller.last_map

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
        """Whether the endpoint is on this machine: holynb's offline server or another one."""
        return is_loopback_url(self.settings.base_url)

    @property
    def uses_offline_server(self) -> bool:
        """Whether the endpoint is holynb's offline server (a ``LocalServer``) in this process."""
        return offline_server_token(self.settings.base_url) is not None

    @property
    def budget_usd(self) -> float | None:
        """The spending limit in USD (None: no limit). Settable; past calls count against it."""
        return None if self._meter.budget is None else self._meter.budget.limit_usd

    @budget_usd.setter
    def budget_usd(self, limit: float | None) -> None:
        self._meter.set_budget(limit)

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache (None: none); settable: a path, True, False or None."""
        return self._caller.cache

    @cache.setter
    def cache(self, cache: CacheSetting) -> None:
        if cache is False or (cache is None and not os.environ.get("HOLYNB_CACHE", "").strip()):
            self._caller.cache = None  # none asked for: sqlite3 and the store stay unimported
            return
        from holynb.cache import open_cache

        self._caller.cache = open_cache(cache, self.settings, self._meter.store)

    def derive(
        self,
        *,
        model: str | None = None,
        api: str | None = None,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        budget_usd: float | Unchanged | None = UNCHANGED,
    ) -> Session:
        """A new session like this one with some settings changed; the rest stays (retries,
        timeouts, limits, the key unless given, prices, log, cache, and the ledger: past
        spending counts against ``budget_usd``, the same unless given; None removes it).

        >>> s2 = s.derive(model="deepseek-v3.2")
        """
        settings = self.settings
        limits = settings.limits
        fresh = Session(
            model=model or self.model, api=api or settings.api, bearer=settings.bearer,
            base_url=base_url or self.base_url, api_key=api_key or settings.api_key,
            retry=settings.retry, timeout=settings.timeout, concurrency=limits.concurrency,
            rpm=limits.rpm, tpm=limits.tpm,
            log_path="", database="",  # not from the environment: this log carries over
            max_image_bytes=self._caller.max_image_bytes_given,
        )  # fmt: skip
        fresh.cache = self.cache.store if self.cache is not None else False
        fresh.caller.take_defaults(self._caller)
        limit = self.budget_usd if isinstance(budget_usd, Unchanged) else budget_usd
        fresh.meter.carry_over(self._meter, limit)
        return fresh

    def __repr__(self) -> str:
        key = "set" if self.settings.api_key else "missing"
        api = f", api={self.api!r}" if self.api != "openai" else ""
        return (
            f"Session(model={self.model!r}{api}, base_url={self.base_url!r}, key={key}, "
            f"calls={len(self._meter.ledger)}, cost={self.cost_summary()})"
        )

    def _repr_html_(self) -> str:
        from holynb.report import summary_html

        title = f"holynb session: {self.base_url}"
        return summary_html(self.summary(), self.total_cost_usd, self.unpriced_calls, title)

    # -- requests ------------------------------------------------------------------------------

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
        """Ask once and wait for the whole answer (async); see ``chat``."""
        check_params(params, "chat")
        return await ask(
            self._caller, prompt, model=model, system=system, temperature=temperature,
            max_tokens=max_tokens, tag=tag, kind=kind, cache=cache, schema=schema,
            images=images, image_preset=image_preset, params=params,
        )  # fmt: skip

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
        the prompt, prepared by ``image_preset`` (``"high"``, ``"medium"``, ``"low"`` or an
        ``ImagePreset``; see ``holynb.images``). ``service_tier="flex"`` is priced by the tier
        the answer reports; ``prompt_cache="5m"|"1h"`` marks the stable prefix for Anthropic's
        cache. Other keyword arguments go into the request body as they are (``top_p=``, ...).
        Raises ``SchemaValidationError`` when an answer still does not fit ``schema`` after one
        repair round-trip (see ``holynb.structured``). The async twin is ``achat``."""
        check_params(params, "chat")
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
        """The answer's text as it arrives (``async for text in s.astream(...)``); see stream."""
        check_params(params, "stream")
        return stream_answer(
            self._caller, prompt, model=model, system=system, temperature=temperature,
            max_tokens=max_tokens, tag=tag, kind=kind, cache=cache, schema=schema,
            images=images, image_preset=image_preset, params=params,
        )  # fmt: skip

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
        arguments are ``chat``'s; an interrupt or a ``break`` stops the request, and what
        arrived is recorded in the ledger and kept in the stream's ``result`` (also when it
        fails). A cached answer is replayed in pieces. With ``schema`` the answer is validated
        when the stream ends (into ``result.parsed``), without a repair round-trip since the
        text was shown. The async twin is ``astream``.

        >>> stream = s.stream("Count to five")
        >>> text = "".join(stream)
        >>> stream.result.cost_usd
        """
        check_params(params, "stream")
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
        check_params(params, "map")
        from holynb.bulk import amap

        return await amap(
            self._caller, prompts, template=template, model=model, system=system,
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
        stored. An interrupt raises ``MapInterrupted``; the finished rows are in ``s.last_map``.
        ``schema`` (a pydantic model or a JSON schema) asks each item for a structured answer:
        its fields become columns; one that does not fit (after one repair) is its error.
        ``images``: one entry per prompt (a source, a list, or None), or a DataFrame's column of
        images; a bad image is that item's error. ``dry_run=True`` returns what would be sent
        and its worst cost, sending nothing. See ``holynb.bulk`` for the columns."""
        __tracebackhide__ = True  # an interrupt shows the user's cell, not holynb's frames
        check_params(params, "map")
        from holynb.bulk import map_sync

        return map_sync(
            self._caller, prompts, template=template, model=model, system=system,
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
        check_params(params, "compare")
        from holynb.compare import acompare

        return await acompare(
            self._caller, prompts, models, template=template, system=system,
            temperature=temperature, max_tokens=max_tokens, concurrency=concurrency,
            checkpoint=checkpoint, progress=progress, errors=errors, tag=tag, schema=schema,
            images=images, image_preset=image_preset, **params,
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

        Columns: ``prompt_index`` (the prompt's label), ``prompt``, ``model``, then map's. A
        model that fails has the failure on its own rows; the others are intact. The rest works
        as in ``map`` (every model gets the same images; one prompt may be given alone; and
        ``dry_run=True``)."""
        __tracebackhide__ = True
        check_params(params, "compare")
        from holynb.compare import compare_sync

        return compare_sync(
            self._caller, prompts, models, template=template, system=system,
            temperature=temperature, max_tokens=max_tokens, concurrency=concurrency,
            checkpoint=checkpoint, progress=progress, errors=errors, tag=tag, schema=schema,
            images=images, image_preset=image_preset, **params,
        )  # fmt: skip

    async def amodels(self) -> list[str]:
        """The model ids the endpoint offers (async)."""
        return await self._caller.models()

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
        check_params(params, "batch")
        from holynb.batch.jobs import BatchJob

        return await BatchJob.acreate(
            self._caller, prompts, template=template, model=model, system=system,
            max_tokens=max_tokens, temperature=temperature, metadata=metadata,
            max_requests_per_file=max_requests_per_file, max_bytes_per_file=max_bytes_per_file,
            params=params, schema=schema, images=images, image_preset=image_preset,
        )  # fmt: skip

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
        return a ``BatchJob`` at once. ``prompts``, ``schema`` and ``images`` as for ``map``
        (a bad prompt or image refuses the whole job before anything is uploaded); one
        provider batch per file of at most ``max_requests_per_file`` and
        ``max_bytes_per_file``. Without a Batch API: BatchNotSupportedError. ``dry_run=True``
        returns the plan at batch prices instead, uploading nothing.

        >>> job = s.batch(df, template="Classify: {review}", max_tokens=20)
        >>> job.wait(); job.results()
        """
        check_params(params, "batch")
        return default_loop().run(
            self.abatch(
                prompts, template, model=model, system=system, max_tokens=max_tokens,
                temperature=temperature, metadata=metadata,
                max_requests_per_file=max_requests_per_file,
                max_bytes_per_file=max_bytes_per_file, schema=schema, images=images,
                image_preset=image_preset, **params,
            )
        )  # fmt: skip

    def batches(self) -> pd.DataFrame:
        """The batch jobs this session can attach, newest first: in its team database when it
        has one (every machine's), else this machine's (manifests under ``HOLYNB_HOME``)."""
        from holynb.batch.jobs import jobs_frame

        return jobs_frame(self)

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
        """What a call would cost at most, before sending it: the prompt counted offline
        (within about 10% for English and code; images by this wire format's rule), the answer
        as ``max_tokens`` for every answer asked for (``n=``)."""
        return self._caller.estimate(
            prompt, model, max_tokens, system=system, images=images, image_preset=image_preset,
            params=params,
        )  # fmt: skip

    @property
    def records(self) -> list[CallRecord]:
        """The ledger's records, oldest first."""
        return list(self._meter.ledger)

    @property
    def ledger(self) -> pd.DataFrame:
        """Every call as a DataFrame, one row per call, failures included."""
        return self._meter.ledger.to_frame()

    @property
    def total_cost_usd(self) -> float:
        """The sum of the known costs (calls with no known price: ``unpriced_calls``)."""
        return self._meter.spent_usd

    @property
    def unpriced_calls(self) -> int:
        """Calls of a model holynb has no price for (cost ``None``, not in ``total_cost_usd``);
        add it: ``Session(prices={"my-model": {"input": 0.15, "output": 0.6}})`` (USD per 1M)."""
        return self._meter.unpriced_calls

    def cost_summary(self) -> str:
        """What this session spent, as text (``'$0.0123 + 4 calls without a price'``)."""
        from holynb.formatting import cost_text

        return cost_text(self.total_cost_usd, self.unpriced_calls)

    def summary(self, by: str = "model") -> pd.DataFrame:
        """Per model: calls, success rate, tokens, cost, latency p50/p95/p99, ttft p50;
        ``by="user"``: per user, of every call in the team database (``database=``)."""
        from holynb.report import summarize
        from holynb.team.ledger import team_log as team

        return summarize(self.ledger) if by == "model" else team(self._meter.store, by).by_user()

    def team_ledger(self, since: Any = None, user: str | None = None) -> pd.DataFrame:
        """Every call in the team database (``database=``) with its ``user``, oldest first;
        ``since`` a datetime or an ISO date, ``user`` one user's calls."""
        from holynb.team.ledger import team_log

        return team_log(self._meter.store).frame(since, user)

    def plot(self) -> Any:
        """Cumulative cost over time and latency per model (needs matplotlib)."""
        from holynb.report import plot

        return plot(self.ledger)

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this loop's connections (``async with Session() as s`` does it for you)."""
        await self._caller.aclose()

    def close(self) -> None:
        """Close the connections of the sync facade, the cache and the log file."""
        self._caller.close()
        self._meter.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
