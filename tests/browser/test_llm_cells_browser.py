"""The prebuilt JupyterLab extension (holynb-lab): a ``%%llm`` cell's prompt is highlighted as
Markdown, not Python (no bold keywords for "and", "for", "in"), and a Python list in it is not a
link; other cells stay Python."""

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


LIST_PROMPT = "Sort **these** numbers: [3, 1, 4, 1, 5] and [x](y) too"
# every span of the cell's editor: its text, colour and text decoration
LOOKS = """([sel, i]) => [...(document.querySelectorAll(sel)[i]
    ?.querySelectorAll('.cm-content .cm-line span') ?? [])].map(s => {
      const style = getComputedStyle(s);
      return [s.textContent, style.textDecorationLine, style.color];
    })"""


def test_a_python_list_in_a_prompt_is_not_a_link(lab: Any, page: Any) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(f"%%llm\n{LIST_PROMPT}"),
        nbformat.v4.new_markdown_cell(LIST_PROMPT),  # JupyterLab's Markdown: "[x](y)" is a link
    ]
    nbformat.write(nb, lab.root / "lists.ipynb")
    page.goto(lab.notebook_url("lists.ipynb"))
    page.wait_for_selector(CELLS + " .cm-content", timeout=30_000)
    page.wait_for_function(  # Markdown highlighting is on in the prompt: **these** is bold
        f"([sel, i]) => ({STYLED})([sel, i]).includes('these')", arg=[CELLS, 0], timeout=30_000
    )
    looks = page.evaluate(LOOKS, [CELLS, 0])
    linked = [text for text, decoration, _ in looks if "underline" in decoration]
    assert not linked, looks
    assert not [text for text, _, _ in looks if "3, 1, 4" in text], looks
