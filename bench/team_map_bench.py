"""Map throughput with the ledger and checkpoint in PostgreSQL against the same map on SQLite.

    python bench/team_map_bench.py                       # 2,000 items, 64 in flight, 50 ms
    python bench/team_map_bench.py --budget --reps 5     # with a budget on both sides
    python bench/team_map_bench.py --items 4000 --url postgresql://...

The local server (``holynb serve``, its own process) answers every request after
``--latency-ms``. Both runs record every call in a ledger log and every answer in a checkpoint:
SQLite (``log_path=`` and ``checkpoint=`` files) and PostgreSQL (``database=``; the log, the
claims and the answers in the database). ``--budget`` holds every call's worst case before it
is sent, where other processes see it, on both sides: on SQLite a ``budget_usd`` over the shared
log file (its holds live in the file), in PostgreSQL a named budget. ``--reps`` runs the pair
that many times, SQLite and PostgreSQL alternating, each in a fresh session; the ratio of each
pair, then the median and the range. The goal is a ratio of at least 0.9. Without ``--url`` a
throwaway cluster from tests/pg.py is started (Debian's postgresql package). Markdown on
stdout; only loopback is used.
"""

from __future__ import annotations

import argparse
import statistics
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
    parser.add_argument("--budget", action="store_true", help="hold every call on a budget")
    parser.add_argument("--reps", type=int, default=1, help="pairs of runs (median reported)")
    args = parser.parse_args()
    cluster = None
    if args.url is None:
        from tests.pg import start_cluster

        cluster = start_cluster()
        args.url = cluster.url
    server, base_url = start_server(args.latency_ms)
    pairs: list[tuple[float, float]] = []
    try:
        if args.budget:
            holynb.set_budget("bench", usd=1_000_000, database=args.url)
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as tmp:
                local: dict[str, object] = {"log_path": Path(tmp) / "log.sqlite",
                                            "checkpoint": Path(tmp) / "run.sqlite"}  # fmt: skip
                if args.budget:
                    local["budget_usd"] = 1_000_000.0
                sqlite = run(base_url, args.items, args.concurrency, **local)
            team: dict[str, object] = {"database": args.url, "checkpoint": f"bench-{time.time()}"}
            if args.budget:
                team["budget"] = "bench"
            pairs.append((sqlite, run(base_url, args.items, args.concurrency, **team)))
            print(f"run {len(pairs)}: SQLite {pairs[-1][0]:,.0f}/s, PostgreSQL "
                  f"{pairs[-1][1]:,.0f}/s, ratio {pairs[-1][1] / pairs[-1][0]:.2f}",
                  file=sys.stderr)  # fmt: skip
    finally:
        server.kill()
        if cluster is not None:
            cluster.stop()
    ideal = args.concurrency / (args.latency_ms / 1000)
    sqlite = statistics.median(p[0] for p in pairs)
    postgres = statistics.median(p[1] for p in pairs)
    ratios = sorted(p[1] / p[0] for p in pairs)
    held = ", every call held on a budget" if args.budget else ""
    print(f"{args.items:,} items, {args.concurrency} in flight, {args.latency_ms:g} ms latency "
          f"(ideal {ideal:,.0f} items/s){held}; {len(pairs)} pair(s), medians\n")  # fmt: skip
    print("| store | items/s | share of ideal |\n|---|---|---|")
    own = " + budget_usd" if args.budget else ""
    named = " + named budget" if args.budget else ""
    print(f"| SQLite (log + checkpoint files{own}) | {sqlite:,.0f} | {sqlite / ideal:.0%} |")
    print(f"| PostgreSQL (log + shared checkpoint{named}) | {postgres:,.0f} | "
          f"{postgres / ideal:.0%} |")  # fmt: skip
    spread = f" (range {ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else ""
    print(
        f"\nratio PostgreSQL / SQLite: median {statistics.median(ratios):.2f}{spread} (goal >= 0.9)"
    )


if __name__ == "__main__":
    main()
