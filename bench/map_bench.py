"""What Session.map delivers: throughput against the ideal, memory per 10,000 items, resume start.

    python bench/map_bench.py                      # 10,000 items, 64 in flight, 200 ms latency
    python bench/map_bench.py --items 2000 --latency-ms 50 --concurrency 32
    python bench/map_bench.py --server fast        # against bench/fastserver.py instead

The local server (``holynb serve``) runs in its own process with ``--latency-ms``: every answer
waits that long, so the ideal throughput is ``concurrency / latency`` requests per second (and
no run of N items can beat ``ceil(N / concurrency)`` waves of one latency each). Three figures:

- **throughput**: ``s.map(N prompts)`` with a checkpoint file, wall time from the call to the
  frame, as items/s and as a share of the ideal (goal: at least 90%), and the client's CPU time
  per item (the figure that does not depend on how busy the machine is);
- **memory growth per 10,000 items**: the process's resident memory after the run (the result
  frame still alive) minus before it, after a warm-up run (goal: under 50 MB);
- **resume start**: a checkpoint holding 9,000 of 10,000 answers, then ``s.map`` of the 10,000:
  the time from the call to the first request handed to the call pipeline (goal: under 1 s), and the
  time to finish.

Markdown on stdout; only loopback is used.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import holynb  # noqa: E402
from holynb.keystore import CallerIdentity, KeyStore, request_key  # noqa: E402
from holynb.results import ChatResult, Usage  # noqa: E402

MODEL = "local/echo"  # the fast server answers any model name
TOKEN = "bench-map-token-0123456789"  # holynb serve requires a token; the fast server ignores it
PRICES = {m: {"input": 0.15, "output": 0.6} for m in (MODEL, "bench")}  # costs are counted


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_fast_server(latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "fastserver.py"), "--port", "0", "--latency-ms",
         str(latency_ms), "--stream-chunks", "16"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()  # "listening on 127.0.0.1:PORT"
    return proc, f"http://{line.split()[-1]}/v1"


def start_server(latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "holynb", "serve", "--port", str(port), "--latency-ms",
         str(latency_ms), "--api-key", TOKEN],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return proc, url + "/v1"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("holynb serve did not start within 30 s")


def prompts(n: int, prefix: str = "Classify this review") -> list[str]:
    return [f"{prefix} number {i}: the battery lasts and the screen is fine." for i in range(n)]


def throughput(base_url: str, items: int, concurrency: int, latency_ms: float) -> dict[str, Any]:
    s = holynb.Session(
        base_url=base_url, api_key=TOKEN, model=MODEL, concurrency=concurrency, prices=PRICES
    )
    with tempfile.TemporaryDirectory() as tmp:
        s.map(prompts(concurrency * 4, "warm-up"), progress=False, max_tokens=16)  # pool, imports
        gc.collect()
        before = rss_mb()
        c0, t0 = time.process_time(), time.perf_counter()
        df = s.map(
            prompts(items), progress=False, max_tokens=16, checkpoint=Path(tmp) / "run.sqlite"
        )
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        gc.collect()
        after = rss_mb()
        assert df["ok"].all() and len(df) == items, df[~df["ok"]].head()
    s.close()
    ideal = concurrency / (latency_ms / 1000.0)
    waves_bound = items / (math.ceil(items / concurrency) * latency_ms / 1000.0)
    rate = items / wall
    return {
        "wall_s": wall,
        "rate": rate,
        "ideal": ideal,
        "share": rate / ideal,
        "waves_bound": waves_bound,
        "rss_growth_per_10k": (after - before) * 10_000 / items,
        "rss_after": after,
        "cpu_us_per_item": cpu / items * 1e6,
    }


def resume_start(base_url: str, concurrency: int) -> dict[str, Any]:
    items = prompts(10_000)
    s = holynb.Session(
        base_url=base_url, api_key=TOKEN, model=MODEL, concurrency=concurrency, prices=PRICES
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.sqlite"
        text = "Positive. " * 40  # a 400-character stored answer
        usage = Usage(prompt_tokens=20, completion_tokens=16)
        result = ChatResult(text=text, model=MODEL, finish_reason="stop", usage=usage,
                            latency_ms=100.0, cost_usd=0.0)  # fmt: skip
        identity = CallerIdentity.of(s.settings)
        with KeyStore(path) as store:  # 9,000 answers under the keys map gives them
            for p in items[:9000]:
                store.put(request_key(s.caller.body(p, max_tokens=16), identity), result)
        first: list[float] = []
        complete = s.caller.complete  # every answer of a map goes through the Caller

        async def timed_complete(*args: Any, **kwargs: Any) -> ChatResult:
            if not first:
                first.extend((time.perf_counter(), time.process_time()))
            return await complete(*args, **kwargs)

        s.caller.complete = timed_complete  # type: ignore[method-assign]
        c0, t0 = time.process_time(), time.perf_counter()
        df = s.map(items, progress=False, max_tokens=16, checkpoint=path)
        done = time.perf_counter() - t0
        assert df["ok"].all() and int(df["cache_hit"].sum()) == 9000
    s.close()
    return {"start_s": first[0] - t0, "start_cpu_s": first[1] - c0, "finish_s": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument(
        "--server",
        choices=("local", "fast"),
        default="local",
        help="local: holynb serve (default); fast: bench/fastserver.py, the minimal server",
    )
    args = parser.parse_args()
    start = start_fast_server if args.server == "fast" else start_server
    proc, base_url = start(args.latency_ms)
    try:
        t = throughput(base_url, args.items, args.concurrency, args.latency_ms)
        r = resume_start(base_url, args.concurrency)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    load = os.getloadavg()[0]
    print(
        f"map, {args.items:,} items, {args.concurrency} in flight, {args.server} server, latency "
        f"{args.latency_ms:g} ms, {os.cpu_count()} cores, load average {load:.1f}\n"
    )
    print("| figure | value | goal |")
    print("|---|---|---|")
    print(f"| throughput, items/s | {t['rate']:,.0f} | |")
    print(f"| ideal (concurrency / latency), items/s | {t['ideal']:,.0f} | |")
    print(
        f"| share of ideal | {t['share']:.1%} (bound by whole waves: "
        f"{t['waves_bound'] / t['ideal']:.1%}) | >= 90% |"
    )
    print(f"| wall time, s | {t['wall_s']:.2f} | |")
    print(f"| client CPU per item (whole process), µs | {t['cpu_us_per_item']:,.0f} | |")
    print(f"| memory growth per 10,000 items, MB | {t['rss_growth_per_10k']:.1f} | < 50 |")
    print(f"| resume 10,000 with 9,000 done: first request after, s | {r['start_s']:.3f} | < 1 |")
    print(f"| ... of which CPU time, s | {r['start_cpu_s']:.3f} | |")
    print(f"| resume 10,000 with 9,000 done: finished after, s | {r['finish_s']:.2f} | |")


if __name__ == "__main__":
    main()
