"""Run untrusted Python code in a separate, limited process and capture what it did.

What it does: the code runs in a fresh ``python -I -u`` process (isolated mode: no user
site-packages, no PYTHON* variables) in a new temporary working directory that is deleted
afterwards, with a scrubbed environment (PATH and LANG only, so API keys do not leak), no stdin,
resource limits (RLIMIT_DATA for memory, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NPROC, no core files),
a wall-clock timeout, and a cap on the output read back. It runs in its own session; on timeout,
too much output or any exit, the whole process group is killed. Where unprivileged user
namespaces work (``unshare -r -n --pid --fork --kill-child``, probed once) it also gets no network
(not even loopback) and its own PID namespace, so every process it started dies with it, including
ones that escaped the process group with ``setsid``. Otherwise it runs without those, after a
one-time warning.

What it does NOT protect against: this is best-effort isolation for code a model wrote or
imagined, not a security boundary. The code runs as the same user, can read (and write) every
file that user can, and without namespaces can use the network and leave ``setsid`` processes
behind. RLIMIT_NPROC is counted per user across the whole machine and is ignored for root;
RLIMIT_DATA and RLIMIT_CPU apply to each process, not to the tree. For hostile code use a
container or a VM.

>>> r = run_sandboxed("print(6 * 7)")
>>> r.stdout, r.success
('42\\n', True)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

__all__ = ["SandboxResult", "arun_sandboxed", "isolation_available", "run_sandboxed"]


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What a sandboxed run printed and how it ended.

    ``killed_reason`` is None, "timeout" (wall clock), "output" (more than max_output_bytes),
    "cpu" (RLIMIT_CPU), "memory" (MemoryError, or killed the way the OOM killer kills) or
    "signal" (another fatal signal). ``error`` is the exception from the traceback, e.g.
    "ZeroDivisionError: division by zero". ``isolated`` says whether the run had its own network
    and PID namespaces.
    """

    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    killed_reason: str | None
    duration_ms: float
    error: str | None
    isolated: bool = False

    @property
    def success(self) -> bool:
        """True when the code ran to the end: exit status 0 and not killed."""
        return self.returncode == 0 and self.killed_reason is None


def run_sandboxed(
    code: str,
    *,
    timeout_s: float = 30,
    memory_mb: int = 512,
    cpu_s: float | None = None,
    max_output_bytes: int = 1_000_000,
    max_processes: int = 64,
    python: str = sys.executable,
    isolate: bool | None = None,
) -> SandboxResult:
    """Run ``code`` in a limited child process and return its output and fate.

    >>> run_sandboxed("1/0").error
    'ZeroDivisionError: division by zero'
    >>> run_sandboxed("while True: pass", timeout_s=1).killed_reason
    'timeout'

    ``isolate``: None uses namespaces when they work, True requires them (RuntimeError if not),
    False never uses them. ``cpu_s`` None means no CPU limit beyond the wall timeout.
    ``memory_mb`` and ``cpu_s`` bind each process; ``max_processes`` is added to the threads the
    user already runs (RLIMIT_NPROC counts per user) and does nothing for root.
    """
    use_ns = _decide_isolation(isolate)
    workdir = tempfile.mkdtemp(prefix="holynb-sandbox-")
    try:
        cell = os.path.join(workdir, "cell.py")
        with open(cell, "w", encoding="utf-8") as f:
            f.write(code)
        status_file = os.path.join(workdir, ".status")
        argv = [
            python, "-I", "-u", "-B", "-X", "utf8", "-c", _WRAPPER,
            str(memory_mb * 1024 * 1024 if memory_mb else -1),
            str(-1 if cpu_s is None else max(1, int(cpu_s + 0.999))),
            str(_FSIZE_LIMIT),
            str(_nproc_limit(max_processes)),
            cell,
            status_file,
        ]  # fmt: skip
        if use_ns:
            argv = [_unshare_path() or "unshare", *_UNSHARE_ARGS, *argv]
        return _run(argv, workdir, status_file, timeout_s, max_output_bytes, cpu_s, use_ns)
    finally:
        _remove_tree(workdir)


async def arun_sandboxed(
    code: str,
    *,
    timeout_s: float = 30,
    memory_mb: int = 512,
    cpu_s: float | None = None,
    max_output_bytes: int = 1_000_000,
    max_processes: int = 64,
    python: str = sys.executable,
    isolate: bool | None = None,
) -> SandboxResult:
    """:func:`run_sandboxed` in a worker thread, so the event loop keeps running.

    >>> asyncio.run(arun_sandboxed("print('hi')", timeout_s=5)).stdout
    'hi\\n'
    """
    run = functools.partial(
        run_sandboxed,
        code,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        cpu_s=cpu_s,
        max_output_bytes=max_output_bytes,
        max_processes=max_processes,
        python=python,
        isolate=isolate,
    )
    return await asyncio.to_thread(run)


def isolation_available() -> bool:
    """Whether ``unshare -r -n --pid --fork --kill-child`` works here (probed once).

    >>> if not isolation_available():
    ...     print("sandboxed code will have network access here")
    """
    return _unshare_path() is not None


@functools.cache
def _unshare_path() -> str | None:
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return None
    try:
        probe = subprocess.run(
            [exe, *_UNSHARE_ARGS, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return exe if probe.returncode == 0 else None


# ---------------------------------------------------------------------------------------------

_UNSHARE_ARGS = ("-r", "-n", "--pid", "--fork", "--kill-child")
_FSIZE_LIMIT = 256 * 1024 * 1024  # largest file the code may write
_READ_CHUNK = 65536
_EXIT_GRACE_S = 0.2  # after the code exits, how long to wait for the pipes to close
_KEEP_ENV = ("PATH", "LANG")

# Runs as ``python -I -u -c _WRAPPER data cpu fsize nproc cell status``. Limits are set here
# rather than in preexec_fn, which is unsafe when the parent has threads (a Jupyter kernel does).
_WRAPPER = r"""
import os, resource, signal, sys
def _limit(name, soft, slack=0):
    if soft < 0:
        return
    which = getattr(resource, name)
    cap = resource.getrlimit(which)[1]
    hard = soft + slack
    if cap != resource.RLIM_INFINITY:
        soft, hard = min(soft, cap), min(hard, cap)
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):
        pass
_data, _cpu, _fsize, _nproc, _cell, _status = sys.argv[1:7]
_limit("RLIMIT_CORE", 0)
_limit("RLIMIT_DATA", int(_data))
_limit("RLIMIT_CPU", int(_cpu), 1)
_limit("RLIMIT_FSIZE", int(_fsize))
_limit("RLIMIT_NPROC", int(_nproc))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
if os.getpid() == 1:
    # PID 1 of a new namespace ignores every signal it has no handler for (SIGXCPU, SIGTERM,
    # even os.kill(self, SIGKILL)), so run the cell in a child and write down how it ended.
    _pid = os.fork()
    if _pid:
        _status_code = os.waitpid(_pid, 0)[1]
        with open(_status, "w") as _f:
            _f.write(str(_status_code))
        os._exit(0)
with open(_cell, encoding="utf-8") as _f:
    _src = _f.read()
import linecache
linecache.cache["<cell>"] = (len(_src), None, _src.splitlines(True), "<cell>")
def _excepthook(*exc):  # the C default reads source from disk; this one uses linecache
    import traceback
    traceback.print_exception(*exc)
sys.excepthook = _excepthook
sys.argv = ["<cell>"]
exec(compile(_src, "<cell>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@functools.cache
def _warn_no_isolation() -> None:
    warnings.warn(
        "holynb sandbox: user namespaces are not available here (unshare -r failed), so "
        "sandboxed code keeps network access and processes that call setsid() can outlive "
        "the run. Resource limits and the timeout still apply.",
        RuntimeWarning,
        stacklevel=4,
    )


def _decide_isolation(isolate: bool | None) -> bool:
    if isolate is False:
        return False
    if isolation_available():
        return True
    if isolate:
        raise RuntimeError("isolate=True, but `unshare -r -n --pid` does not work here")
    _warn_no_isolation()
    return False


def _nproc_limit(extra: int) -> int:
    """RLIMIT_NPROC counts all the user's threads machine-wide: allow ``extra`` on top."""
    if extra < 0 or os.geteuid() == 0:  # root is exempt from RLIMIT_NPROC anyway
        return extra
    uid, tasks = os.getuid(), 0
    with contextlib.suppress(OSError):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{pid}").st_uid == uid:
                        tasks += len(os.listdir(f"/proc/{pid}/task"))
    return tasks + extra


def _child_env(workdir: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(
        HOME=workdir,
        TMPDIR=workdir,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run(
    argv: list[str],
    workdir: str,
    status_file: str,
    timeout_s: float,
    max_output: int,
    cpu_s: float | None,
    isolated: bool,
) -> SandboxResult:
    start = time.monotonic()
    deadline = start + timeout_s
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=_child_env(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    reason: str | None = None
    chunks: dict[int, list[bytes]] = {}
    try:
        reason = _pump(proc, deadline, max_output, chunks)
    finally:
        _kill_group(proc.pid)  # whatever is left of the tree, even after a clean exit
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    duration_ms = (time.monotonic() - start) * 1000
    stdout = b"".join(chunks.get(1, [])).decode("utf-8", "replace")
    stderr = _WRAPPER_FRAME_RE.sub("", b"".join(chunks.get(2, [])).decode("utf-8", "replace"))
    returncode = _returncode(proc.returncode, status_file)
    error = _parse_error(stderr)
    if reason is None:
        reason = _death_reason(returncode, error, stderr, cpu_s, duration_ms)
    return SandboxResult(
        stdout=stdout,
        stderr=stderr,
        returncode=returncode,
        timed_out=reason == "timeout",
        killed_reason=reason,
        duration_ms=round(duration_ms, 1),
        error=error,
        isolated=isolated,
    )


def _pump(
    proc: subprocess.Popen[bytes], deadline: float, max_output: int, chunks: dict[int, list[bytes]]
) -> str | None:
    """Read stdout and stderr until both close; return why we stopped early, if we did."""
    assert proc.stdout is not None and proc.stderr is not None
    total = 0
    exited_at: float | None = None
    with selectors.DefaultSelector() as sel:
        for n, pipe in ((1, proc.stdout), (2, proc.stderr)):
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe.fileno(), selectors.EVENT_READ, n)
            chunks[n] = []
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if exited_at is None and _has_exited(proc.pid):
                exited_at = now
            if exited_at is not None and now - exited_at > _EXIT_GRACE_S:
                return None  # a leftover child holds the pipes open; it gets killed
            for key, _ in sel.select(min(deadline - now, 0.1)):
                try:
                    data = os.read(key.fd, _READ_CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(key.fd)
                    continue
                room = max_output - total
                chunks[key.data].append(data[:room])
                total += min(len(data), room)
                if len(data) > room:
                    return "output"
    return None


def _has_exited(pid: int) -> bool:
    # WNOWAIT leaves the zombie in place, so the pid (= process group id) cannot be reused
    # before _kill_group runs.
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _returncode(outer: int | None, status_file: str) -> int | None:
    """The cell's exit status: from the status file when it ran under a PID-1 wrapper."""
    try:
        with open(status_file, encoding="ascii") as f:
            return os.waitstatus_to_exitcode(int(f.read()))
    except (OSError, ValueError):
        return outer


# The wrapper's own frame heads every traceback of the cell; it only confuses readers.
_WRAPPER_FRAME_RE = re.compile(
    r'^  File "<string>", line \d+, in <module>\n(?=  File "<cell>")', re.M
)
_EXC_LINE_RE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")


def _parse_error(stderr: str) -> str | None:
    """The final exception of the last traceback in ``stderr``: "Name: message"."""
    at = stderr.rfind("Traceback (most recent call last):")
    if at < 0:
        return None
    for line in stderr[at:].splitlines()[1:]:
        if not line or line[0].isspace():
            continue
        if m := _EXC_LINE_RE.match(line):
            name = m.group(1).rsplit(".", 1)[-1]
            return f"{name}: {m.group(2)}" if m.group(2) else name
    return None


def _death_reason(
    returncode: int | None, error: str | None, stderr: str, cpu_s: float | None, ms: float
) -> str | None:
    """Why a run we did not stop ourselves ended badly, as far as can be told."""
    if not returncode:
        return None
    if (error or "").startswith("MemoryError") or "Cannot allocate memory" in stderr:
        return "memory"
    if returncode > 0:
        return None  # an ordinary failure: exception or sys.exit(n)
    if -returncode == signal.SIGXCPU:
        return "cpu"
    if -returncode == signal.SIGKILL:
        # Not sent by us: the CPU hard limit or the kernel's OOM killer.
        return "cpu" if cpu_s is not None and ms >= cpu_s * 1000 else "memory"
    return "signal"


def _remove_tree(path: str) -> None:
    def retry_writable(func, p, _exc):  # type: ignore[no-untyped-def]
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry_writable)
    else:
        shutil.rmtree(path, onerror=retry_writable)
