"""A minimal, fast OpenAI-compatible HTTP/1.1 server for benchmarks, on raw asyncio protocols.

It exists so that the server is never what a benchmark measures: every response is rendered once
at start-up, requests are parsed with a few byte searches, keep-alive is the default, and a
20,000-chunk stream goes out as a handful of large `transfer-encoding: chunked` writes.

Endpoints:

- `POST /v1/chat/completions`: a small fixed answer with usage (as the model the request names,
  `bench` when it names none), or with `"stream": true` an SSE
  stream of `--stream-chunks` content chunks (fewer if the request's `max_tokens` is smaller), a
  finish chunk, a usage chunk (`choices: []`) and `data: [DONE]`.
- `GET /v1/models`: one model.
- `GET /stats`: JSON counters (connections accepted, requests served, the server's own CPU seconds).

Run it as its own process; it pins itself to one core:

    python bench/fastserver.py --port 0 --latency-ms 50 --cpu 1
    python bench/fastserver.py --port 0 --tls-cert cert.pem --tls-key key.pem   # HTTPS

The first line on stdout is `listening on 127.0.0.1:PORT`; the counters are printed to stdout on
exit (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import time
from dataclasses import asdict, dataclass

CREATED = 1_700_000_000
MODEL = "bench"
HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"
CONNECTION_CLOSE = b"\r\nconnection: close"
MAX_HEADER_BYTES = 64 * 1024
MAX_MODELS = 64  # answers rendered and kept for this many model names


@dataclass
class Counters:
    """What the server has done since it started; `/stats` requests are not counted as requests."""

    connections: int = 0
    open_connections: int = 0
    requests: int = 0
    chat: int = 0
    streams: int = 0
    stats_connections: int = 0

    def snapshot(self) -> dict[str, object]:
        data: dict[str, object] = dict(asdict(self))
        # A connection opened only to read /stats is not one the client under test opened.
        data["connections"] = self.connections - self.stats_connections
        data["cpu_s"] = time.process_time()
        data["wall_s"] = time.perf_counter()
        data["affinity"] = affinity()
        return data


def affinity() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


# --- pre-rendered responses -------------------------------------------------------------------


def http_response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    """A complete keep-alive response with a Content-Length body."""
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"content-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        "x-request-id: req-bench\r\n"
        "\r\n"
    )
    return head.encode() + body


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def completion_body(model: str = MODEL) -> bytes:
    """The fixed non-streamed answer, as ``model``."""
    return dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the bench server."},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        }
    )


def chunk_event(delta: dict[str, str], finish_reason: str | None) -> bytes:
    """One SSE event carrying a `chat.completion.chunk` with a single choice."""
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + dumps(chunk) + b"\n\n"


def usage_event(completion_tokens: int) -> bytes:
    """The final usage chunk, sent with `choices: []` as `include_usage` servers do."""
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": completion_tokens,
            "total_tokens": 9 + completion_tokens,
        },
    }
    return b"data: " + dumps(chunk) + b"\n\n"


def sse_events(n_chunks: int) -> list[bytes]:
    """Every event of one stream, in order, ending with `data: [DONE]`."""
    first = chunk_event({"role": "assistant", "content": "tok "}, None)
    token = chunk_event({"content": "tok "}, None)
    events = [first] + [token] * (n_chunks - 1) if n_chunks > 0 else []
    events.append(chunk_event({}, "stop"))
    events.append(usage_event(n_chunks))
    events.append(b"data: [DONE]\n\n")
    return events


def http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def stream_response(n_chunks: int, events_per_write: int) -> list[bytes]:
    """The stream as a list of large writes: headers, then HTTP chunks of many SSE events each.

    With `events_per_write=1` every SSE event is its own HTTP chunk, as most real servers send them.
    """
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n"
        b"x-request-id: req-bench\r\n"
        b"\r\n"
    )
    events = sse_events(n_chunks)
    body = [
        http_chunk(b"".join(events[i : i + events_per_write]))
        for i in range(0, len(events), events_per_write)
    ]
    writes = [head]
    batch = 256 * 1024
    buf = bytearray()
    for piece in [*body, b"0\r\n\r\n"]:
        buf += piece
        if len(buf) >= batch:
            writes.append(bytes(buf))
            buf.clear()
    if buf:
        writes.append(bytes(buf))
    return writes


@dataclass(frozen=True)
class Rendered:
    """All responses the server can send, built once."""

    completion: bytes
    models: bytes
    not_found: bytes
    bad_request: bytes


def render() -> Rendered:
    models = dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "b"}]})
    return Rendered(
        completion=http_response("200 OK", completion_body()),
        models=http_response("200 OK", models),
        not_found=http_response("404 Not Found", b'{"error":{"message":"not found"}}'),
        bad_request=http_response("400 Bad Request", b'{"error":{"message":"bad request"}}'),
    )


# --- the protocol -----------------------------------------------------------------------------


def parse_body(body: bytes) -> dict[str, object]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def stream_length(request: dict[str, object], default: int) -> int:
    """Content chunks to send: the server's default, capped by the request's `max_tokens`."""
    cap = request.get("max_tokens")
    return min(cap, default) if isinstance(cap, int) and cap >= 0 else default


class BenchProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse requests from the buffer, answer with pre-rendered bytes."""

    def __init__(self, server: BenchServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.counters.connections += 1
        self.server.counters.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.counters.open_connections -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and self.handle_one():
            pass
        if len(self.buffer) > MAX_HEADER_BYTES and HEADER_END not in self.buffer:
            self.close()

    def handle_one(self) -> bool:
        """Answer the first complete request in the buffer; False when none is complete yet."""
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).lower()
        length = content_length(head)
        total = end + 4 + length
        if len(self.buffer) < total:
            return False
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        request_line = head.split(b"\r\n", 1)[0]
        self.respond(request_line, body, close=CONNECTION_CLOSE in head)
        self.served += 1
        return True

    def respond(self, request_line: bytes, body: bytes, close: bool) -> None:
        parts = request_line.split(b" ")
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
        path = path.split(b"?", 1)[0]
        counters, rendered = self.server.counters, self.server.rendered
        if method == b"get" and path == b"/stats":
            if self.served == 0:
                counters.stats_connections += 1
            self.send([http_response("200 OK", dumps(counters.snapshot()))], close)
            return
        counters.requests += 1
        if method == b"post" and path.endswith(b"/chat/completions"):
            request = parse_body(body)
            if request.get("stream") is True:
                counters.streams += 1
                self.later(self.server.stream(stream_length(request, self.server.n_chunks)), close)
            else:
                counters.chat += 1
                self.later([self.server.completion(request.get("model"))], close)
        elif method == b"get" and path.endswith(b"/models"):
            self.send([rendered.models], close)
        else:
            self.send([rendered.not_found], close)

    def later(self, writes: list[bytes], close: bool) -> None:
        """Send after the configured latency (a timer, not a task: nothing to schedule per byte)."""
        delay = self.server.latency_s
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.send, writes, close)
        else:
            self.send(writes, close)

    def send(self, writes: list[bytes], close: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.writelines(writes)
        if close:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def content_length(lower_head: bytes) -> int:
    start = lower_head.find(CONTENT_LENGTH)
    if start < 0:
        return 0
    start += len(CONTENT_LENGTH)
    stop = lower_head.find(b"\r\n", start)
    value = lower_head[start:] if stop < 0 else lower_head[start:stop]
    try:
        return int(value.strip())
    except ValueError:
        return 0


class BenchServer:
    """The configuration, pre-rendered responses and counters that all connections share."""

    def __init__(self, latency_ms: float, n_chunks: int, events_per_write: int) -> None:
        self.latency_s = latency_ms / 1000
        self.n_chunks = n_chunks
        self.events_per_write = events_per_write
        self.rendered = render()
        self.completions: dict[str, bytes] = {}
        self.streams: dict[int, list[bytes]] = {}
        self.stream(n_chunks)  # render the default stream before the first client arrives
        self.counters = Counters()

    def stream(self, n_chunks: int) -> list[bytes]:
        """The writes of an `n_chunks` stream, rendered on first use and kept."""
        writes = self.streams.get(n_chunks)
        if writes is None:
            writes = self.streams[n_chunks] = stream_response(n_chunks, self.events_per_write)
        return writes

    def completion(self, model: object) -> bytes:
        """The non-streamed answer as ``model`` (rendered on first use, kept for a few names)."""
        if not isinstance(model, str) or model == MODEL:
            return self.rendered.completion
        response = self.completions.get(model)
        if response is None:
            response = http_response("200 OK", completion_body(model))
            if len(self.completions) < MAX_MODELS:
                self.completions[model] = response
        return response

    def protocol(self) -> BenchProtocol:
        return BenchProtocol(self)


# --- running it -------------------------------------------------------------------------------


def pin_to(cpu: int | None) -> str:
    """Pin this process to one CPU (even outside the affinity it inherited); says what was done."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        return f"not pinned to cpu {cpu}: {exc}"
    return f"pinned to cpu {affinity()}"


async def serve(args: argparse.Namespace) -> None:
    bench = BenchServer(args.latency_ms, args.stream_chunks, args.events_per_write)
    loop = asyncio.get_running_loop()
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = await loop.create_server(bench.protocol, args.host, args.port, backlog=1024, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(json.dumps(bench.counters.snapshot()), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Minimal fast OpenAI-compatible server for benchmarks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each chat answer")
    p.add_argument("--stream-chunks", type=int, default=20_000, help="content chunks per stream")
    p.add_argument(
        "--events-per-write",
        type=int,
        default=512,
        help="SSE events per HTTP chunk (1 = one chunk per event, like most real servers)",
    )
    p.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    p.add_argument("--tls-cert", default=None, help="serve HTTPS with this PEM certificate")
    p.add_argument("--tls-key", default=None, help="the certificate's PEM private key")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"fastserver: {pin_to(args.cpu)}", file=sys.stderr, flush=True)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
