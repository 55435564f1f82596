"""Start importing what the first call will need, in a thread, while the session is set up."""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading

__all__ = ["prefetch"]


def prefetch(genai_prices: bool) -> None:
    """Start importing the client (with httpx2: ~130 ms of a cold start), and genai-prices
    (~300 ms) when the default model's price will need it, in a thread, once per process: the
    session's set-up and the first request's flight hide what of them waits on the disk."""
    global _prefetching
    wanted = ["holynb._client", "genai_prices"] if genai_prices else ["holynb._client"]
    modules = [m for m in wanted if m not in sys.modules]
    if _prefetching or not modules:
        return
    _prefetching = True
    threading.Thread(target=_import_quietly, args=(modules,), daemon=True).start()


def _import_quietly(modules: list[str]) -> None:
    for module in modules:
        with contextlib.suppress(Exception):  # the call that needs it imports it and says why
            importlib.import_module(module)


_prefetching = False
