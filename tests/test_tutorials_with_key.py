"""The tutorials with an API key, against an endpoint on this machine that is not holynb's offline
server: ``holynb serve --only-model`` in its own process, serving one model (a weak one that
answers in prose) and nothing else, no ``local/...``, no Batch API, a key required.

Outputs differ from the stored ones (another model, no prices), so this runs the notebooks with
nbclient and checks only that no cell fails except those tagged ``raises-exception``; nbval
checks the outputs without a key (``python -m pytest notebooks/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]-*.ipynb"))
MODEL = "relay-small-1"  # a name holynb has no price for
KEY = "sk-relay-test-0123456789abcdef"


def _start_relay(batches: bool = False) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLYNB_", "HOLYSHEEP_"))}
    command = [sys.executable, "-m", "holynb", "serve", "--port", "0", "--api-key", KEY]
    command += ["--only-model", MODEL] + ([] if batches else ["--no-batches"])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "holynb local server on http://127.0.0.1:PORT/v1 (...)"
    if " on http" not in first:
        proc.kill()
        raise RuntimeError(f"holynb serve did not start: {first!r}")
    return proc, first.split(" on ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def relays() -> Iterator[Callable[[bool], str]]:
    """``relays(batches)``: the base URL of a relay with or without the Batch API, each started
    once, on first use, in its own process."""
    started: dict[bool, tuple[subprocess.Popen[str], str]] = {}

    def get(batches: bool = False) -> str:
        if batches not in started:
            started[batches] = _start_relay(batches)
        return started[batches][1]

    try:
        yield get
    finally:
        for proc, _url in started.values():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def relay(relays) -> str:
    return relays(False)


def uses_batch_api(nb: nbformat.NotebookNode) -> bool:
    """Whether a tutorial needs the Batch API (most endpoints on a user's machine have none)."""
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return any(name in code for name in (".batch(", "BatchJob", "batch_jsonl", ".batches("))


def _post(base_url: str, path: str, body: bytes, key: str | None = KEY) -> int:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(base_url + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def relay_statuses(base_url: str) -> dict[str, int]:
    """The relay's responses to chat requests so far, by HTTP status."""
    root = base_url.removesuffix("/v1")
    request = urllib.request.Request(
        root + "/_holynb/stats", headers={"authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["by_status"]


def chat_body(model: str) -> bytes:
    return f'{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}]}}'.encode()


def test_the_relay_serves_one_model_with_a_key_and_no_batch_api(relay):
    assert _post(relay, "/chat/completions", chat_body(MODEL)) == 200
    assert _post(relay, "/chat/completions", chat_body(MODEL), key=None) == 401
    for other in ("local/echo", "local/slow", "local/python", "gpt-4.1-mini"):
        assert _post(relay, "/chat/completions", chat_body(other)) == 404, other
    assert _post(relay, "/batches", b"{}") == 404


def test_demo_with_a_key_uses_the_endpoint_on_this_machine_not_the_offline_server(relay, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLYNB_", "HOLYSHEEP_"))}
    env.update(HOLYSHEEP_API_KEY=KEY, HOLYNB_BASE_URL=relay, HOLYNB_MODEL=MODEL)
    env["HOLYNB_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "holynb", "demo", "Say hi."],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"Using {relay} (API key found" in done.stdout
    assert "local server" not in done.stdout and MODEL in done.stdout


def failed_cells(nb: nbformat.NotebookNode) -> list[str]:
    """Each code cell with an error output that is not tagged ``raises-exception``."""
    failures = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                failures.append(f"cell {index}: {out.ename}: {out.evalue}\n{cell.source}")
    return failures


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_runs_with_a_key_on_a_relay_with_one_model(relays, path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    relay = relays(uses_batch_api(nb))
    for name in list(os.environ):
        if name.startswith(("HOLYNB_", "HOLYSHEEP_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOLYSHEEP_API_KEY", KEY)  # the kernel inherits this environment
    monkeypatch.setenv("HOLYNB_BASE_URL", relay)
    monkeypatch.setenv("HOLYNB_MODEL", MODEL)
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path))
    assert _post(relay.removesuffix("/v1"), "/_holynb/reset", b"{}") == 200
    started = time.monotonic()
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},  # where nbval runs it too
    )
    client.execute()
    failures = failed_cells(nb)
    took = f"{path.name} with a key ({time.monotonic() - started:.0f} s)"
    assert not failures, took + ":\n\n" + "\n\n".join(failures)
    # A cell may catch an error and go on: the relay says whether anything was refused
    # (e.g. a model it does not serve), which a real endpoint would bill or reject.
    # 499: a request the notebook stopped on purpose (an Interrupt demo), not a refusal
    assert set(relay_statuses(relay)) <= {"200", "499"}, took
    shown = "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        for out in cell.get("outputs", [])
    )
    assert KEY not in shown
    assert "No API key found" not in shown and "interpreter model: local/" not in shown
    # the relay's model has no price: no cost is shown as $0, and no costs are compared
    assert "$0.000000" not in shown and "$0.00 + " not in shown, took
    assert "vs map $" not in shown, took
