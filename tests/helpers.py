"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import holynb
from holynb import RetryPolicy

# Test settings that are not holynb's own (an optional tokenizer file for one test).
TEST_SETTINGS = frozenset({"HOLYNB_TEKKEN_JSON", "HOLYNB_REQUIRE_POSTGRES"})


def without_holynb_settings(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without holynb's settings (``HOLYNB_*``, ``HOLYSHEEP_*``: keys, endpoints, the
    log, the cache, the display mode...), so that tests see holynb's defaults and never a key."""
    return {
        k: v
        for k, v in env.items()
        if k in TEST_SETTINGS or not k.startswith(("HOLYNB_", "HOLYSHEEP_"))
    }


FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# for a child Python process: import this checkout's holynb, whatever is installed
CHILD_ENV = {
    **without_holynb_settings(os.environ),
    "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
}


def session_for(server: Any, **kwargs: Any) -> holynb.Session:
    """A Session on the local server with fast retries unless told otherwise."""
    kwargs.setdefault("model", "local/echo")
    kwargs.setdefault("retry", FAST_RETRY)
    return holynb.Session(base_url=server.base_url, **kwargs)


def key_env(server: Any) -> dict[str, str]:
    """The environment for another process using ``server``: its token as HOLYNB_API_KEY
    (only sessions of the server's own process know it by themselves)."""
    return {**CHILD_ENV, "HOLYNB_API_KEY": server.api_key.get()}


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (a /proc scan; zombies have none)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def wait_until_gone(marker: str, within_s: float = 3.0) -> list[int]:
    """The processes with ``marker`` still alive after up to ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# -- magics in a shell or a kernel -------------------------------------------------------------


def magic_shell(session: holynb.Session) -> Iterator[Any]:
    """An IPython shell with ``%load_ext holynb`` and ``session`` as the magics' default; the
    body of a ``shell`` fixture (``yield from magic_shell(session_for(local))``)."""
    from IPython.core.interactiveshell import InteractiveShell

    from holynb.notebook import magics

    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext holynb")
    magics.set_default_session(session)
    yield sh
    sh.run_cell("%llm --new")


def run_cell(shell: Any, source: str) -> Any:
    """Run one cell in ``shell`` (kept in its history) and fail the test if it raised."""
    result = shell.run_cell(source, store_history=True)
    assert result.error_in_exec is None, result.error_in_exec
    return result


def kernel_setup_cell(server: Any, imports: str = "") -> str:
    """The first cell of a kernel test: the magics loaded and ``s``, a session on ``server``
    (with its token), their default. ``imports``: more modules for the cell, e.g. "os"."""
    key = server.api_key.get() if getattr(server, "api_key", None) is not None else None
    more = f", {imports}" if imports else ""
    return (
        "%load_ext holynb\n"
        f"import holynb{more}\n"
        f's = holynb.Session(model="local/echo", base_url={server.base_url!r}, api_key={key!r})\n'
        "holynb.notebook.magics.set_default_session(s)\n"
    )


def run_interrupting(cells: list[str], interrupted: int, after_s: float) -> list[Any]:
    """Run ``cells`` in one real kernel (nbclient); cell ``interrupted`` gets the kernel's
    Interrupt (SIGINT, as the Interrupt button sends it) after ``after_s`` seconds. The cells,
    with their outputs."""
    import signal
    import textwrap
    import threading

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True)
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            timer = None
            if i == interrupted:
                pid = client.km.provisioner.process.pid  # type: ignore[union-attr]
                timer = threading.Timer(after_s, os.kill, (pid, signal.SIGINT))
                timer.start()
            client.execute_cell(cell, i)
            if timer is not None:
                timer.join()
    return list(nb.cells)


# -- a child process without network -----------------------------------------------------------

NO_NETWORK = """\
import socket
def _refuse(*args, **kwargs):
    raise AssertionError("network used")
socket.socket.connect = _refuse
socket.getaddrinfo = _refuse
"""


def run_without_network(script: str) -> None:
    """Run ``script`` in a fresh Python (this checkout's holynb) where any use of the network
    fails; the test fails with its stderr unless it exits cleanly."""
    done = subprocess.run(
        [sys.executable, "-c", NO_NETWORK + script], env=CHILD_ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
