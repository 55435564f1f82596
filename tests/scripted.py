"""A scripted OpenAI-compatible endpoint on 127.0.0.1 for tests that need an API to misbehave
in ways the local server will not (answer with another model, report odd usage, ...).

>>> with Scripted(lambda body: completion("hi", model="gpt-4.1")) as api:
...     holynb.Session(base_url=api.base_url, api_key="k").chat("Hi")
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

Answer = dict[str, Any] | str | tuple[int, dict[str, Any]]  # JSON, SSE text, or (status, JSON)


def completion(
    text: str, *, model: str, prompt_tokens: int = 10, completion_tokens: int = 5, n: int = 1
) -> dict[str, Any]:
    """A chat completion with ``n`` choices of ``text`` and the usage given."""
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            for i in range(n)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def sse(*events: dict[str, Any], done: bool = True, named: bool = False) -> str:
    """Server-sent events for ``events`` (with ``event:`` lines for Anthropic's format)."""
    out = []
    for e in events:
        head = f"event: {e['type']}\n" if named else ""
        out.append(f"{head}data: {orjson.dumps(e).decode()}\n\n")
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out)


class Scripted:
    """Answers every POST with ``answer(body)`` and keeps the bodies it was sent."""

    def __init__(self, answer: Callable[[dict[str, Any]], Answer]) -> None:
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
                with scripted.lock:
                    scripted.bodies.append(body)
                reply = scripted.answer(body)
                status = 200
                if isinstance(reply, tuple):
                    status, reply = reply
                if isinstance(reply, str):
                    data, kind = reply.encode(), "text/event-stream"
                else:
                    data, kind = orjson.dumps(reply), "application/json"
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def requests(self) -> int:
        """How many requests it received."""
        with self.lock:
            return len(self.bodies)

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
