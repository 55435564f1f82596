"""The Session: the user's handle on an endpoint. Calls, streams, and the ledger of every call.

Async first; the sync methods run the same coroutines on holynb's loop thread (see ``_loop``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
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
from holynb.errors import APIError
from holynb.ledger import CallRecord, Ledger
from holynb.results import ChatResult, CostEstimate, Usage

if TYPE_CHECKING:
    import pandas as pd

    from holynb._client import ChatClient
    from holynb.prices import PriceTable
    from holynb.store import LedgerStore

Prompt = str | Sequence[dict[str, Any]]


class Session:
    """A connection to one OpenAI-compatible endpoint that records every call.

    Explicit arguments win over environment variables (``HOLYSHEEP_API_KEY`` or
    ``HOLYNB_API_KEY``, ``HOLYNB_BASE_URL``, ``HOLYNB_MODEL``), which win over defaults.

    >>> s = holynb.Session(model="gpt-4.1")
    >>> r = s.chat("Say hi")
    >>> r.text, r.usage.total_tokens, r.latency_ms
    >>> for text in s.stream("Count to five"): print(text, end="")
    >>> s.ledger            # one row per call, failures included

    ``api="anthropic"`` (or ``HOLYNB_API``) speaks Anthropic's Messages API instead of OpenAI's
    chat completions: ``POST {base_url}/messages`` (``{base_url}/v1/messages`` for a root URL),
    the key as ``x-api-key`` (``bearer=True`` also sends it as ``Authorization: Bearer``, for
    relays that want it), ``max_tokens`` always sent; everything else works the same.

    ``budget_usd`` refuses calls before sending once they could exceed it; ``log_path`` (or
    ``HOLYNB_LOG_PATH``) keeps every call in SQLite and reloads it on start; ``prices`` adds or
    overrides USD prices per million tokens, e.g. ``{"my-model": {"input": 3, "output": 15}}``.
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
        bearer: bool | None = None,
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
        from holynb.store import LedgerStore, default_log_path

        self.prices: PriceTable = PriceTable.default(self.settings.base_url, prices)
        self._ledger = Ledger()
        path = log_path if log_path is not None else default_log_path()
        self._store: LedgerStore | None = LedgerStore(path) if path else None
        if self._store is not None:
            self._ledger.extend(self._store.load())  # a restarted kernel picks up where it was
        self._budget: Budget | None = None
        if budget_usd is not None:
            self.budget_usd = budget_usd
        self._client_obj: ChatClient | None = None
        self.last_result: ChatResult | None = None

    # -- configuration -------------------------------------------------------------------------

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
        """Whether the endpoint is on this machine (no key needed unless it asks for one)."""
        return is_loopback_url(self.settings.base_url)

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
        self._budget = None if limit is None else Budget(limit, spent_usd=self.total_cost_usd)

    def __repr__(self) -> str:
        key = "set" if self.settings.api_key else "missing"
        api = f", api={self.api!r}" if self.api != "openai" else ""
        return (
            f"Session(model={self.model!r}{api}, base_url={self.base_url!r}, key={key}, "
            f"calls={len(self._ledger)}, cost=${self.total_cost_usd:.4f})"
        )

    def _repr_html_(self) -> str:
        from holynb.report import summary_html

        unknown = sum(1 for r in self._ledger if r.cost_usd is None and r.completion_tokens)
        title = f"holynb session: {self.base_url}"
        return summary_html(self.summary(), self.total_cost_usd, unknown, title)

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
        **params: Any,
    ) -> ChatResult:
        """Ask once and wait for the whole answer (async). Extra keyword arguments go into the
        request body as they are (``top_p=``, ``response_format=``, ...)."""
        body = self._body(prompt, model, system, temperature, max_tokens, params)
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
        return self._record(result, body, kind, tag, hold)

    def chat(self, prompt: Prompt, **kwargs: Any) -> ChatResult:
        """Ask once and wait for the whole answer. Works in a notebook cell, a script, and
        inside a running asyncio program. Same arguments as ``achat``."""
        return default_loop().run(self.achat(prompt, **kwargs))

    async def astream(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tag: str | None = None,
        kind: str = "stream",
        **params: Any,
    ) -> AsyncIterator[str]:
        """The answer's text as it arrives (async). When the stream ends, stops early or fails,
        what arrived is recorded in the ledger and kept in ``session.last_result``."""
        from holynb._client import StreamState

        body = self._body(prompt, model, system, temperature, max_tokens, params)
        client = self._client
        hold = self._reserve(body)
        progress = StreamState(model=body["model"])
        try:
            async for text in client.stream(body, progress):
                yield text
        except APIError as err:
            self._record_failure(body, kind, tag, hold, err, err.partial)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            self._record(progress.result(interrupted=True), body, kind, tag, hold)
            raise
        self._record(progress.result(), body, kind, tag, hold)

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[str]:
        """The answer's text as it arrives. Same arguments as ``astream``; an interrupt or a
        ``break`` stops the request and records what arrived."""
        return default_loop().iterate(self.astream(prompt, **kwargs))

    async def amodels(self) -> list[str]:
        """The model ids the endpoint offers (async)."""
        payload = await self._client.get_json("models")
        return sorted(m["id"] for m in payload.get("data", []) if "id" in m)

    def models(self) -> list[str]:
        """The model ids the endpoint offers (also a quick check that the key works)."""
        return default_loop().run(self.amodels())

    # -- the ledger ----------------------------------------------------------------------------

    def estimate(
        self,
        prompt: Prompt,
        model: str | None = None,
        max_tokens: int | None = None,
        *,
        system: str | None = None,
    ) -> CostEstimate:
        """What a call would cost, before sending it, from an offline token estimate.

        The prompt is counted with holynb's tokenizer heuristic (within about 10% for English
        and code); the completion is counted as ``max_tokens`` (the most it can cost).
        """
        from holynb.tokens import estimate_messages_tokens

        model = model or self.settings.model
        prompt_tokens = estimate_messages_tokens(build_messages(prompt, system))
        out = max_tokens or 0
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=out, estimated=True)
        return CostEstimate(
            model=model,
            prompt_tokens=prompt_tokens,
            max_completion_tokens=max_tokens,
            cost_usd=self.prices.cost(model, usage),
        )

    def _reserve(self, body: dict[str, Any]) -> int | None:
        if self._budget is None:
            return None
        out = body.get("max_tokens") or body.get("max_completion_tokens")
        worst = self.estimate(body["messages"], body["model"], out).cost_usd
        return self._budget.reserve(worst or 0.0)

    def _with_cost(self, result: ChatResult, body: dict[str, Any], batch: bool) -> ChatResult:
        usage = result.usage
        if usage.estimated:  # the server sent no usage: count offline, and say so
            from holynb.tokens import estimate_messages_tokens, estimate_tokens

            usage = replace(
                usage,
                prompt_tokens=usage.prompt_tokens or estimate_messages_tokens(body["messages"]),
                completion_tokens=usage.completion_tokens or estimate_tokens(result.text),
            )
            result = replace(result, usage=usage)
        return result.with_cost(self.prices.cost(result.model, usage, batch=batch))

    def _append(self, record: CallRecord, hold: int | None) -> None:
        self._ledger.append(record)
        if self._store is not None:
            self._store.append(record)
        if self._budget is not None and hold is not None:
            self._budget.settle(hold, record.cost_usd)

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
        self._append(CallRecord.from_result(result, kind=kind, tag=tag), hold)
        self.last_result = result
        return result

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
        self._append(CallRecord.from_result(result, kind=kind, tag=tag, error=error), hold)

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
        """The sum of known costs (calls with unknown prices count as nothing here)."""
        return float(sum(r.cost_usd for r in self._ledger if r.cost_usd is not None))

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

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def build_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages from a prompt string or a list of ``{"role", "content"}`` dicts."""
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(isinstance(m, dict) for m in prompt):
        messages = [dict(m) for m in prompt]
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
