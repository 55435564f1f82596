"""Shared map checkpoints: processes naming one job split its items, each sent once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.helpers import key_env, session_for

pytest.importorskip("psycopg")

WORKER = """
import json, sys, holynb
s = holynb.Session(model="local/echo", base_url=sys.argv[1], database=sys.argv[2],
                   concurrency=4)
print("ready", flush=True)
sys.stdin.readline()
df = s.map([f"item {i}" for i in range(int(sys.argv[3]))], max_tokens=20, concurrency=4,
           checkpoint="job", progress=False)
print(json.dumps({"rows": len(df), "ok": int(df["ok"].sum()), "texts": list(df["text"]),
                  "sent": int((~df["cache_hit"]).sum())}), flush=True)
"""


def _start(local: Any, url: str, items: int, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, local.base_url, url, str(items)],
        env={**key_env(local), **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _go(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()


def _result(p: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def _claimed(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM holynb_items WHERE lease IS NOT NULL AND NOT done"
        ).fetchone()
        return int(row[0]) if row else 0


def test_two_processes_split_one_job_and_each_returns_the_whole_frame(
    local: Any, pg_url: str
) -> None:
    local.latency_ms = 100
    a, b = _start(local, pg_url, 40), _start(local, pg_url, 40)
    _go(a, b)
    first, second = _result(a), _result(b)
    assert first["rows"] == second["rows"] == 40
    assert first["ok"] == second["ok"] == 40
    assert first["texts"] == second["texts"]
    assert first["sent"] + second["sent"] == 40  # each item sent once in total
    assert first["sent"] > 0 and second["sent"] > 0  # and the work was split
    assert local.stats.completed == 40


def test_a_dead_process_claims_are_taken_over(local: Any, pg_url: str) -> None:
    local.latency_ms = 60_000  # the first process's calls never come back
    doomed = _start(local, pg_url, 12, HOLYNB_LEASE_S="2")
    try:
        _go(doomed)
        deadline = time.monotonic() + 30
        while _claimed(pg_url) < 4:
            assert time.monotonic() < deadline, "the first process claimed nothing"
            time.sleep(0.05)
        os.kill(doomed.pid, signal.SIGKILL)
    finally:
        doomed.kill()
        doomed.wait()
    local.latency_ms = 0
    started = time.monotonic()
    taker = _start(local, pg_url, 12)
    _go(taker)
    result = _result(taker)
    assert result["rows"] == result["ok"] == result["sent"] == 12
    assert time.monotonic() - started < 30


def test_a_rerun_sends_nothing(local: Any, pg_url: str) -> None:
    s = session_for(local, database=pg_url)
    first = s.map(["a", "b", "c"], checkpoint="again", progress=False)
    sent = local.stats.requests
    second = s.map(["a", "b", "c"], checkpoint="again", progress=False)
    assert local.stats.requests == sent == 3
    assert list(second["text"]) == list(first["text"]) and second["cache_hit"].all()


def test_a_repeated_prompt_is_sent_once_and_fills_both_rows(local: Any, pg_url: str) -> None:
    s = session_for(local, database=pg_url)
    frame = s.map(["same", "other", "same"], checkpoint="dups", progress=False)
    assert len(frame) == 3 and frame["ok"].all()
    assert frame["text"][0] == frame["text"][2]
    assert local.stats.requests == 2


def test_a_failed_item_is_in_the_frame_and_asked_again_next_run(local: Any, pg_url: str) -> None:
    from holynb.server import faults

    s = session_for(local, database=pg_url, max_retries=0)
    local.faults.push(faults.status(400))
    frame = s.map(["x"], checkpoint="fails", progress=False)
    assert not frame["ok"][0]
    again = s.map(["x"], checkpoint="fails", progress=False)
    assert again["ok"][0] and not again["cache_hit"][0]


def test_a_path_object_stays_a_checkpoint_file(local: Any, pg_url: str, tmp_path: Any) -> None:
    s = session_for(local, database=pg_url)
    s.map(["a"], checkpoint=tmp_path / "run.sqlite", progress=False)
    assert (tmp_path / "run.sqlite").exists()
