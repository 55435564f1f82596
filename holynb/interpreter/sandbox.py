"""Run untrusted Python code in a separate, limited process and capture what it did.

What it does: the code runs in a fresh ``python -I -u`` process (isolated mode: no user
site-packages, no PYTHON* variables) in a new temporary working directory that is deleted
afterwards, with a scrubbed environment (PATH and LANG only, so API keys do not leak), no stdin,
resource limits (RLIMIT_DATA for memory, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NPROC, no core files),
a wall-clock timeout, and a cap on the output read back. It runs in its own session; on timeout,
too much output or any exit, the whole process group is killed. Whether it succeeded is read from
the kernel's exit status only (nothing the code can write to is consulted).

Where unprivileged user namespaces work (``unshare --map-user=... -n --pid --fork --kill-child
--mount-proc``, probed once) it also gets no network (not even loopback), its own PID namespace,
so every process it started dies with it (including ones that escaped the process group with
``setsid``), and its own ``/proc``, so it cannot list your processes or read their command lines
(``--api-key ...``); it runs without capabilities inside, so it cannot unmount that ``/proc``
either. From another user namespace the kernel refuses it your processes' environment. With
util-linux older than 2.38 (no ``--map-user``) it gets ``unshare -r -n --pid``: the same, except
that it sees the host's ``/proc``.

Without namespaces (``isolate=False``, or where ``unshare`` is blocked, as under Docker's default
seccomp profile) the code can read the environment of every process you run through
``/proc/<pid>/environ`` (API keys included, even ones deleted from ``os.environ`` since), use the
network and leave ``setsid`` processes behind. So that fallback refuses to run while a variable
that looks like a key, token or secret is in this process's environment, unless you pass
``allow_unisolated=True``.

What it does NOT protect against: this is best-effort isolation for code a model wrote or
imagined, not a security boundary. The code runs as the same user and can read (and write) every
file that user can (``~/.config``, ``.env`` files, keys on disk). RLIMIT_NPROC is counted per user
across the whole machine and is ignored for root; RLIMIT_DATA and RLIMIT_CPU apply to each
process, not to the tree. For hostile code use a container or a VM.

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
from collections.abc import Callable
from dataclasses import dataclass

from holynb.errors import ConfigurationError

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "arun_sandboxed",
    "isolation_available",
    "run_sandboxed",
]


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """How a sandboxed run is limited: the parameters of :func:`run_sandboxed` as one value.

    >>> limits = SandboxLimits(timeout_s=5, memory_mb=256)
    >>> holynb.CodeInterpreter(session, verify=True, limits=limits)
    >>> result = await limits.run("print(6 * 7)")

    ``isolate``: None uses namespaces when they work, True requires them (RuntimeError if not),
    False never uses them. ``allow_unisolated``: run without namespaces even while a key, token
    or secret is in the environment, which the code can then read (see the module docstring).
    ``cpu_s`` None means no CPU limit beyond the wall timeout. ``memory_mb`` and ``cpu_s`` bind
    each process; ``max_processes`` is added to the threads the user already runs (RLIMIT_NPROC
    counts per user) and does nothing for root.
    """

    timeout_s: float = 30.0
    memory_mb: int = 512
    cpu_s: float | None = None
    max_output_bytes: int = 1_000_000
    max_processes: int = 64
    isolate: bool | None = None
    allow_unisolated: bool = False

    async def run(self, code: str) -> SandboxResult:
        """Run ``code`` under these limits in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(_run_limited, code, self, sys.executable)


_DEFAULT = SandboxLimits()


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
    timeout_s: float = _DEFAULT.timeout_s,
    memory_mb: int = _DEFAULT.memory_mb,
    cpu_s: float | None = _DEFAULT.cpu_s,
    max_output_bytes: int = _DEFAULT.max_output_bytes,
    max_processes: int = _DEFAULT.max_processes,
    python: str = sys.executable,
    isolate: bool | None = _DEFAULT.isolate,
    allow_unisolated: bool = _DEFAULT.allow_unisolated,
) -> SandboxResult:
    """Run ``code`` in a limited child process and return its output and fate.

    >>> run_sandboxed("1/0").error
    'ZeroDivisionError: division by zero'
    >>> run_sandboxed("while True: pass", timeout_s=1).killed_reason
    'timeout'

    The limits are those of :class:`SandboxLimits`. Raises ConfigurationError when it would
    have to run without namespaces while a key is in the environment and ``allow_unisolated``
    is False.
    """
    limits = SandboxLimits(
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        cpu_s=cpu_s,
        max_output_bytes=max_output_bytes,
        max_processes=max_processes,
        isolate=isolate,
        allow_unisolated=allow_unisolated,
    )
    return _run_limited(code, limits, python)


async def arun_sandboxed(
    code: str,
    *,
    timeout_s: float = _DEFAULT.timeout_s,
    memory_mb: int = _DEFAULT.memory_mb,
    cpu_s: float | None = _DEFAULT.cpu_s,
    max_output_bytes: int = _DEFAULT.max_output_bytes,
    max_processes: int = _DEFAULT.max_processes,
    python: str = sys.executable,
    isolate: bool | None = _DEFAULT.isolate,
    allow_unisolated: bool = _DEFAULT.allow_unisolated,
) -> SandboxResult:
    """:func:`run_sandboxed` in a worker thread, so the event loop keeps running.

    >>> asyncio.run(arun_sandboxed("print('hi')", timeout_s=5)).stdout
    'hi\\n'
    """
    limits = SandboxLimits(
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        cpu_s=cpu_s,
        max_output_bytes=max_output_bytes,
        max_processes=max_processes,
        isolate=isolate,
        allow_unisolated=allow_unisolated,
    )
    return await asyncio.to_thread(_run_limited, code, limits, python)


def _run_limited(code: str, limits: SandboxLimits, python: str) -> SandboxResult:
    use_ns = _decide_isolation(limits.isolate, limits.allow_unisolated)
    workdir = tempfile.mkdtemp(prefix="holynb-sandbox-")
    status_r, status_w = os.pipe() if use_ns else (-1, -1)
    try:
        cell = os.path.join(workdir, "cell.py")
        with open(cell, "w", encoding="utf-8") as f:
            f.write(code)
        memory = limits.memory_mb * 1024 * 1024 if limits.memory_mb else -1
        cpu_s = limits.cpu_s
        argv = [
            python, "-I", "-u", "-B", "-X", "utf8", "-c", _WRAPPER,
            str(memory),
            str(-1 if cpu_s is None else max(1, int(cpu_s + 0.999))),
            str(_FSIZE_LIMIT),
            str(_nproc_limit(limits.max_processes)),
            cell,
            str(status_w),
        ]  # fmt: skip
        if use_ns:
            argv = [*(_unshare_command() or ("unshare",)), *argv]
        return _run(argv, workdir, status_r, status_w, limits, use_ns)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        _remove_tree(workdir)


def isolation_available() -> bool:
    """Whether the sandbox's namespaces (``unshare -n --pid``) work here (probed once).

    >>> if not isolation_available():
    ...     print("sandboxed code will have network access here")
    """
    return _unshare_command() is not None


@functools.cache
def _unshare_command() -> tuple[str, ...] | None:
    """``unshare`` with the first set of options that works here (probed once), or None."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return None
    for args in (_unshare_args(), _BASIC_UNSHARE_ARGS):
        try:
            probe = subprocess.run(
                [exe, *args, "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if probe.returncode == 0:
            return (exe, *args)
    return None


# ---------------------------------------------------------------------------------------------

_NOBODY = 65534
_STATUS_READ_BYTES = 4096
_FSIZE_LIMIT = 256 * 1024 * 1024  # largest file the code may write
_READ_CHUNK = 65536
_EXIT_GRACE_S = 0.2  # after the code exits, how long to wait for the pipes to close
_KEEP_ENV = ("PATH", "LANG")


# util-linux before 2.38 has no --map-user: its own network and PIDs, but the host's /proc.
_BASIC_UNSHARE_ARGS = ("-r", "-n", "--pid", "--fork", "--kill-child")


def _unshare_args() -> tuple[str, ...]:
    # The code runs as a non-root user inside, so without capabilities: it cannot unmount its
    # fresh /proc to uncover the host's one, which lists your processes and their command lines.
    uid, gid = os.getuid() or _NOBODY, os.getgid() or _NOBODY
    return (
        f"--map-user={uid}",
        f"--map-group={gid}",
        "-n",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
    )


# Runs as ``python -I -u -c _WRAPPER data cpu fsize nproc cell status_fd``. Limits are set here
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
_status = int(_status)
_limit("RLIMIT_CORE", 0)
_limit("RLIMIT_DATA", int(_data))
_limit("RLIMIT_CPU", int(_cpu), 1)
_limit("RLIMIT_FSIZE", int(_fsize))
_limit("RLIMIT_NPROC", int(_nproc))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
if os.getpid() == 1 and _status >= 0:
    # PID 1 of a new namespace ignores every signal it has no handler for (SIGXCPU, SIGTERM,
    # even os.kill(self, SIGKILL)), so run the cell in a child. Its exit code passes on the
    # cell's (128 + n for signal n); the status pipe, closed in the cell, tells the two apart.
    _pid = os.fork()
    if _pid:
        _wait_status = os.waitpid(_pid, 0)[1]
        os.write(_status, b"%d\n" % _wait_status)
        _code = os.waitstatus_to_exitcode(_wait_status)
        os._exit(_code if _code >= 0 else 128 - _code)
if _status >= 0:
    os.close(_status)
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
        "holynb sandbox: user namespaces are not available here (unshare -r -n --pid failed: "
        "blocked, as under Docker's default seccomp profile), so sandboxed code can read the "
        "environment of your processes (API keys) through /proc/<pid>/environ, read your "
        "files, use the network, and leave processes that call setsid() behind. Resource "
        "limits and the timeout still apply.",
        RuntimeWarning,
        stacklevel=5,
    )


def _decide_isolation(isolate: bool | None, allow_unisolated: bool) -> bool:
    if isolate is not False and isolation_available():
        return True
    if isolate:
        raise RuntimeError("isolate=True, but the sandbox's namespaces (unshare) do not work here")
    if not allow_unisolated and (names := _secret_names()):
        where = "isolate=False" if isolate is False else "user namespaces are not available here"
        one = len(names) == 1
        raise ConfigurationError(
            f"Refusing to run code in the sandbox without namespaces ({where}) while "
            f"{', '.join(names)} {'is' if one else 'are'} in this process's environment: the "
            f"code could read {'it' if one else 'them'} through /proc/<pid>/environ, even after "
            "deletion from os.environ. Run where `unshare` works, start Python without "
            f"{'it' if one else 'them'}, or pass allow_unisolated=True "
            "(SandboxLimits(allow_unisolated=True)) to accept that."
        )
    if isolate is None:
        _warn_no_isolation()
    return False


_SECRET_NAME_RE = re.compile(
    r"(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(?:_|$)", re.I
)


def _secret_names() -> list[str]:
    # Look in os.environ now and in the block the process started with: /proc/<pid>/environ
    # still shows a variable deleted from os.environ since.
    env = {k: v for k, v in os.environ.items() if v}
    with contextlib.suppress(OSError), open("/proc/self/environ", "rb") as f:
        for entry in f.read().split(b"\0"):
            name, _, value = entry.partition(b"=")
            if value:
                env.setdefault(name.decode("utf-8", "replace"), "set")
    return sorted(k for k in env if _SECRET_NAME_RE.search(k))


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
    status_r: int,
    status_w: int,
    limits: SandboxLimits,
    isolated: bool,
) -> SandboxResult:
    start = time.monotonic()
    deadline = start + limits.timeout_s
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=_child_env(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        pass_fds=(status_w,) if status_w >= 0 else (),
    )
    reason: str | None = None
    chunks: dict[int, list[bytes]] = {}
    try:
        reason = _pump(proc, deadline, limits.max_output_bytes, chunks)
    finally:
        _kill_group(proc.pid)  # whatever is left of the tree, even after a clean exit
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    duration_ms = (time.monotonic() - start) * 1000
    stdout = b"".join(chunks.get(1, [])).decode("utf-8", "replace")
    stderr = _WRAPPER_FRAME_RE.sub("", b"".join(chunks.get(2, [])).decode("utf-8", "replace"))
    returncode = proc.returncode
    if isolated:
        returncode = _cell_returncode(returncode, _read_status(status_r))
    error = _parse_error(stderr)
    if reason is None:
        reason = _death_reason(returncode, error, stderr, limits.cpu_s, duration_ms)
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


def _read_status(fd: int) -> bytes:
    # PID 1 wrote its record before exiting, and it has exited: what is there is all there is.
    # Do not wait for EOF: a process the code left behind may hold a copy of the pipe open.
    os.set_blocking(fd, False)
    try:
        return os.read(fd, _STATUS_READ_BYTES)
    except BlockingIOError:
        return b""


def _cell_returncode(outer: int | None, record: bytes) -> int | None:
    """The cell's exit status, from the exit status of the PID-1 wrapper (``outer``).

    ``outer`` alone decides success: the wrapper exits 0 only when the cell did. The status pipe
    only tells a signal (exit code 128 + n) from ``sys.exit(128 + n)``, and counts only when it
    holds exactly one record that agrees with ``outer``: the code can reach a copy of the pipe
    through /proc, so what it writes there must not matter.
    """
    if not outer:
        return outer
    lines = record.split(b"\n")
    if len(lines) != 2 or lines[1] or not lines[0].isdigit():
        return outer
    with contextlib.suppress(ValueError):
        code = os.waitstatus_to_exitcode(int(lines[0]))
        if (code if code >= 0 else 128 - code) == outer:
            return code
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
    def retry_writable(func: Callable[..., object], p: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry_writable)
    else:
        shutil.rmtree(path, onerror=retry_writable)
