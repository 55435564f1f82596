"""The Session: the user's handle on an endpoint. Calls, streams, and the ledger of every call.

Async first; the sync methods run the same coroutines on holynb's loop thread (see ``_loop``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from holynb._config import RetryPolicy, Secret, Settings, Timeout, resolve_settings
from holynb._loop import default_loop
from holynb.errors import APIError
from holynb.ledger import CallRecord, Ledger
from holynb.results import ChatResult, Usage

if TYPE_CHECKING:
    import pandas as pd

    from holynb._client import ChatClient

Prompt = str | Sequence[dict[str, Any]]

_LOCAL_PREFIXES = ("http://127.", "http://localhost", "http://[::1]")


class Session:
    """A connection to one OpenAI-compatible endpoint that records every call.

    Explicit arguments win over environment variables (``HOLYSHEEP_API_KEY`` or
    ``HOLYNB_API_KEY``, ``HOLYNB_BASE_URL``, ``HOLYNB_MODEL``), which win over defaults.

    >>> s = holynb.Session(model="gpt-4.1")
    >>> r = s.chat("Say hi")
    >>> r.text, r.usage.total_tokens, r.latency_ms
    >>> for text in s.stream("Count to five"): print(text, end="")
    >>> s.ledger            # one row per call, failures included
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: Timeout | float | None = None,
        concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
    ) -> None:
        self.settings: Settings = resolve_settings(
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
        self._ledger = Ledger()
        self._client_obj: ChatClient | None = None
        self.last_result: ChatResult | None = None

    # -- configuration -------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The default model of this session."""
        return self.settings.model

    @property
    def base_url(self) -> str:
        """The endpoint this session talks to."""
        return self.settings.base_url

    @property
    def is_local(self) -> bool:
        """Whether the endpoint is on this machine (no key needed unless it asks for one)."""
        return self.settings.base_url.startswith(_LOCAL_PREFIXES)

    @property
    def _client(self) -> ChatClient:
        if self._client_obj is None:
            if not self.is_local:
                self.settings.require_key()
            from holynb._client import ChatClient  # the HTTP stack loads on first use

            self._client_obj = ChatClient(self.settings)
        return self._client_obj

    def __repr__(self) -> str:
        key = "set" if self.settings.api_key else "missing"
        return (
            f"Session(model={self.model!r}, base_url={self.base_url!r}, key={key}, "
            f"calls={len(self._ledger)})"
        )

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
        try:
            result = await client.complete(body)
        except APIError as err:
            self._record_failure(body["model"], kind, tag, err, err.partial)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._record_failure(body["model"], kind, tag, None, None, interrupted=True)
            raise
        return self._record(result, kind, tag)

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
        progress = StreamState(model=body["model"])
        try:
            async for text in client.stream(body, progress):
                yield text
        except APIError as err:
            self._record_failure(body["model"], kind, tag, err, err.partial)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            self._record(progress.result(interrupted=True), kind, tag)
            raise
        self._record(progress.result(), kind, tag)

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

    def _cost(self, result: ChatResult) -> float | None:
        return None  # prices arrive with the cost-tracking session

    def _record(self, result: ChatResult, kind: str, tag: str | None) -> ChatResult:
        result = result.with_cost(self._cost(result))
        self._ledger.append(CallRecord.from_result(result, kind=kind, tag=tag))
        self.last_result = result
        return result

    def _record_failure(
        self,
        model: str,
        kind: str,
        tag: str | None,
        err: APIError | None,
        partial: ChatResult | None,
        *,
        interrupted: bool = False,
    ) -> None:
        if err is not None:
            error = f"{type(err).__name__}: {err.message}"
        else:
            error = "Interrupted: the call was cancelled before an answer arrived"
        result = partial or ChatResult(
            text="",
            model=model,
            usage=Usage(),
            attempts=err.attempts if err is not None else 1,
            request_id=err.request_id if err is not None else None,
            interrupted=interrupted,
        )
        result = result.with_cost(self._cost(result)) if partial else result
        self._ledger.append(CallRecord.from_result(result, kind=kind, tag=tag, error=error))
        if partial is not None:
            self.last_result = result

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

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this loop's connections (``async with Session() as s`` does it for you)."""
        if self._client_obj is not None:
            await self._client_obj.aclose()

    def close(self) -> None:
        """Close the connections of the sync facade."""
        if self._client_obj is not None:
            default_loop().run(self._client_obj.aclose())

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
