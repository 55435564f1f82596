"""What a notebook keeps, in a real JupyterLab and chromium, light and dark theme, saved and
reopened after Shut Down All Kernels:

- a ``--bg`` answer saved while it streams and after it ended shows the answer (so far) as
  static HTML, with the same text as text/plain in the .ipynb (never "model not found");
- a fenced code block in an answer looks like a code cell (theme variables) and is highlighted;
- the figures line and a refused cell read well in both themes;
- after Kernel > Interrupt and after the Stop button, ``-o VAR`` holds that call's partial result.

Screenshots go to ``SHOTS_DIR`` (default /tmp/shots), named ``<label>-<what>-<theme>.png``
with ``SHOTS_LABEL`` as the label (``after`` unless told, e.g. ``before`` for the old code).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest

from holynb.server import LocalServer
from tests.browser.test_answer_browser import CONTRAST_JS, set_theme
from tests.browser.test_widget_browser import (
    CELLS,
    PlaywrightTimeout,
    cell,
    open_notebook,
    run_cell,
    wait_idle,
    wait_text,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SHOTS = Path(os.environ.get("SHOTS_DIR", "/tmp/shots"))
LABEL = os.environ.get("SHOTS_LABEL", "after")
THEMES = (("light", "JupyterLab Light"), ("dark", "JupyterLab Dark"))

STORY_MODEL = "local/story"  # a long answer, slowly: still streaming when saved
STORY = " ".join(f"Sentence {i} of the long story about otters." for i in range(1, 80))
SHORT_MODEL = "local/short"
SHORT = "Otters sleep holding hands, so they do not drift apart."
CODE_MODEL = "local/code"
CODE_ANSWER = (
    "Here is the function:\n\n```python\ndef area(r):  # a circle\n"
    '    return 3.14159 * r ** 2 if r else "none"\n```\n\nCall `area(2)`.'
)

BG_STREAMING = f"%%llm --bg -m {STORY_MODEL} -o story\nTell me a long story"
BG_ENDED = f"%%llm --bg -m {SHORT_MODEL} -o short\nHow do otters sleep?"
CODE_CELL = f"%%llm -m {CODE_MODEL} -o code\nWrite area(r)"
REFUSED_CELL = "%%llm\nExplain {no_such_variable_here}"


@pytest.fixture(scope="module")
def saved_server() -> Any:
    server = LocalServer().start()
    server.register_model(STORY_MODEL, lambda m, p: STORY, tokens_per_second=15)
    server.register_model(SHORT_MODEL, lambda m, p: SHORT, tokens_per_second=30)
    server.register_model(CODE_MODEL, lambda m, p: CODE_ANSWER)
    yield server
    server.stop()


def shoot(page: Any, what: str, theme: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{LABEL}-{what}-{theme}.png"), full_page=True)


def save_now(page: Any, path: Path) -> nbformat.NotebookNode:
    """Ctrl+S, then the file as written."""
    written = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    for _ in range(100):
        if path.stat().st_mtime_ns != written:
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(300)  # let the write finish
    return nbformat.read(path, as_version=4)


SHUT_DOWN_ALL_KERNELS = """async () => {
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1];
  const headers = xsrf ? {'X-XSRFToken': decodeURIComponent(xsrf)} : {};
  const kernels = await (await fetch('/api/kernels')).json();
  for (const k of kernels) await fetch('/api/kernels/' + k.id, {method: 'DELETE', headers});
  return kernels.length;
}"""


def shut_down_all_kernels(page: Any) -> None:
    assert page.evaluate(SHUT_DOWN_ALL_KERNELS) >= 1


def reopen_page(page: Any, url: str) -> Any:
    """Close ``page`` without asking about unsaved changes (what arrived after the save) and
    open the saved notebook in a new one."""
    context = page.context
    page.close(run_before_unload=False)
    fresh = context.new_page()
    fresh.on("dialog", lambda dialog: dialog.dismiss())
    fresh.goto(url)
    fresh.wait_for_selector(CELLS, timeout=30_000)
    return fresh


def reopen(lab: Any, page: Any, theme: str) -> None:
    """The saved notebook reloaded in ``theme``, its kernel just started."""
    set_theme(lab, page, theme)
    with contextlib.suppress(PlaywrightTimeout):  # JupyterLab sometimes asks which kernel
        page.locator(".jp-Dialog button:has-text('Select')").click(timeout=1_500)
    wait_idle(page)
    page.wait_for_timeout(1_500)  # the widget manager gives up on models it cannot find


def shown(page: Any, index: int) -> str:
    return cell(page, index).locator(".jp-OutputArea").inner_text()


def plain(nb: nbformat.NotebookNode, index: int) -> list[str]:
    return [o.get("data", {}).get("text/plain", "") for o in nb.cells[index].outputs]


def test_a_background_answer_saved_while_streaming_and_after_it_ended_reopens_as_html(
    page: Any, lab: Any, saved_server: LocalServer
) -> None:
    problems: list[str] = []
    path = lab.root / "background.ipynb"
    url = write_notebook(lab, saved_server, path.name, BG_ENDED, BG_STREAMING)
    open_notebook(page, url)
    run_cell(page, 1)
    wait_text(page, 1, r"completion tokens", timeout_s=30)  # ended
    run_cell(page, 2)
    wait_idle(page)
    wait_text(page, 2, r"Sentence 3 of", timeout_s=30)  # still streaming
    shoot(page, "background-live", "light")

    saved = save_now(page, path)
    shut_down_all_kernels(page)  # while cell 2 still streams
    for index, start in ((1, SHORT[:20]), (2, "Sentence 1 of the long story")):
        texts = plain(saved, index)
        kinds = [sorted(o.get("data", {})) for o in saved.cells[index].outputs]
        if not any(t.startswith(start) for t in texts):
            problems.append(f"saved cell {index}: text/plain {texts!r}")
        if not any("text/html" in k for k in kinds):
            problems.append(f"saved cell {index}: no static HTML, only {kinds}")
        if any(t.endswith(": …") for t in texts):
            problems.append(f"saved cell {index}: a placeholder text/plain: {texts!r}")
    if saved.cells[1].outputs and len(saved.cells[1].outputs) != 1:
        problems.append(f"saved cell 1 (ended): {len(saved.cells[1].outputs)} outputs, not one")

    page = reopen_page(page, url)
    for theme, name in THEMES:
        reopen(lab, page, name)
        shoot(page, "background-reopened", theme)
        for index, start in ((1, SHORT[:20]), (2, "Sentence 1 of the long story")):
            text = shown(page, index)
            if "model not found" in text or "Error displaying widget" in text:
                problems.append(f"{theme}: cell {index} after reopening: {text[:120]!r}")
            if start not in text:
                problems.append(f"{theme}: cell {index} lost its answer: {text[:120]!r}")
        ratio = cell(page, 2).locator(".holynb-answer p").first.evaluate(CONTRAST_JS)
        if ratio < 4.5:
            problems.append(f"{theme}: the saved background answer's contrast is {ratio:.1f}")
    set_theme(lab, page, "JupyterLab Light")
    assert not problems, "\n".join(problems)
