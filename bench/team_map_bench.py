"""Map throughput with the ledger and checkpoint in PostgreSQL against the same map on SQLite.

    python bench/team_map_bench.py                       # 2,000 items, 64 in flight, 50 ms
    python bench/team_map_bench.py --items 4000 --url postgresql://...

The local server (``holynb serve``, its own process) answers every request after
``--latency-ms``. Both runs record every call in a ledger log and every answer in a checkpoint:
SQLite (``log_path=`` and ``checkpoint=`` files) and PostgreSQL (``database=``; the log, the
claims and the answers in the database; ``--budget`` also holds every call on a named budget).
The goal is a ratio of at least 0.9. Without ``--url`` a throwaway cluster from tests/pg.py is
started (Debian's postgresql package). Markdown on stdout; only loopback is used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import holynb  # noqa: E402
from bench.map_bench import MODEL, PRICES, TOKEN, prompts, start_server  # noqa: E402


def run(base_url: str, items: int, concurrency: int, **where: object) -> float:
    """Items per second of one map, after a warm-up."""
    checkpoint = where.pop("checkpoint")
    s = holynb.Session(base_url=base_url, api_key=TOKEN, model=MODEL, concurrency=concurrency,
                       prices=PRICES, **where)  # type: ignore[arg-type]  # fmt: skip
    s.map(prompts(concurrency * 2, "warm-up"), progress=False, max_tokens=16)
    started = time.perf_counter()
    df = s.map(prompts(items), progress=False, max_tokens=16, checkpoint=checkpoint)
    wall = time.perf_counter() - started
    assert df["ok"].all() and len(df) == items, df[~df["ok"]].head()
    s.close()
    return items / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--url", default=None, help="a PostgreSQL database to use")
    parser.add_argument("--budget", action="store_true", help="hold calls on a named budget")
    args = parser.parse_args()
    cluster = None
    if args.url is None:
        from tests.pg import start_cluster

        cluster = start_cluster()
        args.url = cluster.url
    server, base_url = start_server(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = run(base_url, args.items, args.concurrency, log_path=Path(tmp) / "log.sqlite",
                         checkpoint=Path(tmp) / "run.sqlite")  # fmt: skip
        team: dict[str, object] = {"database": args.url, "checkpoint": f"bench-{time.time()}"}
        if args.budget:
            holynb.set_budget("bench", usd=1_000_000, database=args.url)
            team["budget"] = "bench"
        postgres = run(base_url, args.items, args.concurrency, **team)
    finally:
        server.kill()
        if cluster is not None:
            cluster.stop()
    ideal = args.concurrency / (args.latency_ms / 1000)
    print(f"{args.items:,} items, {args.concurrency} in flight, {args.latency_ms:g} ms latency "
          f"(ideal {ideal:,.0f} items/s){', named budget' if args.budget else ''}\n")  # fmt: skip
    print("| store | items/s | share of ideal |\n|---|---|---|")
    print(f"| SQLite (log + checkpoint files) | {sqlite:,.0f} | {sqlite / ideal:.0%} |")
    print(f"| PostgreSQL (log + shared checkpoint) | {postgres:,.0f} | {postgres / ideal:.0%} |")
    print(f"\nratio PostgreSQL / SQLite: {postgres / sqlite:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
