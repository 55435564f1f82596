"""The prebuilt JupyterLab extension (holynb-lab): a ``%%llm`` cell's prompt is highlighted as
Markdown, not Python (no bold keywords for "and", "for", "in"); other cells stay Python."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

PROMPT = "find and sort the numbers in the list for me"
CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"
# the words of a cell's editor that carry a highlighting style (CodeMirror wraps them in spans)
STYLED = """([sel, i]) => [...(document.querySelectorAll(sel)[i]
    ?.querySelectorAll('.cm-content .cm-line span') ?? [])].map(s => s.textContent.trim())"""


def styled_words(page: Any, index: int) -> list[str]:
    return page.evaluate(STYLED, [CELLS, index])


def test_llm_cells_are_highlighted_as_markdown(lab: Any, page: Any) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python", "codemirror_mode": {"name": "ipython"}}
    nb.cells = [
        nbformat.v4.new_code_cell(f"%%llm\n{PROMPT}"),
        nbformat.v4.new_code_cell(f"%%capture\n{PROMPT}"),
    ]
    nbformat.write(nb, lab.root / "highlight.ipynb")
    page.goto(lab.notebook_url("highlight.ipynb"))
    page.wait_for_selector(CELLS + " .cm-content", timeout=30_000)
    page.wait_for_function(  # Python keywords styled in the plain cell: highlighting is on
        f"([sel, i]) => ({STYLED})([sel, i]).includes('and')", arg=[CELLS, 1], timeout=30_000
    )
    assert {"and", "for", "in"} <= set(styled_words(page, 1))
    assert not {"and", "for", "in"} & set(styled_words(page, 0))
