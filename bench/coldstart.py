"""A script's whole cold start, holynb against raw httpx, over plain HTTP and over HTTPS.

One process per run: `python bench/first_script.py LIB URL MODEL`, interpreter start-up, the
import, one sync answer from a loopback server, exit. httpx and holynb take turns (httpx, holynb,
httpx, holynb ...), and each holynb run is divided by the httpx run just before it, so the ratio
holds when the shared machine's speed drifts; the median of those ratios is printed.

    python bench/coldstart.py             # 10 pairs per cell, about a minute on 2 cores
    python bench/coldstart.py --reps 3    # quicker, noisier

Three kinds of model: one priced with ``prices=``, one no price table knows (``bench``), and one
known only from genai-prices (``gpt-4o-mini``). HTTPS runs against the same server behind a TLS
listener with a self-signed certificate made here with the ``openssl`` command; both clients
trust it through ``SSL_CERT_FILE`` and so load a CA file, as they would for a real provider.
One untimed warm-up per cell comes first (it also lets holynb build what it caches on first use,
such as its index of genai-prices' model names, under a scratch ``HOLYNB_HOME``).
Goal: at most 1.5x raw httpx's wall time in every cell.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPT = BENCH / "first_script.py"
GOAL = 1.5
KINDS = {
    "priced with prices=": ["bench", "priced"],
    "unknown to holynb": ["bench"],
    "known from genai-prices": ["gpt-4o-mini"],
}


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def server(flags: list[str]) -> Iterator[str]:
    """bench/fastserver.py in its own process; yields its address."""
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "fastserver.py"), "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"fastserver did not start: {line!r}")
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """One whole process: (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or '"available": true' not in done.stdout:
        raise RuntimeError(f"{args} failed: {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(url: str, kind: list[str], reps: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall times and the median of pair-by-pair ratios, holynb / httpx."""
    httpx_args = ["httpx", url, kind[0]]
    holynb_args = ["holynb", url, *kind]
    run_once(httpx_args, env)  # warm-up: disk cache, bytecode, holynb's first-use caches
    run_once(holynb_args, env)
    walls: dict[str, list[float]] = {"httpx": [], "holynb": [], "wall": [], "cpu": []}
    for _ in range(reps):
        b_wall, b_cpu = run_once(httpx_args, env)
        a_wall, a_cpu = run_once(holynb_args, env)
        walls["httpx"].append(b_wall)
        walls["holynb"].append(a_wall)
        walls["wall"].append(a_wall / b_wall)
        walls["cpu"].append(a_cpu / b_cpu)
    return {name: statistics.median(values) for name, values in walls.items()} | {
        "wall_min": min(walls["wall"]),
        "wall_max": max(walls["wall"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=int, default=10, help="httpx/holynb pairs per cell")
    args = p.parse_args(argv)
    rows: list[str] = []
    over = 0
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        cert, key = make_certificate(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOLYNB_")}
        env |= {"SSL_CERT_FILE": str(cert), "HOLYNB_HOME": str(folder / "home")}
        env.pop("SSL_CERT_DIR", None)
        # bytecode cached, as an installed package has it, whatever PYTHONDONTWRITEBYTECODE says
        # (without it an editable checkout is compiled from source in every run)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
        with server([]) as plain, server(tls) as secure:
            for scheme, address in (("http", plain), ("https", secure)):
                url = f"{scheme}://{address}/v1"
                for name, kind in KINDS.items():
                    print(f"measuring {scheme}, {name} ...", file=sys.stderr, flush=True)
                    m = measure(url, kind, args.reps, env)
                    over += m["wall"] > GOAL
                    rows.append(
                        f"| {scheme} | {name} | {m['httpx'] * 1000:,.0f} | "
                        f"{m['holynb'] * 1000:,.0f} | **{m['wall']:.2f}x** "
                        f"({m['wall_min']:.2f}-{m['wall_max']:.2f}) | {m['cpu']:.2f}x |"
                    )
    print(f"Script cold start, holynb / raw httpx, median of {args.reps} pairs per row")
    print(f"(goal: at most {GOAL}x wall in every row)\n")
    print(
        "| scheme | model | httpx wall, ms | holynb wall, ms | wall ratio (min-max) | CPU ratio |"
    )
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
