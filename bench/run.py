"""Benchmark holynb against raw httpx, httpx2, httpx2 on aiohttp, and the official openai SDK.

    python bench/run.py              # 5 repetitions, about 3.5 minutes on 2 cores
    python bench/run.py --quick      # 1 repetition, well under a minute
    python bench/run.py --reps 3 --scenarios cpu,stream --libs httpx2-aiohttp,holynb

Method: the fast server (bench/fastserver.py) runs as its own process pinned to one core; every
client measurement is a fresh subprocess pinned to another core (this process pins itself there
and its children inherit it). Libraries are interleaved (A B C A B C ...) and each figure is the
median of the repetitions. The server's CPU is read from its /stats before and after every client
run, so each scenario reports how busy the server was. The Markdown table goes to stdout and to
bench/results/latest.md (raw numbers in latest.json); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
IDEAL_RPS = 64 / 0.050  # 64 in flight, 50 ms each: 1,280 req/s
SERVER_BUSY_LIMIT = 0.5  # above this share of its core the server might be what we measure
NOISE_LIMIT = 0.15  # other processes using more of the client core than this disturb a run
QUIET_LIMIT = 0.05  # --wait-quiet waits until both cores are at most this busy
CLIENT_TIMEOUT_S = 180

Result = dict[str, Any]


# --- what is measured --------------------------------------------------------------------------


@dataclass(frozen=True)
class Library:
    key: str
    label: str


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "checkout" if dist == "holynb" else "missing"


def libraries() -> list[Library]:
    return [
        Library("httpx", f"raw httpx {version('httpx')}"),
        Library("httpx2", f"raw httpx2 {version('httpx2')}"),
        Library("httpx2-aiohttp", f"httpx2 + aiohttp {version('aiohttp')} transport"),
        Library("openai", f"openai SDK {version('openai')}"),
        Library("holynb", f"holynb ({version('holynb')})"),
        Library("aiohttp", f"raw aiohttp {version('aiohttp')}"),
        Library("floor", "no HTTP library (raw asyncio)"),
    ]


@dataclass(frozen=True)
class Scenario:
    """One client scenario: how the server is started and what each client is asked to do."""

    key: str
    client_scenario: str
    server_flags: list[str]
    client_flags: list[str]
    title: str


def scenarios(quick: bool) -> list[Scenario]:
    cpu_n, cpu_warm = (500, 50) if quick else (2000, 100)
    flight_n = 1024 if quick else 2000  # --quick: 16 full waves of 64
    return [
        Scenario(
            "cpu",
            "cpu",
            ["--latency-ms", "0"],
            ["--n", str(cpu_n), "--warmup", str(cpu_warm)],
            f"(a) {cpu_n:,} sequential non-streamed requests",
        ),
        Scenario(
            "throughput",
            "throughput",
            ["--latency-ms", "50"],
            ["--n", str(flight_n), "--warmup", "1", "--concurrency", "64"],
            f"(b) {flight_n:,} requests, 64 in flight, 50 ms server latency",
        ),
        Scenario(
            "stream",
            "stream",
            ["--stream-chunks", "20000", "--events-per-write", "512"],
            ["--warmup", "5"],
            "(c) one 20,000-chunk stream, 512 SSE events per HTTP chunk",
        ),
        Scenario(
            "stream-framed",
            "stream",
            ["--stream-chunks", "20000", "--events-per-write", "1"],
            ["--warmup", "5"],
            "(c') one 20,000-chunk stream, one HTTP chunk per SSE event",
        ),
    ]


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    client: int | None
    server: int | None

    def describe(self) -> str:
        if self.client is None or self.server is None:
            return "not pinned (fewer than 2 usable cores)"
        return f"clients on CPU {self.client}, server on CPU {self.server}"


def choose_cores() -> Cores:
    """Client on the first allowed core, server on the second; pin this process to the client's."""
    if not hasattr(os, "sched_getaffinity"):
        return Cores(None, None)
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return Cores(None, None)
    os.sched_setaffinity(0, {allowed[0]})  # children (the clients) inherit this
    return Cores(allowed[0], allowed[1])


@dataclass(frozen=True)
class Ctx:
    """Where clients run: the cores, a scratch working directory, and how long to wait for the
    cores to be quiet before each run (0: do not wait)."""

    cores: Cores
    cwd: str
    wait_quiet_s: float = 0.0


def child_env(ctx: Ctx) -> dict[str, str]:
    """The environment for children: the checkout importable, no proxies for loopback, and
    bytecode cached in the scratch directory (so the checkout is imported from .pyc like an
    installed package, whatever PYTHONDONTWRITEBYTECODE says, without writing into it)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(ctx.cwd) / "pycache")
    return env


def core_busy_s(cpu: int | None) -> float:
    """CPU seconds that one core (all of them if None) has spent busy since boot."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
            return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def core_shares(cores: Cores, seconds: float) -> dict[int, float]:
    """How busy the client and server cores are over the next `seconds`, as shares of each."""
    pair = [c for c in (cores.client, cores.server) if c is not None]
    before = {c: core_busy_s(c) for c in pair}
    time.sleep(seconds)
    return {c: (core_busy_s(c) - before[c]) / seconds for c in pair}


def background_load(cores: Cores) -> str:
    """How busy the cores are before anything of ours runs (other people's work)."""
    shares = core_shares(cores, 1.0)
    return ", ".join(f"CPU {c} {s:.0%}" for c, s in shares.items()) or "unknown"


def wait_for_quiet(ctx: Ctx) -> None:
    """With --wait-quiet: hold the next run until both cores are idle, up to ctx.wait_quiet_s."""
    deadline = time.perf_counter() + ctx.wait_quiet_s
    while time.perf_counter() < deadline:
        shares = core_shares(ctx.cores, 0.25)
        if max(shares.values(), default=0.0) < QUIET_LIMIT:
            return
    log(f"bench: cores still busy after waiting {ctx.wait_quiet_s:.0f} s; running anyway")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> Result:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/stats")
            return dict(json.loads(conn.getresponse().read()))
        finally:
            conn.close()


@contextmanager
def fast_server(flags: list[str], ctx: Ctx) -> Iterator[Server]:
    cmd = [sys.executable, str(BENCH / "fastserver.py"), "--port", "0", *flags]
    if ctx.cores.server is not None:
        cmd += ["--cpu", str(ctx.cores.server)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env(ctx))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError(f"fastserver did not start: {line!r}")
        yield Server(proc, int(line.rsplit(":", 1)[1]))
    finally:
        proc.terminate()
        final, _ = proc.communicate(timeout=10)
        log(f"fastserver stopped: {final.strip()}")


def run_json(cmd: list[str], ctx: Ctx) -> Result:
    """Run one measurement subprocess and return the JSON object it printed last, plus how busy
    other processes kept the client core meanwhile (`foreign_share`, a share of that core) and how
    busy the server core was (`server_core_busy_s`, for `measure_client`)."""
    if ctx.wait_quiet_s > 0:
        wait_for_quiet(ctx)
    start, busy0, own0 = time.perf_counter(), core_busy_s(ctx.cores.client), children_cpu_s()
    server_busy0 = core_busy_s(ctx.cores.server)
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=ctx.cwd,
            env=child_env(ctx),
            timeout=CLIENT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"available": True, "error": f"timed out after {CLIENT_TIMEOUT_S} s"}
    foreign = core_busy_s(ctx.cores.client) - busy0 - (children_cpu_s() - own0)
    server_busy = core_busy_s(ctx.cores.server) - server_busy0
    wall = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"available": True, "error": f"exit {done.returncode}: {tail}"}
    result = dict(json.loads(lines[-1]))
    result.update(foreign_share=max(foreign, 0.0) / wall, server_core_busy_s=server_busy)
    result["run_wall_s"] = wall
    result["run_cpu_s"] = children_cpu_s() - own0
    return result


# --- running the scenarios ---------------------------------------------------------------------


@dataclass
class Runs:
    """Every result, keyed by (scenario, library); skips libraries that reported unavailable."""

    results: dict[tuple[str, str], list[Result]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def add(self, scenario: str, lib: str, result: Result) -> None:
        if not result.get("available", True):
            self.unavailable.setdefault(lib, str(result.get("reason", "not available")))
            return
        self.results.setdefault((scenario, lib), []).append(result)

    def ok(self, scenario: str, lib: str) -> list[Result]:
        return [r for r in self.results.get((scenario, lib), []) if "error" not in r]

    def errors(self, scenario: str, lib: str) -> list[str]:
        return [r["error"] for r in self.results.get((scenario, lib), []) if "error" in r]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_client(server: Server, scenario: Scenario, lib: str, ctx: Ctx) -> Result:
    """One client subprocess, with the server's counters read around it."""
    before = server.stats()
    cmd = [sys.executable, str(BENCH / "client.py"), "--lib", lib, "--url", server.url]
    result = run_json([*cmd, "--scenario", scenario.client_scenario, *scenario.client_flags], ctx)
    after = server.stats()
    result["server_cpu_s"] = after["cpu_s"] - before["cpu_s"]
    result["connections"] = after["connections"] - before["connections"]
    result["server_requests"] = after["requests"] - before["requests"]
    result["server_affinity"] = after["affinity"]
    others = result.get("server_core_busy_s", 0.0) - result["server_cpu_s"]
    result["server_foreign_share"] = max(others, 0.0) / result.get("run_wall_s", 1.0)
    return result


def summary(result: Result) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    if not result.get("available", True):
        return "not available"
    keys = ("cpu_us_per_request", "req_per_s", "chunks_per_s", "connections")
    keys += ("ms", "ready_ms", "first_answer_ms", "script_ms")
    return ", ".join(f"{k}={result[k]:,.0f}" for k in keys if k in result)


def run_scenario(scenario: Scenario, libs: list[Library], reps: int, runs: Runs, ctx: Ctx) -> None:
    with fast_server(scenario.server_flags, ctx) as server:
        for rep in range(reps):
            for lib in libs:
                if lib.key in runs.unavailable:
                    continue
                result = measure_client(server, scenario, lib.key, ctx)
                runs.add(scenario.key, lib.key, result)
                log(f"[{scenario.key}] rep {rep + 1}/{reps} {lib.key}: {summary(result)}")


def run_imports(libs: list[Library], reps: int, runs: Runs, ctx: Ctx) -> None:
    """Cold imports: a first run with the network audit hook (it also compiles bytecode), then
    `reps` rounds of a timed import and a timed cold start to a first answer, interleaved."""
    script = str(BENCH / "coldimport.py")
    for lib in libs:
        result = run_json([sys.executable, script, "--netcheck", lib.key], ctx)
        runs.add("netcheck", lib.key, result)
        log(f"[import] network check {lib.key}: {result.get('network_calls', summary(result))}")
    with fast_server(["--latency-ms", "0"], ctx) as server:
        for rep in range(reps):
            for lib in libs:
                if lib.key in runs.unavailable:
                    continue
                result = run_json([sys.executable, script, lib.key], ctx)
                if result.get("available", True) and "error" not in result:
                    first = [sys.executable, script, "--first-answer", server.url, lib.key]
                    result.update(run_json(first, ctx))
                    result.update(script_start(lib.key, server.url, ctx))
                runs.add("import", lib.key, result)
                log(f"[import] rep {rep + 1}/{reps} {lib.key}: {summary(result)}")


def script_start(lib: str, url: str, ctx: Ctx) -> Result:
    """One whole `python bench/first_script.py` process, timed from outside (wall and CPU)."""
    done = run_json([sys.executable, str(BENCH / "first_script.py"), lib, url], ctx)
    if not done.get("available", True) or "error" in done:
        return {}
    return {"script_ms": done["run_wall_s"] * 1000, "script_cpu_ms": done["run_cpu_s"] * 1000}


# --- the report --------------------------------------------------------------------------------


def median_of(runs: Runs, scenario: str, lib: str, key: str) -> float | None:
    values = [r[key] for r in runs.ok(scenario, lib) if key in r]
    return statistics.median(values) if values else None


def busy(result: Result) -> float:
    """The server's CPU during a client run, as a share of one core."""
    return float(result["server_cpu_s"]) / max(float(result.get("active_s", 0.0)), 1e-9)


def fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


@dataclass(frozen=True)
class Row:
    """One line of the main table: a label, how to compute a cell, and holynb's goal if any."""

    label: str
    cell: Callable[[Runs, str], str]
    goal: str = ""
    passes: Callable[[Runs], bool | None] | None = None


def metric(scenario: str, key: str, spec: str = ",.0f", suffix: str = "") -> Callable[..., str]:
    return lambda runs, lib: fmt(median_of(runs, scenario, lib, key), spec, suffix)


def cpu_ratio(runs: Runs, lib: str) -> float | None:
    base = median_of(runs, "cpu", "httpx", "cpu_us_per_request")
    value = median_of(runs, "cpu", lib, "cpu_us_per_request")
    return None if base is None or value is None else value / base


def ideal_share(runs: Runs, lib: str) -> float | None:
    rps = median_of(runs, "throughput", lib, "req_per_s")
    return None if rps is None else 100 * rps / IDEAL_RPS


def connections_cell(runs: Runs, lib: str) -> str:
    conns = median_of(runs, "throughput", lib, "connections")
    reqs = median_of(runs, "throughput", lib, "server_requests")
    return "-" if conns is None or reqs is None else f"{conns:,.0f} ({reqs:,.0f} req)"


def network_cell(runs: Runs, lib: str) -> str:
    checks = runs.ok("netcheck", lib)
    if not checks:
        return "-"
    calls = checks[0].get("network_calls", [])
    return "none" if not calls else f"{len(calls)}: {calls[0]}"


def at_most(value: Callable[[Runs], float | None], limit: float) -> Callable[[Runs], bool | None]:
    def check(runs: Runs) -> bool | None:
        v = value(runs)
        return None if v is None else v <= limit

    return check


def at_least(value: Callable[[Runs], float | None], limit: float) -> Callable[[Runs], bool | None]:
    def check(runs: Runs) -> bool | None:
        v = value(runs)
        return None if v is None else v >= limit

    return check


def holynb_reuses(runs: Runs) -> bool | None:
    share = ideal_share(runs, "holynb")
    conns = median_of(runs, "throughput", "holynb", "connections")
    if share is None or conns is None:
        return None
    return share >= 90 and conns <= 64 + 1


def script_ratio(runs: Runs, lib: str, key: str = "script_ms") -> float | None:
    base = median_of(runs, "import", "httpx", key)
    value = median_of(runs, "import", lib, key)
    return None if base is None or value is None else value / base


def holynb_quiet_import(runs: Runs) -> bool | None:
    ms = median_of(runs, "import", "holynb", "ms")
    checks = runs.ok("netcheck", "holynb")
    if ms is None or not checks:
        return None
    return ms <= 150 and not checks[0].get("network_calls")


def rows(scens: dict[str, Scenario]) -> list[Row]:
    def h(key: str) -> Callable[[Runs], float | None]:
        scenario, field_ = key.split(":")
        return lambda runs: median_of(runs, scenario, "holynb", field_)

    return [
        Row("(a) client CPU per non-streamed request, µs", metric("cpu", "cpu_us_per_request")),
        Row(
            "(a) ... relative to raw httpx",
            lambda runs, lib: fmt(cpu_ratio(runs, lib), ".2f", "x"),
            "<= 0.70x",
            at_most(lambda runs: cpu_ratio(runs, "holynb"), 0.70),
        ),
        Row("(b) req/s (ideal 1,280)", metric("throughput", "req_per_s")),
        Row(
            "(b) % of ideal",
            lambda runs, lib: fmt(ideal_share(runs, lib), ".1f", "%"),
            ">= 90%, connections reused",
            holynb_reuses,
        ),
        Row("(b) TCP connections opened (requests served)", connections_cell),
        Row("(b) client CPU per request, µs", metric("throughput", "cpu_us_per_request")),
        Row(
            f"(c) chunks/s, {scens['stream'].title[4:]}",
            metric("stream", "chunks_per_s"),
            ">= 120,000",
            at_least(h("stream:chunks_per_s"), 120_000),
        ),
        Row(
            f"(c') chunks/s, {scens['stream-framed'].title[5:]}",
            metric("stream-framed", "chunks_per_s"),
        ),
        Row(
            "(d) cold import, ms",
            metric("import", "ms"),
            "<= 150 ms, no network",
            holynb_quiet_import,
        ),
        Row("(d) import + first name (`holynb.Session`, ...), ms", metric("import", "ready_ms")),
        Row(
            "(d) cold start to first answer (import, construct, 1 request), ms",
            metric("import", "first_answer_ms"),
        ),
        Row(
            "(d) script cold start: `python`, import, 1 sync answer, exit (whole process), ms",
            metric("import", "script_ms"),
        ),
        Row(
            "(d) ... relative to raw httpx (wall; CPU)",
            lambda runs, lib: (
                f"{fmt(script_ratio(runs, lib), '.2f', 'x')}; "
                f"{fmt(script_ratio(runs, lib, 'script_cpu_ms'), '.2f', 'x')}"
            ),
            "<= 1.5x (wall)",
            at_most(lambda runs: script_ratio(runs, "holynb"), 1.5),
        ),
        Row("(d) network calls during import", network_cell),
    ]


def goal_cell(row: Row, runs: Runs) -> str:
    if not row.goal or row.passes is None:
        return ""
    verdict = row.passes(runs)
    state = "pending" if verdict is None else ("met" if verdict else "NOT met")
    return f"{row.goal}: {state}"


def main_table(runs: Runs, libs: list[Library], scens: dict[str, Scenario]) -> list[str]:
    header = ["measure (median)", *(lib.label for lib in libs), "holynb goal"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows(scens):
        cells = [
            row.cell(runs, lib.key) if lib.key not in runs.unavailable else "pending"
            for lib in libs
        ]
        lines.append("| " + " | ".join([row.label, *cells, goal_cell(row, runs)]) + " |")
    return lines


def server_table(runs: Runs, libs: list[Library], scens: dict[str, Scenario]) -> list[str]:
    """Server CPU as a share of its core while each client ran: median (max) over repetitions."""
    header = ["scenario", *(lib.label for lib in libs), "server CPU per run, ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, scen in scens.items():
        everything = [r for lib in libs for r in runs.ok(key, lib.key)]
        if not everything:
            continue
        cells = [share_cell(runs.ok(key, lib.key), busy, SERVER_BUSY_LIMIT) for lib in libs]
        cpu_ms = statistics.median(1000 * r["server_cpu_s"] for r in everything)
        lines.append("| " + " | ".join([scen.title, *cells, f"{cpu_ms:,.1f}"]) + " |")
    return lines


def foreign(result: Result) -> float:
    """The larger share that other processes took of the client's or the server's core."""
    return max(float(result.get("foreign_share", 0)), float(result.get("server_foreign_share", 0)))


def noise_table(runs: Runs, libs: list[Library], scens: dict[str, Scenario]) -> list[str]:
    """Other processes' CPU on the client or server core during each run: median (max)."""
    header = ["scenario", *(lib.label for lib in libs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    titles = {key: scen.title for key, scen in scens.items()} | {"import": "(d) cold starts"}
    for key, title in titles.items():
        if any(runs.ok(key, lib.key) for lib in libs):
            cells = [share_cell(runs.ok(key, lib.key), foreign, NOISE_LIMIT) for lib in libs]
            lines.append("| " + " | ".join([title, *cells]) + " |")
    return lines


def share_cell(results: list[Result], share: Callable[[Result], float], limit: float) -> str:
    if not results:
        return "-"
    shares = [100 * share(r) for r in results]
    flag = " (!)" if max(shares) > 100 * limit else ""
    return f"{statistics.median(shares):.0f}% ({max(shares):.0f}%){flag}"


def problems(runs: Runs, libs: list[Library], scens: dict[str, Scenario]) -> list[str]:
    notes = [f"- {lib}: not available ({why})" for lib, why in runs.unavailable.items()]
    for key in [*scens, "import"]:
        for lib in libs:
            notes += [f"- {lib.key} [{key}]: {e}" for e in runs.errors(key, lib.key)]
            for r in runs.ok(key, lib.key):
                if r.get("errors"):
                    notes.append(f"- {lib.key} [{key}]: {r['errors']} failed requests in one run")
                if "chunks" in r and r["chunks"] != 20_000:
                    notes.append(f"- {lib.key} [{key}]: received {r['chunks']} text deltas")
    noisy = sum(foreign(r) > NOISE_LIMIT for rs in runs.results.values() for r in rs)
    if noisy:
        notes.append(
            f"- {noisy} runs shared the client or server core with other processes (more than "
            f"{NOISE_LIMIT:.0%} of it, marked (!)): medians absorb a few; rerun on a quiet "
            "machine if many are marked"
        )
    return sorted(set(notes))


def cpus_seen(runs: Runs, key: str) -> str:
    """The CPU sets that the clients (key "affinity") or the server ("server_affinity") ran on."""
    seen = {tuple(r[key]) for rs in runs.results.values() for r in rs if key in r}
    return " and ".join(",".join(map(str, cpus)) for cpus in sorted(seen)) or "?"


def report(runs: Runs, libs: list[Library], scens: dict[str, Scenario], meta: Result) -> str:
    pinning = (
        f"clients pinned to CPU {cpus_seen(runs, 'affinity')}, "
        f"server to CPU {cpus_seen(runs, 'server_affinity')}"
    )
    lines = [
        "# holynb benchmark",
        "",
        f"{meta['date']}, Python {meta['python']}, {meta['cpu']}; {pinning}; "
        f"{meta['reps']} repetitions, libraries interleaved, medians; {meta['elapsed_s']:.0f} s; "
        f"cores busy with other work before the start: {meta['load_before']}.",
        "",
        *main_table(runs, libs, scens),
        "",
        "Server check: bench/fastserver.py's CPU, as a share of its own core, while each client"
        " ran (median, max in brackets); it is not the bottleneck while far below 100%.",
        "",
        *server_table(runs, libs, scens),
        "",
        "Quiet-machine check: CPU that other processes took on the client's or the server's core"
        " during each run, whichever is larger (from /proc/stat, minus the client's and the"
        " server's own; median, max in brackets).",
        "",
        *noise_table(runs, libs, scens),
    ]
    notes = problems(runs, libs, scens)
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


# --- entry point -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="holynb vs raw httpx/httpx2/aiohttp vs openai SDK.")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5, --quick 1)")
    p.add_argument("--quick", action="store_true", help="one repetition, fewer requests")
    p.add_argument("--scenarios", default="cpu,throughput,stream,stream-framed,import")
    p.add_argument("--libs", default=",".join(lib.key for lib in libraries()))
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on a shared machine, wait up to SECONDS before each run for both cores to be idle",
    )
    return p.parse_args(argv)


def metadata_for(args: argparse.Namespace, cores: Cores, reps: int, started: float) -> Result:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": cores.describe(),
        "reps": reps,
        "quick": args.quick,
        "elapsed_s": time.perf_counter() - started,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return f"{platform.processor() or 'unknown CPU'}, {os.cpu_count()} CPUs"


def save(text: str, runs: Runs, meta: Result) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    raw = {
        "meta": meta,
        "unavailable": runs.unavailable,
        "results": {f"{s}/{lib}": rs for (s, lib), rs in runs.results.items()},
    }
    (RESULTS / "latest.json").write_text(json.dumps(raw, indent=1))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    reps = args.reps or (1 if args.quick else 5)
    wanted = set(args.scenarios.split(","))
    libs = [lib for lib in libraries() if lib.key in args.libs.split(",")]
    scens = {s.key: s for s in scenarios(args.quick)}
    runs = Runs()
    with tempfile.TemporaryDirectory(prefix="holynb-bench-") as cwd:
        ctx = Ctx(choose_cores(), cwd, args.wait_quiet)
        load = background_load(ctx.cores)
        log(f"bench: {ctx.cores.describe()}, {reps} repetitions; busy before start: {load}")
        for scen in scens.values():
            if scen.key in wanted:
                run_scenario(scen, libs, reps, runs, ctx)
        if "import" in wanted:
            run_imports(libs, max(reps, 3 if args.quick else 5), runs, ctx)
    meta = metadata_for(args, ctx.cores, reps, started) | {"load_before": load}
    text = report(runs, libs, scens, meta)
    save(text, runs, meta)
    print(text, end="")


if __name__ == "__main__":
    main()
