"""One answer, with or without a schema: what chat, stream, map, compare and the interpreter
send, over the ``Caller`` (``holynb.calls``).

``ask`` builds the call (images prepared and attached) and sends it, or runs the structured
answer's flow when a ``schema`` is given; ``stream_answer`` is the same, streamed into an
``AsyncChatStream``. Session's ``achat``/``astream`` and every feature go through these two,
so a prompt takes one path whatever asked it.

>>> result = await ask(session.caller, "Say hi", max_tokens=20)
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from holynb.calls.call import Call, CallCache

if TYPE_CHECKING:
    from holynb.calls.caller import Caller
    from holynb.chat_stream import AsyncChatStream, Texts
    from holynb.images import ImagePreset
    from holynb.prompts import Prompt
    from holynb.results import ChatResult

__all__ = ["ANSWER_OPTIONS", "ask", "split_options", "stream_answer"]

# the named options of ask and stream_answer; any other keyword goes into the request body
ANSWER_OPTIONS = (
    "model", "system", "temperature", "max_tokens", "tag", "kind", "cache", "schema", "images",
    "image_preset",
)  # fmt: skip


def split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kwargs`` as (the named options of ``ask``, the request body's parameters)."""
    named = {k: v for k, v in kwargs.items() if k in ANSWER_OPTIONS}
    return named, {k: v for k, v in kwargs.items() if k not in ANSWER_OPTIONS}


async def ask(
    caller: Caller,
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
    params: dict[str, Any] | None = None,
) -> ChatResult:
    """Send ``prompt`` and wait for the whole answer (recorded and priced); with ``schema``,
    a validated structured answer (see ``holynb.structured``). Raises ImageError, TypeError
    or ValueError for what cannot be sent, before anything is."""
    params = params or {}
    prompt, system = caller.with_images(prompt, system, images, image_preset)
    if schema is not None:
        from holynb.structured import answer_flow

        flow = answer_flow(
            caller, prompt, schema, model=model, system=system, temperature=temperature,
            max_tokens=max_tokens, tag=tag, kind=kind, cache=cache, params=params,
        )  # fmt: skip
        return await caller.run(flow)
    body = caller.body(prompt, model, system, temperature, max_tokens, params)
    return await caller.complete(Call(body=body, kind=kind, tag=tag, cache=cache))


def stream_answer(
    caller: Caller,
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
    params: dict[str, Any] | None = None,
) -> AsyncChatStream:
    """``prompt``'s answer streamed: an ``AsyncChatStream`` whose ``result`` is the call's
    recorded result once it ends. Images are prepared (or refused) now, before anything is
    sent."""
    from holynb.chat_stream import AsyncChatStream

    params = params or {}
    prompt, system = caller.with_images(prompt, system, images, image_preset)

    async def texts(sink: AsyncChatStream) -> Texts:
        if schema is not None:
            from holynb.structured import astream_structured

            source = astream_structured(
                caller, prompt, schema, sink, model=model, system=system,
                temperature=temperature, max_tokens=max_tokens, tag=tag, kind=kind,
                cache=cache, params=params,
            )  # fmt: skip
        else:
            body = caller.body(prompt, model, system, temperature, max_tokens, params)
            source = caller.stream(Call(body=body, kind=kind, tag=tag, cache=cache), sink)
        async with contextlib.aclosing(source) as pieces:
            async for text in pieces:  # leaving early closes the request at once
                yield text

    return AsyncChatStream(texts)
