"""The streaming widget in a real JupyterLab and a real chromium: it grows while the answer
streams, ends with the figures line, and an answer full of HTML executes nothing.

Each step is one notebook cell whose source is a constant below: ``%%llm`` cells against the
local server, after a ``SETUP`` cell that loads the extension.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from typing import Any

import nbformat
import pytest

from holynb.server import LocalServer, faults

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
PlaywrightTimeout = sync_api.TimeoutError

PACED_MODEL = "local/paced"
XSS_MODEL = "local/xss"
PACED_TOKENS_PER_SECOND = 30
PACED_ANSWER = (
    "## Otters\n\nOtters are **semi-aquatic** mammals. They hold hands while they sleep, "
    "so they do not drift apart.\n\n- Sea otters use rocks as tools.\n- River otters slide "
    "down muddy banks.\n\n| kind | weight |\n|---|--:|\n| sea otter | 30 kg |\n"
    "| river otter | 10 kg |\n\nThat is all for now, and `otters.count()` says so."
)
XSS_ANSWER = (
    'Look: <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script> '
    "and [a link](javascript:window.__pwned=3) and ![pic](x)."
)

SETUP = """\
%load_ext holynb
import holynb
from holynb.notebook.display import display_mode

s = holynb.Session(model="local/echo", base_url={base_url!r}, api_key={api_key!r})
holynb.notebook.magics.set_default_session(s)
print("display mode:", display_mode())
"""
STREAM_CELL = f"%%llm -m {PACED_MODEL}\nTell me about otters"
XSS_CELL = f"%%llm -m {XSS_MODEL}\nShow me some HTML"
BG_CELL = f"%%llm --bg -m {PACED_MODEL}\nTell me about otters again"
ERROR_CELL = "%%llm\nThis stream breaks"

FIGURES = re.compile(r"prompt \+ ~?\d+ completion tokens")
CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"


@pytest.fixture(scope="module")
def llm_server() -> Any:
    server = LocalServer().start()
    server.register_model(
        PACED_MODEL, lambda messages, params: PACED_ANSWER,
        tokens_per_second=PACED_TOKENS_PER_SECOND,
    )  # fmt: skip
    server.register_model(XSS_MODEL, lambda messages, params: XSS_ANSWER)
    yield server
    server.stop()


def write_notebook(lab: Any, server: LocalServer, name: str, *cells: str) -> str:
    """A notebook of SETUP and ``cells`` in JupyterLab's folder; returns its URL."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    sources = (SETUP.format(base_url=server.base_url, api_key=server.api_key.get()), *cells)
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, lab.root / name)
    return lab.notebook_url(name)


def open_notebook(page: Any, url: str) -> None:
    """Open it, wait for the kernel, run SETUP; the frontend must have chosen the widget."""
    page.goto(url)
    page.wait_for_selector(CELLS, timeout=30_000)
    select_kernel = page.locator(".jp-Dialog button:has-text('Select')")
    with contextlib.suppress(PlaywrightTimeout):  # JupyterLab sometimes asks which kernel
        select_kernel.click(timeout=1_500)
    wait_idle(page)
    run_cell(page, 0)
    page.wait_for_function(
        "sel => document.querySelector(sel + ' .jp-OutputArea-output')"
        "?.innerText.includes('display mode')",
        arg=CELLS,
        timeout=30_000,
    )
    # JupyterLab puts a cellId in the execute request: the widget is chosen on its own
    assert "display mode: widget" in cell(page, 0).locator(".jp-OutputArea").inner_text()


def wait_text(page: Any, index: int, pattern: str, timeout_s: float = 30) -> None:
    """Wait until the text of cell ``index`` matches the JavaScript regular expression."""
    page.wait_for_function(
        "([sel, i, pattern]) => new RegExp(pattern).test("
        "document.querySelectorAll(sel)[i]?.innerText ?? '')",
        arg=[CELLS, index, pattern],
        timeout=timeout_s * 1000,
    )


def wait_figures(page: Any, index: int, timeout_s: float = 30) -> None:
    wait_text(page, index, FIGURES.pattern + "|Failed ·", timeout_s)


def cell(page: Any, index: int) -> Any:
    return page.locator(CELLS).nth(index)


def run_cell(page: Any, index: int) -> None:
    """Select cell ``index`` in command mode and run it (Shift+Enter)."""
    cell(page, index).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+Enter")


def wait_idle(page: Any, timeout_s: float = 30) -> None:
    page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout_s * 1000
    )


def answer_text(page: Any, index: int) -> str:
    return "".join(cell(page, index).locator(".holynb-answer").all_inner_texts())


def status_text(page: Any, index: int) -> str:
    return " ".join(cell(page, index).locator(".holynb-status").all_inner_texts())


def test_widget_streams_renders_and_executes_nothing(
    page: Any, lab: Any, llm_server: LocalServer
) -> None:
    started = time.monotonic()
    open_notebook(page, write_notebook(lab, llm_server, "stream.ipynb", STREAM_CELL, XSS_CELL))

    # -- the answer grows while it streams ----------------------------------------------------
    run_cell(page, 1)
    cell(page, 1).locator(".holynb-answer").first.wait_for(timeout=15_000)
    samples: list[int] = []
    for i in range(8):
        samples.append(len(answer_text(page, 1)))
        if FIGURES.search(status_text(page, 1)):
            break
        if i == 2:
            assert "tok/s" in status_text(page, 1)
            page.screenshot(path="/tmp/holynb_widget_streaming.png")
        page.wait_for_timeout(400)
    growing = [b for a, b in itertools.pairwise(samples) if b > a]
    assert len(growing) >= 3, samples

    wait_figures(page, 1)
    status = status_text(page, 1)
    assert f"{PACED_MODEL} · " in status and "tok/s" in status and "ttft" in status
    assert FIGURES.search(status)
    assert "Otters are semi-aquatic mammals." in answer_text(page, 1)
    answer = cell(page, 1).locator(".holynb-answer")
    assert answer.locator("h2").inner_text() == "Otters"
    assert answer.locator("table td").count() == 4
    assert answer.locator("strong").first.inner_text() == "semi-aquatic"
    # the plain-text fallback is never what the frontend shows
    assert "VBox(" not in cell(page, 1).inner_text()
    assert "streaming answer" not in cell(page, 1).inner_text()
    page.screenshot(path="/tmp/holynb_widget_stream.png")

    # -- an answer full of HTML stays text ----------------------------------------------------
    run_cell(page, 2)
    wait_figures(page, 2)
    page.wait_for_timeout(300)  # time for any handler to fire, if one could
    shown = answer_text(page, 2)
    assert '<img src=x onerror="window.__pwned=1">' in shown
    assert "<script>window.__pwned=2</script>" in shown
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("document.querySelectorAll('[onerror], [onload]').length") == 0
    assert cell(page, 2).locator("script").count() == 0
    assert cell(page, 2).locator("a[href^='javascript']").count() == 0
    assert page.dialogs == []
    page.screenshot(path="/tmp/holynb_widget_xss.png")

    # -- the saved notebook keeps the answers as static, sanitised HTML -----------------------
    path = lab.root / "stream.ipynb"
    written = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    for _ in range(100):
        if path.stat().st_mtime_ns != written:
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(200)  # let the write finish
    saved = nbformat.read(path, as_version=4)
    for index in (1, 2):
        (output,) = saved.cells[index].outputs
        assert set(output.data) == {"text/html", "text/plain"}, output.data.keys()
    assert "<h2>Otters</h2>" in saved.cells[1].outputs[0].data["text/html"]
    xss_html = saved.cells[2].outputs[0].data["text/html"]
    assert "<img" not in xss_html and "<script" not in xss_html
    print(json.dumps({"samples": samples, "seconds": round(time.monotonic() - started, 1)}))


def test_background_call_stops_on_click_and_errors_show_a_hint(
    page: Any, lab: Any, llm_server: LocalServer
) -> None:
    open_notebook(page, write_notebook(lab, llm_server, "bg.ipynb", BG_CELL, ERROR_CELL))

    # -- in the background the kernel is free, and Stop cancels the call ----------------------
    run_cell(page, 1)
    stop = cell(page, 1).locator("button:has-text('Stop')")
    stop.wait_for(timeout=15_000)
    wait_idle(page)  # the cell is done while the answer still streams
    wait_text(page, 1, r"Otters are semi", timeout_s=15)
    stop.click()
    wait_text(page, 1, r"Interrupted ·", timeout_s=15)
    kept = answer_text(page, 1)
    assert "Otters are semi" in kept and "otters.count()" not in kept
    page.wait_for_timeout(500)
    assert answer_text(page, 1) == kept  # nothing arrives after the stop
    assert not stop.is_visible()
    assert FIGURES.search(status_text(page, 1))

    # -- a stream that breaks: the partial answer stays, the box gives the hint ----------------
    llm_server.faults.push(faults.error_event(after_chunks=8))
    run_cell(page, 2)
    wait_figures(page, 2)
    box = cell(page, 2).locator(".holynb-error")
    assert "StreamError" in box.inner_text() and "Hint:" in box.inner_text()
    assert answer_text(page, 2).startswith("You said")
    assert "Traceback" not in cell(page, 2).inner_text()
    page.screenshot(path="/tmp/holynb_widget_bg_error.png")
