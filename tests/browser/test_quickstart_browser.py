"""notebooks/01-quickstart.ipynb in a real JupyterLab and chromium, as a reader on Binder would
run it: Run All Cells, no API key. Every cell runs, none errors except the one tagged
raises-exception, and the streaming widgets end with their figures line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01-quickstart.ipynb"
SANITIZE = NOTEBOOK.parent / "nbval_sanitize.cfg"
FIGURES = re.compile(r"· \d[\d,]* prompt \+ \d[\d,]* completion tokens · .* · (\$|cost unknown)")
RUN_TIMEOUT_S = 90
# a cell that asks a model (not %llm config, models, cost, history or --new)
ASKS = re.compile(r"^%%?llm(?:\s|$)(?!\s*(?:config|models|cost|history|--new)\b)", re.MULTILINE)


def menu(page: Any, name: str, item: str) -> None:
    """Click ``item`` in JupyterLab's menu ``name`` (e.g. Run > Run All Cells)."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{name}$")).click()
    page.locator(".lm-Menu-item", has_text=item).first.click()


def saved_notebook(page: Any, path: Path) -> nbformat.NotebookNode:
    """Save from JupyterLab (Ctrl+S) and read the file back once it is written."""
    before = path.stat().st_mtime_ns
    page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    page.wait_for_function(  # the tab loses its "unsaved changes" mark
        "() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=15_000
    )
    deadline = time.monotonic() + 15
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.stat().st_mtime_ns != before, "JupyterLab did not save the notebook"
    return nbformat.read(path, as_version=4)


def last_code_cell_ran() -> str:
    # queried afresh on every poll: JupyterLab re-renders cells as the notebook scrolls
    return """() => {
        const cells = document.querySelectorAll('.jp-Notebook .jp-CodeCell');
        const last = cells[cells.length - 1];
        const prompt = last && last.querySelector('.jp-InputPrompt');
        return !!prompt && /\\[\\d+\\]/.test(prompt.textContent);
    }"""


def test_quickstart_runs_all_cells_in_jupyterlab(page: Any, lab: Any) -> None:
    shutil.copy(NOTEBOOK, lab.root / NOTEBOOK.name)
    stored = nbformat.read(NOTEBOOK, as_version=4)
    code_ids = [c.id for c in stored.cells if c.cell_type == "code"]
    page.goto(lab.notebook_url(NOTEBOOK.name))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=30_000)

    # the stored outputs go first, so that what is checked below is this run's
    for attempt in range(3):  # a menu click that lands while Lab is still busy can be lost
        menu(page, "Edit", "Clear Outputs of All Cells")
        try:
            page.wait_for_function(
                "() => ![...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]"
                ".some(p => /\\d/.test(p.textContent))",
                timeout=10_000,
            )
            break
        except Exception:
            if attempt == 2:
                raise
    # the first cell alone, to know the kernel is up; then Run All
    first = page.locator(".jp-Notebook .jp-CodeCell").first
    output = first.locator(".jp-OutputArea-output").first
    for attempt in range(3):  # a key press that lands before Lab has wired the kernel is lost
        first.locator(".jp-InputPrompt").click()
        page.keyboard.press("Escape")
        page.keyboard.press("Control+Enter")
        try:
            output.wait_for(timeout=15_000)
            break
        except Exception:
            if attempt == 2:
                raise
    assert "No API key found: using holynb's local server" in first.inner_text()
    menu(page, "Run", "Run All Cells")
    # local/slow streams for more than a second: the live widget shows while it does
    page.wait_for_selector(".jp-Notebook .holynb-stream .holynb-status", timeout=30_000)
    page.wait_for_function(last_code_cell_ran(), timeout=RUN_TIMEOUT_S * 1000)
    page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=RUN_TIMEOUT_S * 1000
    )
    page.screenshot(path="/tmp/holynb_quickstart_lab.png")

    # -- every cell ran, and none errored but the one meant to ---------------------------------
    nb = saved_notebook(page, lab.root / NOTEBOOK.name)
    by_id = {c.id: c for c in nb.cells}
    for cell_id in code_ids:  # a cell added by %%llm -f code (set_next_input) is not checked
        cell = by_id[cell_id]
        assert cell.execution_count is not None, f"cell {cell_id} did not run:\n{cell.source}"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        may_fail = "raises-exception" in cell.metadata.get("tags", [])  # some only with a key
        assert may_fail or not errors, f"cell {cell_id}: {errors}\n{cell.source}"
        stderr = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
        assert "Traceback" not in stderr and "Error" not in stderr, f"{cell_id}: {stderr}"

    # -- each answer streamed into the widget, which ended as the answer and its figures -------
    asked = [by_id[i] for i in code_ids if ASKS.search(by_id[i].source)]
    assert len(asked) >= 8, [c.source for c in asked]
    for cell in asked:
        streamed = [o for o in cell.outputs if o.get("name") == "stdout"]
        assert not streamed, f"the plain-text view was used, not the widget:\n{cell.source}"
        shown = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
        assert "holynb-answer" in shown and "holynb-status" in shown, cell.outputs
        status = re.search(r'class="holynb-status[^"]*"[^>]*>([^<]*)<', shown)
        assert status and FIGURES.search(status.group(1)), (cell.source, shown[-400:])
    # and the page shows them (textContent: cells scrolled out of view have no innerText)
    statuses = page.eval_on_selector_all(
        ".jp-Notebook .holynb-status", "els => els.map(e => e.textContent)"
    )
    assert len(statuses) >= len(asked) and all(FIGURES.search(s) for s in statuses), statuses
    last = page.locator(".jp-Notebook .holynb-status").last  # on screen after Run All
    assert FIGURES.search(last.inner_text()), last.inner_text()
    assert "VBox(" not in page.locator(".jp-Notebook").inner_text()
    assert page.dialogs == []

    # -- what Lab saved is what nbval compares: the saved notebook passes nbval as it is -------
    (lab.root / "pytest.ini").write_text("[pytest]\n")  # not the repository's addopts
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLYNB_", "HOLYSHEEP_"))}
    rerun = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-c", str(lab.root / "pytest.ini"),
            "--rootdir", str(lab.root), "-p", "no:cacheprovider", "-q",
            "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE),
            NOTEBOOK.name,
        ],
        cwd=lab.root, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
