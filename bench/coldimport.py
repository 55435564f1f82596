"""Time one cold import in a fresh interpreter; prints a JSON line on stdout.

    python bench/coldimport.py holynb               # {"ms": 1.2, "ready_ms": 160.3, ...}
    python bench/coldimport.py --netcheck holynb    # also lists network calls made by the import
    python bench/coldimport.py --first-answer http://127.0.0.1:PORT/v1 holynb

`ms` is the `import` statement alone; `ready_ms` adds looking up the class a user needs first
(`holynb.Session`, `openai.AsyncOpenAI`, ...), which matters for packages that load lazily.
`--first-answer URL` instead times a whole cold start: import, construct the client, get one
non-streamed answer from the server at URL, close (`first_answer_ms`); that includes whatever a
lazy package loads on first use.

Only `os`, `sys` and `time` (all loaded by the interpreter at start-up) are imported before the
timed import, so nothing the library needs is pre-loaded for it. `--netcheck` installs an audit hook
that records socket connects and name lookups; it slows the import, so it is a separate run.
"""

import os
import sys
import time

NETWORK_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.sendto",
        "socket.sendmsg",
    }
)

# Each library as its users import it, and the name they reach for first (on the last module).
LIBRARIES = {
    "httpx": (["httpx"], "AsyncClient"),
    "httpx2": (["httpx2"], "AsyncClient"),
    "httpx2-aiohttp": (["httpx2", "httpx_aiohttp.httpx2"], "AiohttpTransport"),
    "openai": (["openai"], "AsyncOpenAI"),
    "aiohttp": (["aiohttp"], "ClientSession"),
    "floor": (["asyncio"], "open_connection"),
    "holynb": (["holynb"], "Session"),
}


def timed_import(modules: list[str], attr: str) -> tuple[float, float, bool]:
    """Milliseconds for the imports, then for the imports plus the first attribute lookup."""
    start = time.perf_counter()
    for name in modules:
        __import__(name)
    imported = time.perf_counter()
    found = hasattr(sys.modules[modules[-1]], attr)
    ready = time.perf_counter()
    return (imported - start) * 1000, (ready - start) * 1000, found


def watch_network() -> list[str]:
    seen: list[str] = []

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event in NETWORK_EVENTS:
            seen.append(f"{event} {args[1:2]!r}"[:120])

    sys.addaudithook(hook)
    return seen


def first_answer(lib: str, url: str) -> None:
    start = time.perf_counter()
    import client  # bench/client.py, next to this file: stdlib only at the top

    try:
        client.first_answer(lib, url)
    except client.Unavailable as exc:
        return emit({"available": False, "reason": str(exc)})
    emit({"available": True, "first_answer_ms": (time.perf_counter() - start) * 1000})


def main(argv: list[str]) -> None:
    netcheck = "--netcheck" in argv
    url = argv[argv.index("--first-answer") + 1] if "--first-answer" in argv else None
    names = [a for a in argv if not a.startswith("--") and a != url]
    if len(names) != 1 or names[0] not in LIBRARIES:
        usage = "[--netcheck | --first-answer URL]"
        raise SystemExit(f"usage: coldimport.py {usage} {{{','.join(LIBRARIES)}}}")
    if url is not None:
        return first_answer(names[0], url)
    modules, attr = LIBRARIES[names[0]]
    seen = watch_network() if netcheck else []
    try:
        ms, ready_ms, found = timed_import(modules, attr)
    except Exception as exc:
        return emit({"available": False, "reason": f"import failed: {exc!r}"})
    if not found:
        return emit({"available": False, "reason": f"{modules[-1]} has no {attr} yet"})
    emit(
        {
            "available": True,
            "ms": ms,
            "ready_ms": ready_ms,
            "network_calls": seen,
            "modules": len(sys.modules),
        }
    )


def emit(result: dict[str, object]) -> None:
    import json

    result["affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
