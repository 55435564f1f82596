"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import time
from typing import Any

import holynb
from holynb import RetryPolicy

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# for a child Python process: import this checkout's holynb, whatever is installed
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}


def session_for(server: Any, **kwargs: Any) -> holynb.Session:
    """A Session on the local server with fast retries unless told otherwise."""
    kwargs.setdefault("model", "local/echo")
    kwargs.setdefault("retry", FAST_RETRY)
    return holynb.Session(base_url=server.base_url, **kwargs)


def key_env(server: Any) -> dict[str, str]:
    """The environment for another process using ``server``: its token as HOLYNB_API_KEY
    (only sessions of the server's own process know it by themselves)."""
    return {**CHILD_ENV, "HOLYNB_API_KEY": server.api_key.get()}


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (a /proc scan; zombies have none)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def wait_until_gone(marker: str, within_s: float = 3.0) -> list[int]:
    """The processes with ``marker`` still alive after up to ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
