"""run_sandboxed: real child processes, real limits, nothing mocked."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import pytest

import holynb
from holynb.errors import ConfigurationError
from holynb.interpreter import sandbox
from holynb.interpreter.sandbox import (
    SandboxLimits,
    SandboxResult,
    arun_sandboxed,
    isolation_available,
    run_sandboxed,
)
from tests.helpers import wait_until_gone

needs_isolation = pytest.mark.skipif(
    not isolation_available(), reason="unprivileged user namespaces (unshare -r) unavailable"
)


def test_prints_are_captured() -> None:
    r = run_sandboxed("import sys\nprint('hello')\nprint('careful', file=sys.stderr)")
    assert (r.stdout, r.stderr) == ("hello\n", "careful\n")
    assert r.success and r.returncode == 0 and r.killed_reason is None and r.error is None


def test_exception_name_and_message_are_parsed() -> None:
    r = run_sandboxed("def f(x):\n    return 1 / x\n\nf(0)")
    assert r.error == "ZeroDivisionError: division by zero"
    assert not r.success and r.returncode == 1 and r.killed_reason is None
    assert 'File "<cell>", line 2, in f' in r.stderr
    assert "return 1 / x" in r.stderr  # the cell's source lines appear in the traceback
    assert "<string>" not in r.stderr  # the wrapper's own frame does not


def test_syntax_error_is_reported() -> None:
    r = run_sandboxed("x = (")
    assert r.error is not None and r.error.startswith("SyntaxError")


def test_sys_exit_code_is_kept() -> None:
    r = run_sandboxed("import sys\nsys.exit(3)")
    assert r.returncode == 3 and r.error is None and not r.success


def test_infinite_loop_is_stopped_by_the_timeout() -> None:
    r = run_sandboxed("print('started')\nwhile True:\n    pass", timeout_s=1.5)
    assert r.timed_out and r.killed_reason == "timeout"
    assert r.stdout == "started\n"  # unbuffered: output before the kill is kept
    assert 1400 <= r.duration_ms < 5000


def test_cpu_limit_stops_a_busy_loop() -> None:
    r = run_sandboxed("while True:\n    pass", cpu_s=1, timeout_s=10)
    assert r.killed_reason == "cpu" and not r.timed_out


def test_big_allocation_is_refused() -> None:
    r = run_sandboxed("b = bytearray(4 * 1024**3)", memory_mb=256)
    assert r.killed_reason == "memory" and r.error == "MemoryError"


def test_growing_memory_is_stopped() -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**6))"
    r = run_sandboxed(code, memory_mb=200, timeout_s=10)
    assert r.killed_reason == "memory"


def test_threads_still_work_under_the_memory_limit() -> None:
    code = (
        "import threading\n"
        "ts = [threading.Thread(target=lambda: None) for _ in range(50)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\nprint('ok')"
    )
    assert run_sandboxed(code, memory_mb=256).stdout == "ok\n"


def test_huge_output_is_cut_at_the_cap() -> None:
    r = run_sandboxed("while True:\n    print('y' * 999)", max_output_bytes=100_000)
    assert r.killed_reason == "output" and not r.success
    assert len(r.stdout) + len(r.stderr) == 100_000


@pytest.mark.parametrize("isolate", [None, False], ids=["auto", "process-group-only"])
def test_fork_bomb_leaves_no_process_behind(isolate: bool | None) -> None:
    marker = f"holynb-test-{uuid.uuid4().hex}"
    code = f"""
import os, time
for _ in range(200):  # bounded on purpose
    try:
        if os.fork() == 0:
            os.execv("/bin/sh", ["sh", "-c", "sleep 30; exit 0", "{marker}"])
    except OSError:
        break
time.sleep(30)
"""
    r = run_sandboxed(code, timeout_s=2, isolate=isolate, allow_unisolated=True)
    assert r.killed_reason == "timeout"
    assert wait_until_gone(marker) == []


@needs_isolation
def test_processes_that_escape_the_group_die_too() -> None:
    marker = f"holynb-test-{uuid.uuid4().hex}"
    code = f"""
import os
if os.fork() == 0:
    os.setsid()  # leaves the process group: killpg alone would miss it
    os.execv("/bin/sh", ["sh", "-c", "sleep 30; exit 0", "{marker}"])
print("spawned")
"""
    r = run_sandboxed(code, timeout_s=5)
    assert r.stdout == "spawned\n" and r.isolated
    assert wait_until_gone(marker) == []


@pytest.mark.parametrize("isolate", [None, False], ids=["auto", "process-group-only"])
def test_background_child_does_not_hold_the_run_open(isolate: bool | None) -> None:
    marker = f"holynb-test-{uuid.uuid4().hex}"
    code = f"import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 30; exit 0', '{marker}'])"
    r = run_sandboxed(code, timeout_s=10, isolate=isolate, allow_unisolated=True)
    assert r.success and r.duration_ms < 5000
    assert wait_until_gone(marker) == []


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("HOLYSHEEP_API_KEY", secret)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    r = run_sandboxed("import os\nprint(sorted(os.environ.items()))")
    assert r.success
    assert secret not in r.stdout and "API_KEY" not in r.stdout
    assert "'OMP_NUM_THREADS', '1'" in r.stdout and "'MPLBACKEND', 'Agg'" in r.stdout


def test_stdin_is_empty() -> None:
    r = run_sandboxed("import sys\nprint(repr(sys.stdin.read()))")
    assert r.stdout == "''\n"


@needs_isolation
def test_network_is_blocked() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    print('blocked', e.errno)"
        )
        r = run_sandboxed(code, timeout_s=10)
    assert r.isolated
    assert r.stdout.startswith("blocked")


def test_temp_dir_is_removed_afterwards() -> None:
    r = run_sandboxed("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())")
    cwd = r.stdout.strip()
    assert os.path.basename(cwd).startswith("holynb-sandbox-")
    assert not os.path.exists(cwd)


def test_result_is_frozen() -> None:
    r = run_sandboxed("pass")
    assert isinstance(r, SandboxResult)
    with pytest.raises(AttributeError):
        r.stdout = "x"  # type: ignore[misc]


async def test_async_run_does_not_block_the_event_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        r = await arun_sandboxed("import time\ntime.sleep(0.5)\nprint('done')", timeout_s=10)
    finally:
        task.cancel()
    assert r.stdout == "done\n"
    assert ticks >= 10


# -- what the code cannot forge or read --------------------------------------------------------

modes = pytest.mark.parametrize("isolate", [None, False], ids=["auto", "process-group-only"])


@modes
def test_a_forged_status_file_is_still_a_failure(isolate: bool | None) -> None:
    code = "open('.status', 'w').write('0')\nraise SystemExit(3)"
    r = run_sandboxed(code, isolate=isolate, allow_unisolated=True)
    assert r.returncode == 3 and not r.success


@needs_isolation
def test_a_forged_status_pipe_record_is_still_a_failure() -> None:
    # The wrapper's status pipe is reachable through /proc/1/fd: write a "success" record to it.
    code = """
import os
for fd in os.listdir('/proc/1/fd'):
    if int(fd) > 2 and os.readlink(f'/proc/1/fd/{fd}').startswith('pipe:'):
        with open(f'/proc/1/fd/{fd}', 'w') as f:
            f.write('0\\n')
        print('forged')
raise SystemExit(3)
"""
    r = run_sandboxed(code)
    assert r.isolated and r.stdout == "forged\n"
    assert r.returncode == 3 and not r.success


@needs_isolation
def test_exit_code_above_128_is_not_taken_for_a_signal() -> None:
    r = run_sandboxed("raise SystemExit(137)")
    assert r.isolated and r.returncode == 137 and r.killed_reason is None
    r = run_sandboxed("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    assert r.returncode == -15 and r.killed_reason == "signal"


@pytest.mark.parametrize(
    "name",
    ["HOLYSHEEP_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "DB_SECRET"],
)
def test_unisolated_run_is_refused_while_a_key_is_set(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    secret = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv(name, secret)
    with pytest.raises(ConfigurationError, match=f"{name}.*allow_unisolated=True") as err:
        run_sandboxed("print('ran')", isolate=False)
    assert secret not in str(err.value)
    assert run_sandboxed("print('ran')", isolate=False, allow_unisolated=True).stdout == "ran\n"


def test_fallback_without_namespaces_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where unshare is blocked (Docker's default seccomp profile): simulated, since it works here.
    monkeypatch.setattr(sandbox, "isolation_available", lambda: False)
    monkeypatch.setenv("HOLYNB_API_KEY", "sk-planted")
    with pytest.raises(ConfigurationError, match="namespaces are not available"):
        run_sandboxed("print('ran')")
    limits = SandboxLimits(allow_unisolated=True)
    with pytest.warns(RuntimeWarning, match="/proc/<pid>/environ"):
        r = asyncio.run(limits.run("print('ran')"))
    assert r.stdout == "ran\n" and not r.isolated


def test_variables_that_only_contain_key_are_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYBOARD_LAYOUT", "us")
    monkeypatch.setenv("MONKEY", "1")
    assert run_sandboxed("print('ran')", isolate=False).stdout == "ran\n"


@needs_isolation
def test_namespaced_code_cannot_see_this_process() -> None:
    pid, mnt_ns = os.getpid(), os.readlink("/proc/self/ns/mnt")
    code = f"""
import ctypes, os
if os.readlink('/proc/self/ns/mnt') != {mnt_ns!r}:  # never unmount the real /proc
    print('umount', ctypes.CDLL(None).umount2(b'/proc', 2))
print('visible' if os.path.exists('/proc/{pid}/environ') else 'hidden')
"""
    r = run_sandboxed(code)
    assert r.isolated
    assert r.stdout == "umount -1\nhidden\n"


def test_sandbox_limits_is_one_object_everywhere() -> None:
    from holynb.interpreter import protocol

    assert holynb.SandboxLimits is protocol.SandboxLimits is SandboxLimits


async def test_concurrent_runs_keep_their_own_output() -> None:
    runs = [arun_sandboxed(f"print({i} * {i})", timeout_s=20) for i in range(12)]
    results = await asyncio.gather(*runs)
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(12)]
    assert all(r.success for r in results)


@needs_isolation
def test_old_unshare_without_map_user_still_isolates(monkeypatch: pytest.MonkeyPatch) -> None:
    # util-linux before 2.38 rejects --map-user: the sandbox falls back to `unshare -r`.
    monkeypatch.setattr(sandbox, "_unshare_args", lambda: ("--no-such-option",))
    sandbox._unshare_command.cache_clear()
    try:
        r = run_sandboxed("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)")
        assert r.isolated and r.error is not None and "Network is unreachable" in r.error
    finally:
        monkeypatch.undo()
        sandbox._unshare_command.cache_clear()
    assert run_sandboxed("pass").isolated
