"""A finished answer in a real JupyterLab and chromium, light and dark theme: money stays text
while maths is typeset, holynb's own lines are never typeset, the error box and status lines
read well (computed contrast), and a --bg answer survives save and reopen as one stored output.

Checks are collected and asserted at the end, so the screenshots in /tmp/shots are taken even
when something is wrong (``HOLYNB_SHOTS=before`` names them for a run of the old code).
"""

from __future__ import annotations

import json
import os
from typing import Any

import nbformat
import pytest

from holynb.server import LocalServer, faults
from tests.browser.test_widget_browser import (
    cell,
    open_notebook,
    run_cell,
    wait_idle,
    wait_text,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

MONEY_MODEL = "local/money"
MONEY_ANSWER = (
    "A plan at $5 per user is better than one at $40 for a team of nine.\n\n"
    "The area is $\\pi r^2$, and \\(e^{i\\pi} + 1 = 0\\)."
)
MONEY_CELL = f"%%llm -m {MONEY_MODEL}\nWhich plan?"
BG_CELL = f"%%llm --bg -m {MONEY_MODEL}\nWhich plan, in the background?"
ERROR_CELL = "%%llm\nThis call fails"
SHOTS = "/tmp/shots"
LABEL = os.environ.get("HOLYNB_SHOTS", "after")

# Relative luminance and contrast ratio (WCAG 2), on colours composited over the page.
CONTRAST_JS = """
el => {
  const parse = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const over = (top, below) => {
    const a = top.length > 3 ? top[3] : 1;
    return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a));
  };
  const background = node => {
    const layers = [];
    for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.length && (c.length < 4 || c[3] > 0)) layers.push(c);
      if (c.length && (c.length < 4 || c[3] >= 1)) break;
    }
    let colour = [255, 255, 255];
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const lum = rgb => {
    const [r, g, b] = rgb.map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const bg = background(el);
  const fg = over(parse(getComputedStyle(el).color), bg);
  const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}
"""


@pytest.fixture(scope="module")
def money_server() -> Any:
    server = LocalServer().start()
    server.register_model(MONEY_MODEL, lambda messages, params: MONEY_ANSWER, tokens_per_second=40)
    yield server
    server.stop()


def save(page: Any, path: Any) -> Any:
    written = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    for _ in range(100):
        if path.stat().st_mtime_ns != written:
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(300)  # let the write finish
    return nbformat.read(path, as_version=4)


def set_theme(lab: Any, page: Any, theme: str) -> None:
    settings = lab.root.parent / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    page.reload()
    light = "true" if theme == "JupyterLab Light" else "false"
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'", timeout=30_000)
    page.wait_for_selector(".holynb-status", timeout=30_000)
    page.wait_for_timeout(1500)  # MathJax typesets after the outputs render


def look(page: Any, theme: str, problems: list[str]) -> None:
    """Screenshots and the checks that hold in every theme, on the reopened notebook."""
    page.screenshot(path=f"{SHOTS}/{LABEL}-{theme}.png", full_page=True)
    for index in (1, 2):
        shown = cell(page, index).locator(".jp-OutputArea").inner_text()
        if "$5 per user is better than one at $40" not in shown:
            problems.append(f"{theme}: cell {index}: currency not kept as text: {shown[:200]!r}")
        if "model not found" in shown or "streaming answer" in shown:
            problems.append(f"{theme}: cell {index}: answer lost after reopening: {shown[:200]!r}")
        maths = cell(page, index).locator(".holynb-answer mjx-container").count()
        if maths != 2:
            problems.append(f"{theme}: cell {index}: {maths} formulas typeset, expected 2")
        if cell(page, index).locator(".holynb-status mjx-container").count():
            problems.append(f"{theme}: cell {index}: the figures line was typeset as maths")
    for selector, least in (
        (".holynb-error", 4.5),
        (".holynb-answer p", 4.5),
        (".holynb-status", 3.0),
    ):
        element = page.locator(selector).first
        ratio = element.evaluate(CONTRAST_JS)
        print(f"{LABEL} {theme} contrast {selector}: {ratio:.1f}")
        if ratio < least:
            problems.append(f"{theme}: {selector} contrast {ratio:.1f} < {least}")
    failed = cell(page, 3).locator(".holynb-status")
    if "Failed" not in failed.inner_text() or "waiting" in failed.inner_text():
        problems.append(f"{theme}: failed status line reads {failed.inner_text()!r}")
    if "holynb-failed" not in (failed.get_attribute("class") or ""):
        problems.append(f"{theme}: the failed status line does not look different")


def test_money_maths_themes_and_a_background_answer_after_reopening(
    page: Any, lab: Any, money_server: LocalServer
) -> None:
    problems: list[str] = []
    url = write_notebook(lab, money_server, "answers.ipynb", MONEY_CELL, BG_CELL, ERROR_CELL)
    open_notebook(page, url)
    run_cell(page, 1)
    wait_text(page, 1, r"completion tokens", timeout_s=30)
    run_cell(page, 2)
    wait_idle(page)  # the --bg cell is done while its answer streams
    wait_text(page, 2, r"completion tokens", timeout_s=30)
    money_server.faults.push(faults.status(404))
    run_cell(page, 3)
    wait_text(page, 3, r"Failed ·|NotFoundError", timeout_s=30)
    page.wait_for_timeout(1500)
    page.screenshot(path=f"{SHOTS}/{LABEL}-live.png", full_page=True)

    # -- what is stored: one rendered answer per cell, the same as nbclient stores --------------
    saved = save(page, lab.root / "answers.ipynb")
    for index in (1, 2, 3):
        outputs = saved.cells[index].outputs
        kinds = [(o.output_type, sorted(o.get("data", {}))) for o in outputs]
        if kinds != [("display_data", ["text/html", "text/plain"])]:
            problems.append(f"stored cell {index}: {kinds}")
        plain = outputs[0].get("data", {}).get("text/plain", "") if outputs else ""
        if index < 3 and not plain.startswith("A plan at $5 per user"):
            problems.append(f"stored cell {index}: text/plain is {plain[:80]!r}")

    # -- reopened, in both themes -------------------------------------------------------------
    for theme, name in (("light", "JupyterLab Light"), ("dark", "JupyterLab Dark")):
        set_theme(lab, page, name)
        look(page, theme, problems)
    set_theme(lab, page, "JupyterLab Light")
    assert not problems, "\n".join(problems)
