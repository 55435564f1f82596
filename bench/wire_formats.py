"""Stream rate of Anthropic's Messages format vs OpenAI's chat completions, on the local server.

The local server runs in its own process (so client and server do not share a GIL) with a model
that answers ``--tokens`` tokens; holynb streams the same answer in both formats, alternating,
and the table shows text deltas per second (median of ``--reps`` runs) for holynb and, for
reference, the official SDKs (openai, anthropic) when installed. Both formats should be within
the same order of magnitude: an Anthropic event is a little longer (``event:`` line, a nested
``delta``) but carries one text delta, as an OpenAI chunk does.

    python bench/wire_formats.py                 # 20,000 tokens, 5 repetitions
    python bench/wire_formats.py --tokens 5000 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

MODEL = "local/bench-long"  # a local/... model is free: no price warning
SERVER = """
import sys
from holynb.server import LocalServer
tokens = int(sys.argv[1])
server = LocalServer().start()
server.register_model("local/bench-long", lambda messages, params: " x" * tokens)
print(server.base_url, server.api_key.get(), flush=True)
sys.stdin.read()
server.stop()
"""


def holynb_stream(api: str, url: str, key: str) -> Callable[[], AsyncIterator[str]]:
    import holynb

    session = holynb.Session(
        api=api, model=MODEL, base_url=url, api_key=key, max_retries=0, log_path=""
    )

    def run() -> AsyncIterator[str]:
        return session.astream("hi", max_tokens=10**6)

    return run


def sdk_stream(api: str, url: str, key: str) -> Callable[[], AsyncIterator[str]] | None:
    messages = [{"role": "user", "content": "hi"}]
    if api == "openai":
        try:
            import openai
        except ImportError:
            return None
        client = openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0)

        async def run_openai() -> AsyncIterator[str]:
            stream = await client.chat.completions.create(
                model=MODEL, messages=messages, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

        return run_openai
    try:
        import anthropic
    except ImportError:
        return None
    client2 = anthropic.AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key=key, max_retries=0)

    async def run_anthropic() -> AsyncIterator[str]:
        async with client2.messages.stream(
            model=MODEL, max_tokens=10**6, messages=messages
        ) as stream:
            async for text in stream.text_stream:
                yield text

    return run_anthropic


async def rate(run: Callable[[], AsyncIterator[str]]) -> tuple[float, int]:
    """Text deltas per second of one stream, and how many there were."""
    start = time.perf_counter()
    count = 0
    async for _ in run():
        count += 1
    return count / (time.perf_counter() - start), count


async def measure(url: str, key: str, reps: int) -> dict[str, list[float]]:
    runs: dict[str, Callable[[], AsyncIterator[str]] | None] = {}
    for api in ("openai", "anthropic"):
        runs[f"holynb, {api} format"] = holynb_stream(api, url, key)
        runs[f"{api} SDK"] = sdk_stream(api, url, key)
    results: dict[str, list[float]] = {name: [] for name, run in runs.items() if run}
    for name in results:  # warm-up: imports, connections, first-use caches
        await rate(runs[name])  # type: ignore[arg-type]
    expected = None
    for _ in range(reps):
        for name in results:  # interleaved, so a noisy moment hits every column
            per_second, count = await rate(runs[name])  # type: ignore[arg-type]
            if expected is not None and count != expected:
                raise SystemExit(f"{name} got {count} deltas, the others {expected}")
            expected = count
            results[name].append(per_second)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.tokens)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url, key = server.stdout.readline().split()  # type: ignore[union-attr]
        results = asyncio.run(measure(url, key, args.reps))
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(timeout=10)
    base = statistics.median(results["holynb, openai format"])
    print(f"One stream of {args.tokens:,} text deltas, median of {args.reps} runs\n")
    print("| client | deltas/s | vs holynb openai format |")
    print("|---|---:|---:|")
    for name, rates in results.items():
        median = statistics.median(rates)
        print(f"| {name} | {median:,.0f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
