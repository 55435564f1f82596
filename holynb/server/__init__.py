"""A local OpenAI-compatible server: offline demo models, fault injection, server-side counters.

It also speaks Anthropic's Messages API (``POST /v1/messages``, see ``holynb.server.messages``),
for ``Session(api="anthropic")`` and the official anthropic SDK (``base_url`` the root URL).

>>> from holynb.server import LocalServer, faults
>>> with LocalServer() as server:
...     server.faults.push(faults.status(429, retry_after=1))
...     session = holynb.Session(base_url=server.base_url, model="local/echo")
...     session.chat("hello").text          # retried after the 429
...     server.stats.requests               # 2

Models: ``local/echo`` (answers ``"You said: ..."`` and a deterministic passage),
``local/slow`` (the same with latency and paced streaming), ``local/python`` and
``local/broken`` (code interpreter), ``local/json`` (honours ``response_format`` json_schema)
and ``local/json-noformat`` (refuses it with a 400); add more with
``server.register_model(name, respond)``. ``holynb serve`` runs one from the command line.

Every server requires a key (a random token unless ``api_key=`` is given; this process's sessions
send it by themselves, others use ``server.api_key.get()``), refuses requests from web pages
(``Origin``), non-loopback ``Host`` headers and non-JSON posts (see ``holynb.server.guard``), and
serves the code-running ``local/python`` and ``local/broken`` only with ``python=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from holynb.server import faults
from holynb.server.faults import Fault, FaultQueue
from holynb.server.registry import Model, ModelRegistry
from holynb.server.stats import ServerStats
from holynb.server.tokens import count_tokens, prompt_tokens, tokenize

if TYPE_CHECKING:
    from holynb.server.runner import LocalServer, serve_forever


def __getattr__(name: str) -> Any:
    # The runner pulls in aiohttp.web (~0.3 s cold); `from holynb.server import faults` should not.
    if name in ("LocalServer", "serve_forever"):
        from holynb.server import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'holynb.server' has no attribute {name!r}")


__all__ = [
    "Fault",
    "FaultQueue",
    "LocalServer",
    "Model",
    "ModelRegistry",
    "ServerStats",
    "count_tokens",
    "faults",
    "prompt_tokens",
    "serve_forever",
    "tokenize",
]
