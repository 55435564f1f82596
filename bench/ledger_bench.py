"""What keeping the ledger costs: 100,000 calls recorded in memory, on disk, and as a DataFrame.

    python bench/ledger_bench.py               # 100,000 rows, median of 3
    python bench/ledger_bench.py --rows 20000 --reps 5

Each step is timed on its own (median of the repetitions) and printed as a Markdown table with
rows per second.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from holynb.ledger import CallRecord, Ledger
from holynb.prices import PriceTable
from holynb.results import Usage
from holynb.store import LedgerStore

MODELS = ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-flash", "deepseek-v3.2")


def make_records(n: int) -> list[CallRecord]:
    start = datetime(2026, 11, 22, tzinfo=UTC)
    return [
        CallRecord(
            ts=start + timedelta(milliseconds=i),
            model=MODELS[i % 4],
            kind="chat" if i % 3 else "stream",
            ok=i % 50 != 0,
            error=None if i % 50 else "RateLimitError: slow down (429)",
            prompt_tokens=900 + i % 300,
            completion_tokens=200 + i % 100,
            cached_tokens=i % 7 * 64,
            cost_usd=0.0001 * (i % 97),
            latency_ms=800.0 + i % 400,
            ttft_ms=120.5,
            attempts=1 + (i % 50 == 0),
            request_id=f"req_{i:08x}",
            tag=f"cell-{i % 40}",
        )
        for i in range(n)
    ]


def timed(step: Callable[[], object], setup: Callable[[], object] | None, reps: int) -> float:
    times = []
    for _ in range(reps):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n, reps = args.rows, args.reps

    import pandas  # noqa: F401  (imported once up front: its import time is not the ledger's)

    records = make_records(n)
    ledger = Ledger()
    for r in records:
        ledger.append(r)
    relay = PriceTable.default("https://api.holysheep.ai/v1")
    official = PriceTable.default("https://api.openai.com/v1")
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=128)
    official.cost("gpt-4o-mini", usage)  # load genai-prices outside the timing

    def fill_ledger() -> None:
        fresh = Ledger()
        for r in records:
            fresh.append(r)

    tmp = Path(tempfile.mkdtemp(prefix="holynb-bench-"))
    store_state: dict[str, LedgerStore] = {}

    def new_store() -> None:
        for old in store_state.values():
            old.close()
        path = tmp / f"log-{time.monotonic_ns()}.sqlite"
        store_state["s"] = LedgerStore(path)

    def store_append() -> None:
        store = store_state["s"]
        for r in records:
            store.append(r)

    def store_extend() -> None:
        store_state["s"].extend(records)

    loaded_store = LedgerStore(tmp / "loaded.sqlite")
    loaded_store.extend(records)

    steps: list[tuple[str, Callable[[], object], Callable[[], object] | None]] = [
        ("build CallRecords", lambda: make_records(n), None),
        ("Ledger.append", fill_ledger, None),
        ("Ledger.to_frame()", ledger.to_frame, None),
        ("LedgerStore.append (a commit each)", store_append, new_store),
        ("LedgerStore.extend (one commit)", store_extend, new_store),
        ("LedgerStore.load()", loaded_store.load, None),
        (
            "PriceTable.cost, relay table",
            lambda: [relay.cost("gpt-4.1", usage) for _ in records],
            None,
        ),
        (
            "PriceTable.cost, genai-prices",
            lambda: [official.cost("gpt-4o-mini", usage) for _ in records],
            None,
        ),
    ]
    print(f"{n:,} rows, median of {reps} (Python {sys.version.split()[0]})\n")
    print("| step | seconds | rows/s | µs/row |")
    print("|---|---:|---:|---:|")
    for name, step, setup in steps:
        seconds = timed(step, setup, reps)
        print(f"| {name} | {seconds:.3f} | {n / seconds:,.0f} | {seconds / n * 1e6:.1f} |")
        sys.stdout.flush()
    for store in (*store_state.values(), loaded_store):
        store.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
