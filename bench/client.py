"""One benchmark client run: one library, one scenario, one process; prints a JSON line on stdout.

run.py starts this as a fresh subprocess for every measurement, already pinned to the client core:

    python bench/client.py --lib httpx2-aiohttp --scenario cpu --url http://127.0.0.1:PORT/v1

Scenarios:
- `cpu`: sequential non-streamed requests; client CPU (`time.process_time`) per request.
- `throughput`: many requests with a fixed number in flight; requests per second.
- `stream`: one long stream; text deltas per second, each SSE event's JSON parsed as a user would.

A library that cannot be used (holynb while it is being written) reports `{"available": false}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

API_KEY = "sk-bench"
MODEL = "bench"
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT_BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}
STREAM_BODY = {"model": MODEL, "messages": MESSAGES, "stream": True}
WARM_STREAM_TOKENS = 16


class Unavailable(Exception):
    """The library cannot be benchmarked in this environment (not installed, or incomplete)."""


class Client(Protocol):
    """What every library adapter offers: one answer, one stream of text deltas, and cleanup."""

    async def chat(self) -> str: ...

    def stream(self, max_tokens: int | None = None) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


# --- adapters: the code a user of each library would write -----------------------------------


class HttpxFamilyClient:
    """Raw httpx-style calls (httpx, httpx2, httpx2 on aiohttp): post JSON, parse SSE lines."""

    def __init__(self, module: Any, url: str, transport: Any = None) -> None:
        kwargs: dict[str, Any] = {
            "base_url": url,
            "headers": {"Authorization": f"Bearer {API_KEY}"},
        }
        if transport is not None:
            kwargs["transport"] = transport
        self.http = module.AsyncClient(**kwargs)

    async def chat(self) -> str:
        response = await self.http.post("/chat/completions", json=CHAT_BODY)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"])

    async def stream(self, max_tokens: int | None = None) -> AsyncIterator[str]:
        body = STREAM_BODY if max_tokens is None else {**STREAM_BODY, "max_tokens": max_tokens}
        async with self.http.stream("POST", "/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                for choice in json.loads(data)["choices"]:
                    text = choice["delta"].get("content")
                    if text:
                        yield text

    async def aclose(self) -> None:
        await self.http.aclose()


class AiohttpClient:
    """Raw aiohttp, for reference: what the transport adds on top of it."""

    def __init__(self, url: str) -> None:
        import aiohttp

        self.url = f"{url}/chat/completions"
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"})

    async def chat(self) -> str:
        async with self.http.post(self.url, json=CHAT_BODY) as response:
            response.raise_for_status()
            data = await response.json()
        return str(data["choices"][0]["message"]["content"])

    async def stream(self, max_tokens: int | None = None) -> AsyncIterator[str]:
        body = STREAM_BODY if max_tokens is None else {**STREAM_BODY, "max_tokens": max_tokens}
        async with self.http.post(self.url, json=body) as response:
            response.raise_for_status()
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].rstrip()
                if data == b"[DONE]":
                    break
                for choice in json.loads(data)["choices"]:
                    text = choice["delta"].get("content")
                    if text:
                        yield text

    async def aclose(self) -> None:
        await self.http.close()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class FloorClient:
    """No HTTP library: asyncio streams and a stack of keep-alive connections.

    It does the least any client must (send bytes, read the head, read the body, parse the JSON),
    so its figures are the floor for a Python client on this machine, and show what the server can
    deliver: if it reaches the ideal throughput, the server is not what limits the others.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = f"{parts.path}/chat/completions"
        self.idle: list[Connection] = []

    def request(self, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    async def send(self, body: dict[str, Any]) -> tuple[Connection, dict[str, str]]:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        conn[1].write(self.request(body))
        head = (await conn[0].readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        if head[0].split(" ", 2)[1] != "200":
            raise RuntimeError(head[0])
        fields = (line.partition(":") for line in head[1:] if line)
        return conn, {name.lower(): value.strip() for name, _, value in fields}

    async def chat(self) -> str:
        conn, headers = await self.send(CHAT_BODY)
        body = await conn[0].readexactly(int(headers["content-length"]))
        self.idle.append(conn)
        return str(json.loads(body)["choices"][0]["message"]["content"])

    async def stream(self, max_tokens: int | None = None) -> AsyncIterator[str]:
        body = STREAM_BODY if max_tokens is None else {**STREAM_BODY, "max_tokens": max_tokens}
        conn, _ = await self.send(body)  # the server always answers streams chunked
        pending = b""
        while size := int((await conn[0].readuntil(b"\r\n"))[:-2], 16):
            pending += (await conn[0].readexactly(size + 2))[:-2]
            *events, pending = pending.split(b"\n\n")
            for event in events:
                if event.startswith(b"data: ") and event != b"data: [DONE]":
                    for choice in json.loads(event[6:])["choices"]:
                        text = choice["delta"].get("content")
                        if text:
                            yield text
        await conn[0].readexactly(2)  # the CRLF after the last, empty chunk
        self.idle.append(conn)

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()


class OpenAIClient:
    """The official SDK, as its README shows it."""

    def __init__(self, url: str) -> None:
        import openai

        self.sdk = openai.AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0)

    async def chat(self) -> str:
        r = await self.sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16)
        return r.choices[0].message.content or ""

    async def stream(self, max_tokens: int | None = None) -> AsyncIterator[str]:
        extra = {} if max_tokens is None else {"max_tokens": max_tokens}
        chunks = await self.sdk.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, **extra
        )
        async for chunk in chunks:
            if chunk.choices:
                text = chunk.choices[0].delta.content
                if text:
                    yield text

    async def aclose(self) -> None:
        await self.sdk.close()


class HolynbClient:
    """holynb's public contract: `Session.achat` and `Session.astream`."""

    def __init__(self, url: str) -> None:
        try:
            import holynb
        except Exception as exc:
            raise Unavailable(f"import holynb failed: {exc!r}") from exc
        if not hasattr(holynb, "Session"):
            raise Unavailable("holynb has no Session yet")
        try:
            self.session = holynb.Session(
                base_url=url, api_key=API_KEY, model=MODEL, max_retries=0, concurrency=64
            )
        except Exception as exc:
            raise Unavailable(f"holynb.Session(...) failed: {exc!r}") from exc

    async def chat(self) -> str:
        r = await self.session.achat("hi", max_tokens=16)
        return str(r.text)

    async def stream(self, max_tokens: int | None = None) -> AsyncIterator[str]:
        texts = (
            self.session.astream("hi")
            if max_tokens is None
            else self.session.astream("hi", max_tokens=max_tokens)
        )
        async for text in texts:
            yield text

    async def aclose(self) -> None:
        for name in ("aclose", "close"):
            close = getattr(self.session, name, None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
                return


def make_client(lib: str, url: str) -> Client:
    if lib == "httpx":
        import httpx

        return HttpxFamilyClient(httpx, url)
    if lib == "httpx2":
        import httpx2

        return HttpxFamilyClient(httpx2, url)
    if lib == "httpx2-aiohttp":
        import httpx2
        from httpx_aiohttp.httpx2 import AiohttpTransport

        return HttpxFamilyClient(httpx2, url, transport=AiohttpTransport())
    if lib == "aiohttp":
        return AiohttpClient(url)
    if lib == "floor":
        return FloorClient(url)
    if lib == "openai":
        return OpenAIClient(url)
    if lib == "holynb":
        return HolynbClient(url)
    raise SystemExit(f"unknown library {lib!r}")


def first_answer(lib: str, url: str) -> str:
    """Construct the client, get one answer, close: what a cold start does before it is useful."""

    async def once() -> str:
        client = make_client(lib, url)
        try:
            return await client.chat()
        finally:
            await client.aclose()

    return asyncio.run(once())


# --- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """Wall and CPU time at one instant; subtract two to get a window."""

    wall: float
    cpu: float

    @staticmethod
    def now() -> Clock:
        return Clock(time.perf_counter(), time.process_time())


def window(start: Clock, stop: Clock) -> dict[str, float]:
    return {"wall_s": stop.wall - start.wall, "cpu_s": stop.cpu - start.cpu}


async def sequential(client: Client, n: int) -> None:
    for _ in range(n):
        if not await client.chat():
            raise RuntimeError("empty answer")


async def scenario_cpu(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    first = Clock.now()
    await sequential(client, args.warmup)
    start = Clock.now()
    await sequential(client, args.n)
    stop = Clock.now()
    measured = window(start, stop)
    return {
        **measured,
        "requests": args.n,
        "cpu_us_per_request": measured["cpu_s"] * 1e6 / args.n,
        "wall_us_per_request": measured["wall_s"] * 1e6 / args.n,
        "active_s": stop.wall - first.wall,
    }


async def in_flight(call: Callable[[], Awaitable[str]], n: int, concurrency: int) -> int:
    """Run `n` calls with `concurrency` workers; returns the number that failed."""
    remaining = n
    errors = 0

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            try:
                await call()
            except Exception:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


async def scenario_throughput(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    first = Clock.now()
    await sequential(client, args.warmup)
    start = Clock.now()
    errors = await in_flight(client.chat, args.n, args.concurrency)
    stop = Clock.now()
    measured = window(start, stop)
    return {
        **measured,
        "requests": args.n,
        "errors": errors,
        "req_per_s": args.n / measured["wall_s"],
        "cpu_us_per_request": measured["cpu_s"] * 1e6 / args.n,
        "active_s": stop.wall - first.wall,
    }


async def count_texts(texts: AsyncIterator[str]) -> int:
    count = 0
    async for _ in texts:
        count += 1
    return count


async def scenario_stream(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    first = Clock.now()
    await sequential(client, args.warmup)
    # Warm the streaming code path too (lazy imports, parsers) with a short stream.
    with contextlib.suppress(TypeError):
        await count_texts(client.stream(max_tokens=WARM_STREAM_TOKENS))
    start = Clock.now()
    chunks = await count_texts(client.stream())
    stop = Clock.now()
    measured = window(start, stop)
    return {
        **measured,
        "chunks": chunks,
        "chunks_per_s": chunks / measured["wall_s"],
        "cpu_us_per_chunk": measured["cpu_s"] * 1e6 / max(chunks, 1),
        "active_s": stop.wall - first.wall,
    }


SCENARIOS = {"cpu": scenario_cpu, "throughput": scenario_throughput, "stream": scenario_stream}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        client = make_client(args.lib, args.url)
    except Unavailable as exc:
        return {"available": False, "reason": str(exc)}
    try:
        result = await SCENARIOS[args.scenario](client, args)
    finally:
        await client.aclose()
    return {"available": True, **result}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--lib", required=True)
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--url", required=True, help="base URL ending in /v1")
    p.add_argument("--n", type=int, default=2000, help="measured requests")
    p.add_argument("--warmup", type=int, default=100, help="sequential requests before measuring")
    p.add_argument("--concurrency", type=int, default=64)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    result["affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
