"""What a Batch API round trip costs the client: submit, wait, results.

    python bench/batch_bench.py                         # 10,000 prompts, 3 parts, holynb serve
    python bench/batch_bench.py --items 50000 --per-file 20000

``holynb serve`` runs in its own process (its offline models answer the batch lines). Three
phases, each as wall time and as the client process's CPU time:

- **submit**: ``s.batch(...)``: build the JSONL, check every line, split it into parts of
  ``--per-file`` requests, upload each part and create its batch;
- **wait**: ``job.wait()`` until every part is final (mostly the server's own work);
- **results**: ``job.results()``: download the output and error files, join them onto the input
  rows by ``custom_id``, and write the ledger rows.

``HOLYNB_HOME`` (the job manifests) is a temporary folder. Markdown on stdout; loopback only.
"""

from __future__ import annotations

import argparse
import os
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

TOKEN = "bench-batch-token-0123456789"
PRICES = {"local/echo": {"input": 0.15, "output": 0.6}}


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    """``holynb serve`` on a free port, with a known token."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "holynb", "serve", "--port", "0", "--api-key", TOKEN],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "127.0.0.1:" in line:
            port = line.split("127.0.0.1:")[1].split("/")[0].split()[0]
            url = f"http://127.0.0.1:{int(port)}"
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                return proc, url + "/v1"
            except OSError:
                time.sleep(0.1)
    proc.kill()
    raise RuntimeError("holynb serve did not start within 30 s")


def timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--per-file", type=int, default=4_000)
    args = parser.parse_args()
    prompts = [f"Classify review {i}: the battery lasts and the screen is fine." for i in
               range(args.items)]  # fmt: skip
    proc, base_url = start_server()
    try:
        with tempfile.TemporaryDirectory() as home:
            os.environ["HOLYNB_HOME"] = home
            s = holynb.Session(base_url=base_url, api_key=TOKEN, model="local/echo", prices=PRICES)
            s.batch(["warm-up"], max_tokens=8).wait(progress=False).results()  # imports, pool
            job, submit_s, submit_cpu = timed(
                lambda: s.batch(prompts, max_tokens=8, max_requests_per_file=args.per_file)
            )
            _, wait_s, wait_cpu = timed(lambda: job.wait(progress=False))
            out, results_s, results_cpu = timed(job.results)
            assert len(out) == args.items and out["ok"].all(), out["error"].dropna().head()
            parts = len(job.batch_ids)
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    load = os.getloadavg()[0]
    print(
        f"Batch API round trip, {args.items:,} prompts in {parts} parts, holynb serve, "
        f"{os.cpu_count()} cores, load average {load:.1f}\n"
    )
    print("| phase | wall, s | client CPU, s | client CPU per request, µs |")
    print("|---|---|---|---|")
    for name, wall, cpu in (
        ("submit (build, check, split, upload, create)", submit_s, submit_cpu),
        ("wait (poll until every part is final)", wait_s, wait_cpu),
        ("results (download, join by custom_id, ledger)", results_s, results_cpu),
    ):
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {cpu / args.items * 1e6:,.0f} |")


if __name__ == "__main__":
    main()
