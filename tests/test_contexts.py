"""The sync facade works in a script, inside asyncio, and in a real Jupyter kernel."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import nbformat
import pytest
from nbclient import NotebookClient

from holynb.server import faults
from tests.helpers import key_env, session_for


def test_many_sync_calls_in_a_row(local):
    s = session_for(local)
    for i in range(50):
        assert s.chat(f"n{i}").text.startswith(f"You said: n{i}")
    assert len(s.records) == 50


def test_sync_call_from_inside_a_running_event_loop(local):
    s = session_for(local)

    async def main():
        # like a notebook cell: a loop is running, and the user calls the sync API
        return s.chat("inside"), [t for t in s.stream("inside")]

    r, parts = asyncio.run(main())
    assert r.text == "".join(parts)


def test_same_session_across_several_asyncio_runs(local):
    s = session_for(local)

    async def main(i):
        r = await s.achat(f"run {i}")
        parts = [t async for t in s.astream(f"run {i}")]
        await s.aclose()
        return r.text == "".join(parts)

    assert all(asyncio.run(main(i)) for i in range(5))
    assert s.chat("and sync after").text


def test_sync_and_async_share_one_session_concurrently(local):
    s = session_for(local)

    async def main():
        sync_result = await asyncio.to_thread(s.chat, "from a thread")
        async_result = await s.achat("from the loop")
        await s.aclose()
        return sync_result, async_result

    a, b = asyncio.run(main())
    assert a.text and b.text and len(s.records) == 2


def test_concurrency_is_bounded(local):
    s = session_for(local, concurrency=4)
    local.reset()

    async def main():
        t0 = time.monotonic()
        await asyncio.gather(*(s.achat(f"q{i}") for i in range(12)))
        await s.aclose()
        return time.monotonic() - t0

    local.latency_ms = 200
    try:
        elapsed = asyncio.run(main())
    finally:
        local.latency_ms = 0
    # 12 calls, 4 at a time, 200 ms each: three waves
    assert elapsed >= 0.55
    assert local.stats.connections <= 4


def test_rate_limit_paces_requests(local):
    s = session_for(local, rpm=1200)  # 20 per second, bursts of 20

    async def main():
        t0 = time.monotonic()
        await asyncio.gather(*(s.achat(f"q{i}") for i in range(40)))
        await s.aclose()
        return time.monotonic() - t0

    assert asyncio.run(main()) >= 0.9


SCRIPT = textwrap.dedent(
    """
    import sys, holynb
    s = holynb.Session(model="local/echo", base_url=sys.argv[1])
    print("READY", flush=True)
    got = []
    try:
        for t in s.stream("hello " * 5):
            got.append(t)
    except KeyboardInterrupt:
        r = s.last_result
        row = s.records[-1]
        print("INTERRUPTED", len(got), len(r.text) == len("".join(got)), row.interrupted,
              flush=True)
    # the session still works after the interrupt
    print("AFTER", s.chat("again").text[:9], flush=True)
    """
)


def test_keyboard_interrupt_during_sync_stream_stops_cleanly(local):
    local.tokens_per_second = 20
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, local.base_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=key_env(local),
        )
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        local.tokens_per_second = None
    assert proc.returncode == 0, err
    line = next(x for x in out.splitlines() if x.startswith("INTERRUPTED"))
    _, n, same, interrupted = line.split()
    assert int(n) > 3 and same == "True" and interrupted == "True"
    assert "AFTER You said:" in out
    # the stream never completed server-side, and its connection was closed, not reused
    assert local.stats.completed == 1 and local.stats.connections == 2


def _notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    return nb


def test_sync_async_and_stream_in_a_real_kernel(local):
    nb = _notebook(
        [
            f"""
        import holynb
        s = holynb.Session(model="local/echo", base_url={local.base_url!r},
                           api_key={local.api_key.get()!r})
        r = s.chat("kernel")
        print(r.text[:17])
        """,
            """
        r2 = await s.achat("kernel")   # top-level await on the kernel's own loop
        print(r2.text == r.text)
        """,
            """
        print("".join(s.stream("kernel")) == r.text)
        """,
            """
        for i in range(20):
            s.chat(f"again {i}")
        print(len(s.records))
        """,
        ]
    )
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    outs = ["".join(o.get("text", "") for o in c.outputs).strip() for c in nb.cells]
    assert outs == ["You said: kernel.", "True", "True", "23"]


def test_kernel_interrupt_during_a_call_keeps_the_kernel_usable(local):
    local.faults.push(faults.delay(seconds=5))
    nb = _notebook(
        [
            f"""
        import holynb, os, signal, threading
        s = holynb.Session(model="local/echo", base_url={local.base_url!r},
                           api_key={local.api_key.get()!r})
        threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            s.chat("slow")
        except KeyboardInterrupt:
            print("interrupted", s.records[-1].interrupted)
        """,
            """
        print(s.chat("fine").text[:9])
        """,
        ]
    )
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    outs = ["".join(o.get("text", "") for o in c.outputs).strip() for c in nb.cells]
    assert outs == ["interrupted True", "You said:"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_no_stray_threads_block_interpreter_exit(local):
    code = (
        "import holynb,sys; s=holynb.Session(model='local/echo', base_url=sys.argv[1]);"
        "print(s.chat('bye').text[:3])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, local.base_url],
        capture_output=True,
        text=True,
        timeout=30,
        env=key_env(local),
    )
    assert out.stdout.strip() == "You" and "Unclosed" not in out.stderr, out.stderr


def test_threads_calling_sync_api_at_once(local):
    s = session_for(local)
    results = []

    def work(i):
        results.append(s.chat(f"t{i}").text)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(s.records) == 8
