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


# The colour a CSS value resolves to here (a theme variable, e.g.), via a probe element.
RESOLVED_COLOUR = """value => {
  const probe = document.createElement('div');
  probe.style.color = value;
  document.body.appendChild(probe);
  const colour = getComputedStyle(probe).color;
  probe.remove();
  return colour;
}"""
RESOLVED_FONT = """value => {
  const probe = document.createElement('div');
  probe.style.fontFamily = value;
  document.body.appendChild(probe);
  const font = getComputedStyle(probe).fontFamily;
  probe.remove();
  return font;
}"""
CODE_CHECKS = (  # token class, its text in CODE_ANSWER, the theme variable of its colour
    ("hl-k", "def", "--jp-mirror-editor-keyword-color"),
    ("hl-d", "area", "--jp-mirror-editor-def-color"),
    ("hl-s", '"none"', "--jp-mirror-editor-string-color"),
    ("hl-m", "3.14159", "--jp-mirror-editor-number-color"),
    ("hl-c", "# a circle", "--jp-mirror-editor-comment-color"),
)


def look_at_code(page: Any, theme: str, problems: list[str]) -> None:
    block = cell(page, 1).locator("pre.holynb-code")
    if block.count() != 1:
        problems.append(f"{theme}: {block.count()} highlighted code blocks, expected 1")
        return
    style = block.evaluate(
        "el => { const s = getComputedStyle(el); return [s.backgroundColor, s.fontFamily]; }"
    )
    background = page.evaluate(RESOLVED_COLOUR, "var(--jp-cell-editor-background)")
    font = page.evaluate(RESOLVED_FONT, "var(--jp-code-font-family)")
    if style != [background, font]:
        problems.append(f"{theme}: code block {style}, a code cell has {[background, font]}")
    for name, text, variable in CODE_CHECKS:
        span = block.locator(f"span.{name}", has_text=text).first
        if not span.count():
            problems.append(f"{theme}: no {name} span for {text!r}")
            continue
        colour = span.evaluate("el => getComputedStyle(el).color")
        if colour != page.evaluate(RESOLVED_COLOUR, f"var({variable})"):
            problems.append(f"{theme}: {text!r} is {colour}, not {variable}")
        ratio = span.evaluate(CONTRAST_JS)
        print(f"{LABEL} {theme} code contrast {name}: {ratio:.1f}")
        if ratio < 3.0:
            problems.append(f"{theme}: {text!r} contrast {ratio:.1f} < 3")
    figures = cell(page, 1).locator(".holynb-status")
    if not figures.inner_text().startswith(f"{CODE_MODEL} · "):
        problems.append(f"{theme}: figures line reads {figures.inner_text()!r}")
    if (ratio := figures.evaluate(CONTRAST_JS)) < 3.0:
        problems.append(f"{theme}: figures line contrast {ratio:.1f} < 3")
    refused = cell(page, 2).locator(".jp-OutputArea-output")
    if "no_such_variable_here" not in refused.inner_text():
        problems.append(f"{theme}: the refused cell shows {refused.inner_text()[:120]!r}")
    elif (ratio := refused.locator("pre").first.evaluate(CONTRAST_JS)) < 4.5:
        problems.append(f"{theme}: the refusal's contrast {ratio:.1f} < 4.5")


def test_code_blocks_figures_and_a_refused_cell_read_well_in_both_themes_after_reopening(
    page: Any, lab: Any, saved_server: LocalServer
) -> None:
    problems: list[str] = []
    path = lab.root / "code.ipynb"
    url = write_notebook(lab, saved_server, path.name, CODE_CELL, REFUSED_CELL)
    open_notebook(page, url)
    run_cell(page, 1)
    wait_text(page, 1, r"completion tokens", timeout_s=30)
    sent = saved_server.stats.requests
    run_cell(page, 2)
    wait_text(page, 2, r"no_such_variable_here", timeout_s=30)
    wait_idle(page)
    shoot(page, "code-live", "light")

    saved = save_now(page, path)
    (answer,) = saved.cells[1].outputs
    text = answer.data["text/plain"]
    assert text.startswith("Here is the function:\n\n```python\ndef area(r):  # a circle\n"), text
    assert text.splitlines()[-1].startswith(f"{CODE_MODEL} · "), text
    assert 'class="hl-k"' in answer.data["text/html"]
    (refused,) = saved.cells[2].outputs
    # IPython shows a UsageError on stderr, and the cell fails (Run All stops there)
    assert refused.output_type == "stream" and refused.name == "stderr", refused
    assert "UsageError" in refused.text and "no_such_variable_here" in refused.text
    assert saved_server.stats.requests == sent, "the refused cell sent nothing"

    shut_down_all_kernels(page)
    page = reopen_page(page, url)
    for theme, name in THEMES:
        reopen(lab, page, name)
        shoot(page, "code-reopened", theme)
        look_at_code(page, theme, problems)
    set_theme(lab, page, "JupyterLab Light")
    assert not problems, "\n".join(problems)


INTERRUPTED_CELL = f"%%llm -m {STORY_MODEL} -o long\nTell me a long story"
STOPPED_CELL = f"%%llm --bg -m {STORY_MODEL} -o long\nTell me a long story again"
CHECK_CELL = (
    "print(long is not first, long.interrupted, long.text == _llm,"
    " long.text.startswith('Sentence 1'), 'Sentence 79' not in long.text)"
)


def interrupt_kernel(page: Any) -> None:
    """Kernel > Interrupt Kernel, from JupyterLab's menu."""
    page.locator(".lm-MenuBar-itemLabel:text-is('Kernel')").click()
    page.locator(".lm-Menu-itemLabel:text-is('Interrupt Kernel')").click()


def test_interrupt_and_stop_leave_this_calls_partial_result_in_the_variable(
    page: Any, lab: Any, saved_server: LocalServer
) -> None:
    problems: list[str] = []
    path = lab.root / "interrupt.ipynb"
    cells = [f"%%llm -m {SHORT_MODEL} -o long\nfirst", "first = long"]
    url = write_notebook(
        lab, saved_server, path.name, *cells, INTERRUPTED_CELL, CHECK_CELL, STOPPED_CELL,
        "first = long", CHECK_CELL,
    )  # fmt: skip
    open_notebook(page, url)
    for index in (1, 2):
        run_cell(page, index)
        wait_idle(page)
    wait_text(page, 1, r"completion tokens", timeout_s=30)
    # -- Kernel > Interrupt while the answer streams -------------------------------------------
    run_cell(page, 3)
    wait_text(page, 3, r"Sentence 3 of", timeout_s=30)
    interrupt_kernel(page)
    wait_text(page, 3, r"Interrupted ·", timeout_s=30)
    wait_idle(page)
    run_cell(page, 4)
    wait_text(page, 4, r"True|False", timeout_s=30)
    if cell(page, 4).locator(".jp-OutputArea").inner_text().split() != ["True"] * 5:
        problems.append(f"after Interrupt: {cell(page, 4).locator('.jp-OutputArea').inner_text()}")
    # -- the --bg Stop button ------------------------------------------------------------------
    run_cell(page, 6)  # first = long (the interrupted answer)
    wait_idle(page)
    run_cell(page, 5)
    stop = cell(page, 5).locator("button:has-text('Stop')")
    stop.wait_for(timeout=15_000)
    wait_text(page, 5, r"Sentence 3 of", timeout_s=30)
    stop.click()
    wait_text(page, 5, r"Interrupted ·", timeout_s=30)
    run_cell(page, 7)
    wait_text(page, 7, r"True|False", timeout_s=30)
    if cell(page, 7).locator(".jp-OutputArea").inner_text().split() != ["True"] * 5:
        problems.append(f"after Stop: {cell(page, 7).locator('.jp-OutputArea').inner_text()}")
    shoot(page, "interrupt-live", "light")

    saved = save_now(page, path)
    for index in (3, 5):
        texts = plain(saved, index)
        if len(texts) != 1 or not texts[0].startswith("Sentence 1 of the long story"):
            problems.append(f"saved cell {index}: text/plain {texts!r}")
        elif "Interrupted · " not in texts[0].splitlines()[-1]:
            problems.append(f"saved cell {index}: last line {texts[0].splitlines()[-1]!r}")
    shut_down_all_kernels(page)
    page = reopen_page(page, url)
    for theme, name in THEMES:
        reopen(lab, page, name)
        shoot(page, "interrupt-reopened", theme)
        for index in (3, 5):
            status = cell(page, index).locator(".holynb-status")
            if not status.inner_text().startswith("Interrupted · "):
                problems.append(f"{theme}: cell {index} status {status.inner_text()!r}")
            elif (ratio := status.evaluate(CONTRAST_JS)) < 3.0:
                problems.append(f"{theme}: cell {index} status contrast {ratio:.1f} < 3")
    set_theme(lab, page, "JupyterLab Light")
    assert not problems, "\n".join(problems)
