"""Sessions on holynb's own offline server: ``local_server()`` (the process's server on
127.0.0.1), ``local_session()`` (a session on it) and ``auto_session()`` (the real API when a
key is set, else the local server): what tutorials, tests and ``holynb demo`` run on."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from holynb._config import LOCAL_MODEL, env_api_key

if TYPE_CHECKING:
    from holynb.server import LocalServer
    from holynb.session import Session

_server: LocalServer | None = None
_server_lock = threading.Lock()


def local_server(python: bool = False) -> LocalServer:
    """The process's local OpenAI-compatible server on 127.0.0.1, started on first use.

    It requires a random token that this process's sessions send by themselves. ``python=True``
    turns on its models that run code (``local/python``, for ``%%interpret`` offline); once on,
    they stay on for the process.
    """
    global _server
    with _server_lock:
        if _server is None:
            from holynb.server import LocalServer

            _server = LocalServer().start()
        if python:
            _server.python = True
        return _server


def local_session(model: str = LOCAL_MODEL, *, python: bool = False, **kwargs: Any) -> Session:
    """A Session on the local server: no key to set, no network, deterministic answers.

    ``python=True`` also turns on the server's code-running model ``local/python``.

    >>> s = holynb.local_session()
    >>> s.chat("hello").text
    'You said: hello. ...'
    """
    from holynb.session import Session

    return Session(model=model, base_url=local_server(python=python).base_url, **kwargs)


def auto_session(*, python: bool = False, **kwargs: Any) -> tuple[Session, str]:
    """The real API when a key is in the environment, else the local server; and which one.

    ``python=True``: when it is the local server, turn on its code-running model
    ``local/python`` (the code interpreter's offline model)."""
    from holynb.session import Session

    if env_api_key() is not None:
        s = Session(**kwargs)
        return s, f"Using {s.base_url} (API key found in the environment)."
    s = local_session(python=python, **kwargs)
    return s, (
        f"No API key found: using holynb's local server at {s.base_url} "
        f"(offline demo model {s.model!r}). Set HOLYSHEEP_API_KEY to use the real API."
    )
