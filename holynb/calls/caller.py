"""The Caller: the one path from a prompt to a recorded answer.

``call`` builds a ``Call`` from a prompt and parameters (messages, images prepared and
attached, the final body). ``complete`` and ``stream`` send one: the response cache first,
then the meter's reservation, the client, and the meter's record (settling the hold), then the
cache again. ``run`` drives a multi-step flow (a structured answer's repair round trip): a
generator that yields calls and receives their results, the way httpx's ``Auth.auth_flow``
yields requests and receives responses. A call that asks for a ``response_format`` goes
through the session's ``Probe``: where it is refused, its fallback is sent instead.

>>> caller = session.caller
>>> call = caller.call("Say hi", max_tokens=20)
>>> result = await caller.complete(call)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from holynb.calls.body import request_body
from holynb.calls.call import Call, CallCache
from holynb.calls.probe import Probe, refusal_of
from holynb.errors import APIError, BadRequestError
from holynb.prompt_cache import check_ttl, mark
from holynb.prompts import Prompt, build_messages

if TYPE_CHECKING:
    import httpx2 as httpx
    import pandas as pd

    from holynb._client import ChatClient
    from holynb._config import Settings
    from holynb.cache import ResponseCache
    from holynb.calls.meter import Meter
    from holynb.chat_stream import AsyncChatStream
    from holynb.images import ImagePreset
    from holynb.results import ChatResult, CostEstimate

__all__ = ["Caller", "Core", "Flow", "HasCaller", "caller_of"]

T = TypeVar("T")
Flow = Generator[Call, "ChatResult", T]  # yields calls, receives their results, returns T


class Caller:
    """Builds and sends the calls of one session."""

    def __init__(
        self,
        settings: Settings,
        meter: Meter,
        *,
        cache: ResponseCache | None = None,
        max_image_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self.meter = meter
        self.probe = Probe()
        self.cache = cache  # the response cache (None: none)
        self.max_image_bytes_given = max_image_bytes  # None: the wire format's default
        self.service_tier: str | None = None  # sent with every call that names none
        self.prompt_cache: str | None = None  # "5m" | "1h": cache_control on every call
        self.last_map: pd.DataFrame | None = None  # the last map/compare (interrupted: done rows)
        self._client: ChatClient | None = None

    def use_defaults(self, *, service_tier: str | None, prompt_cache: str | None) -> None:
        """Every call's ``service_tier`` and ``prompt_cache`` unless it names its own."""
        self.service_tier = service_tier
        self.prompt_cache = check_ttl(prompt_cache)

    def take_defaults(self, other: Caller) -> None:
        """The call defaults of ``other`` (for a derived session)."""
        self.use_defaults(service_tier=other.service_tier, prompt_cache=other.prompt_cache)

    @property
    def client(self) -> ChatClient:
        """The HTTP client, made on first use (a remote endpoint needs a key by then)."""
        if self._client is None:
            if not self.is_local:
                self.settings.require_key()
            from holynb._client import ChatClient  # the HTTP stack loads on first use

            self._client = ChatClient(self.settings)
        return self._client

    @property
    def image_limit(self) -> int:
        """The size limit per image: as given, else the wire format's (5 MB for Anthropic's,
        20 MB for OpenAI's)."""
        if self.max_image_bytes_given is not None:
            return self.max_image_bytes_given
        from holynb.images import default_max_image_bytes

        return default_max_image_bytes(self.settings.api)

    async def aclose(self) -> None:
        """Close this loop's connections."""
        if self._client is not None:
            await self._client.aclose()

    def close(self) -> None:
        """Close the connections of holynb's loop thread and the cache."""
        if self._client is not None:
            from holynb._loop import default_loop

            default_loop().run(self._client.aclose())
        if self.cache is not None:
            self.cache.close()

    @property
    def base_url(self) -> str:
        """The endpoint calls go to."""
        return self.settings.base_url

    @property
    def is_local(self) -> bool:
        """Whether the endpoint is on this machine."""
        from holynb._config import is_loopback_url

        return is_loopback_url(self.settings.base_url)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to another part of the API (files, batches, models), with the
        client's key, retries and timeouts; raises holynb's APIError subclasses."""
        return await self.client.send(method, path, **kwargs)

    async def get_json(self, path: str) -> Any:
        """``GET path``'s JSON answer (raises APIError subclasses)."""
        return await self.client.get_json(path)

    async def models(self) -> list[str]:
        """The model ids the endpoint offers, sorted."""
        payload = await self.get_json("models")
        return sorted(m["id"] for m in payload.get("data", []) if "id" in m)

    # -- building ------------------------------------------------------------------------------

    def body(
        self,
        prompt: Prompt,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The request body of ``prompt`` (images already attached to its messages)."""
        params = params or {}
        default: int | None = None
        if self.settings.api == "anthropic":
            from holynb._wire.anthropic import DEFAULT_MAX_TOKENS

            default = DEFAULT_MAX_TOKENS
        body = request_body(
            prompt,
            model=model or self.settings.model,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            params=params,
            default_max_tokens=default,
        )
        if self.service_tier is not None:
            body.setdefault("service_tier", self.service_tier)  # a call's own wins
        ttl = check_ttl(params.get("prompt_cache", self.prompt_cache))
        if ttl is not None and self.settings.api == "anthropic":  # OpenAI's caches by itself
            body["messages"] = mark(body["messages"], ttl)
        return body

    def with_images(
        self, prompt: Prompt, system: str | None, images: Any, preset: str | ImagePreset | None
    ) -> tuple[Prompt, str | None]:
        """The prompt as messages with ``images`` prepared (bad or oversized ones refused
        before anything is sent) and added to its last user message; unchanged without."""
        if images is None:
            return prompt, system
        from holynb.images import attach_images, prepare_images

        prepared = prepare_images(images, preset, max_bytes=self.image_limit)
        return attach_images(build_messages(prompt, system), prepared), None

    def estimate(
        self,
        prompt: Prompt,
        model: str | None = None,
        max_tokens: int | None = None,
        *,
        system: str | None = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        params: dict[str, Any] | None = None,
    ) -> CostEstimate:
        """What ``prompt`` would cost at most, sending nothing (see ``Session.estimate``):
        images prepared as a call would send them, then the meter's estimate."""
        from holynb.images import prepare_images

        prepared = prepare_images(images, image_preset, max_bytes=self.image_limit)
        image_tokens = sum(i.tokens(self.settings.api) for i in prepared)
        return self.meter.estimate(
            build_messages(prompt, system), model or self.settings.model, max_tokens,
            params or {}, image_tokens,
        )  # fmt: skip

    def call(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
        kind: str = "chat",
        tag: str | None = None,
        cache: CallCache = None,
        batch: bool = False,
        params: dict[str, Any] | None = None,
    ) -> Call:
        """One call of ``prompt`` (raises ImageError, TypeError or ValueError for what
        cannot be sent, before anything is)."""
        prompt, system = self.with_images(prompt, system, images, image_preset)
        body = self.body(prompt, model, system, temperature, max_tokens, params)
        return Call(body=body, kind=kind, tag=tag, cache=cache, batch=batch)

    # -- the cache -----------------------------------------------------------------------------

    def cached(self, call: Call) -> ChatResult | None:
        """The cached answer to ``call``, recorded in the ledger as a free hit; or None."""
        cache = self.cache
        if cache is None or call.cache is False or call.cache == "refresh":
            return None
        started = time.perf_counter()
        stored = cache.lookup(call.body)
        if stored is None:
            return None
        from holynb.cache import as_hit

        saved = self.meter.prices.cost(stored.model, stored.usage)
        cache.note_saved(saved)
        elapsed = (time.perf_counter() - started) * 1000.0
        hit = as_hit(stored, saved_usd=saved, latency_ms=elapsed)
        return self.meter.record_hit(hit, kind=call.kind, tag=call.tag)

    def keep(self, call: Call, result: ChatResult) -> None:
        """Store ``result`` as ``call``'s answer (the cache judges whether it is clean)."""
        cache = self.cache
        if cache is not None and call.cache is not False:
            cache.save(call.body, result)

    # -- sending -------------------------------------------------------------------------------

    async def complete(self, call: Call) -> ChatResult:
        """Send ``call`` and wait for the whole answer (its fallback where its
        ``response_format`` is refused); recorded and priced."""
        if call.probe is None or call.fallback is None:
            return await self._complete(call)
        verdict = self.probe.verdict(call.probe, self.base_url, call.model)
        if verdict is False:
            return await self._complete(call.fallback)
        if verdict is None:
            async with self.probe.lock(call.probe, self.base_url, call.model):
                if self.probe.verdict(call.probe, self.base_url, call.model) is None:
                    return await self._probing(call)
            return await self.complete(call)
        return await self._probing(call)

    async def _probing(self, call: Call) -> ChatResult:
        assert call.probe is not None and call.fallback is not None
        try:
            result = await self._complete(call)
        except BadRequestError as err:
            why = refusal_of(err, call.probe)
            if why is None:
                raise
            if why == "unsupported":
                self.probe.learn(call.probe, self.base_url, call.model, False)
            if call.on_fallback is not None:
                call.on_fallback(err.message)
            return await self._complete(call.fallback)
        self.probe.learn(call.probe, self.base_url, call.model, True)
        return result

    async def _complete(self, call: Call) -> ChatResult:
        hit = self.cached(call)
        if hit is not None:
            return hit
        client = self.client
        meter = self.meter
        body = call.body
        hold = await meter.areserve(body)
        try:
            result = await client.complete(body)
        except APIError as err:
            meter.record_failure(body, kind=call.kind, tag=call.tag, hold=hold, err=err,
                                 partial=err.partial)  # fmt: skip
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            meter.record_failure(body, kind=call.kind, tag=call.tag, hold=hold, err=None,
                                 partial=None, interrupted=True)  # fmt: skip
            raise
        else:
            result = await meter.arecord(result, body, kind=call.kind, tag=call.tag, hold=hold,
                                         batch=call.batch)  # fmt: skip
            self.keep(call, result)
            return result
        finally:
            meter.release(hold)  # whatever happened above, the reservation ends with the call

    async def stream(self, call: Call, sink: AsyncChatStream) -> AsyncGenerator[str, None]:
        """Send ``call`` streamed: its text as it arrives; what arrived is recorded when the
        stream ends, stops early or fails, and kept in ``sink.result``. A cached answer is
        replayed in pieces."""
        from holynb._client import StreamState

        hit = self.cached(call)
        if hit is not None:
            from holynb.cache import replay_pieces

            sink.result = hit
            for piece in replay_pieces(hit.text):
                yield piece
                await asyncio.sleep(0)
            return
        client = self.client
        meter = self.meter
        body = call.body
        hold = await meter.areserve(body)
        progress = StreamState(model=body["model"], on_retry=sink.retrying)
        kind, tag = call.kind, call.tag
        try:
            async for text in client.stream(body, progress):
                yield text
        except APIError as err:
            meter.record_failure(body, kind=kind, tag=tag, hold=hold, err=err, partial=err.partial)
            sink.result = err.partial
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            got = progress.result(interrupted=True)
            sink.result = meter.record(got, body, kind=kind, tag=tag, hold=hold)
            raise
        else:
            sink.result = await meter.arecord(progress.result(), body, kind=kind, tag=tag,
                                              hold=hold)  # fmt: skip
            self.keep(call, sink.result)
        finally:
            meter.release(hold)

    async def run(self, flow: Flow[T]) -> T:
        """Drive a flow: send each call it yields (``complete``) and give it the result, or
        the APIError, until it returns."""
        try:
            call = next(flow)
        except StopIteration as done:
            return done.value
        while True:
            try:
                result = await self.complete(call)
            except APIError as err:
                try:
                    call = flow.throw(err)
                except StopIteration as done:
                    return done.value
                continue
            try:
                call = flow.send(result)
            except StopIteration as done:
                return done.value


class HasCaller(Protocol):
    """Anything that has a Caller (a Session): what features take besides a Caller."""

    @property
    def caller(self) -> Caller: ...


Core: TypeAlias = "Caller | HasCaller"  # what features take: the core, or anything that has it


def caller_of(core: Caller | HasCaller) -> Caller:
    """The ``Caller`` of ``core``: a Caller itself, or anything that has one (a Session)."""
    if isinstance(core, Caller):
        return core
    caller = getattr(core, "caller", None)
    if not isinstance(caller, Caller):
        raise TypeError(f"expected a Session or a Caller, got {type(core).__name__}")
    return caller
