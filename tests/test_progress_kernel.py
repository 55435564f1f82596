"""Progress bars in a real Jupyter kernel (nbclient), as a saved notebook keeps them: the
widget's text/plain fallback (what a reopened notebook without widget state, nbviewer, GitHub
and ``jupyter nbconvert --to markdown`` show) says how the bar ended, not its first frame."""

from __future__ import annotations

import re
import textwrap

import nbformat
from nbclient import NotebookClient

from holynb.server.models import echo
from tests.helpers import kernel_setup_cell, run_interrupting

WIDGET = "application/vnd.jupyter.widget-view+json"


def _run(cells: list[str]) -> list[nbformat.NotebookNode]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    # saved and read back, as a reopened notebook is
    return nbformat.reads(nbformat.writes(nb), as_version=4).cells


def _bars(cell: nbformat.NotebookNode) -> list[str]:
    """The text/plain of each progress-bar widget among the cell's outputs."""
    return [o.data["text/plain"] for o in cell.outputs if WIDGET in o.get("data", {})]


def test_a_saved_map_bar_says_how_the_map_ended(local):
    cells = _run(
        [
            kernel_setup_cell(local),
            'df = s.map([f"item {i}" for i in range(5)], max_tokens=8)',
            'df = s.map([f"other {i}" for i in range(3)], max_tokens=8)',
        ]
    )
    (first,) = _bars(cells[1])
    assert "5/5" in first and "100%" in first, first
    assert "done=5 failed=0" in first and "cost=" in first, first
    assert first.endswith("]") and "█" in first, first  # whole (ipywidgets cuts at 110), pretty
    (second,) = _bars(cells[2])  # each cell's bar its own
    assert "3/3" in second and "done=3" in second, second


def test_a_saved_batch_wait_bar_says_how_the_job_ended(local):
    cells = _run(
        [
            kernel_setup_cell(local),
            'job = s.batch([f"item {i}" for i in range(4)], max_tokens=8)\njob.wait()',
        ]
    )
    (bar,) = _bars(cells[1])
    assert "4/4" in bar and "completed" in bar, bar


def test_a_saved_interpreter_bar_says_how_many_snippets_ran(local):
    cells = _run(
        [
            kernel_setup_cell(local),
            'ci = holynb.CodeInterpreter(s, model="local/python")\n'
            'runs = ci.run_many(["print(1)", "print(2)"])',
        ]
    )
    (bar,) = _bars(cells[1])
    assert "2/2" in bar, bar


def test_a_saved_bar_of_an_interrupted_map_says_where_it_stopped(local):
    local.register_model("local/steady", echo, latency_ms=300)
    cells = run_interrupting(
        [
            kernel_setup_cell(local),
            'df = s.map([f"item {i}" for i in range(60)], model="local/steady", concurrency=2)',
        ],
        interrupted=1,
        after_s=1.5,
    )
    (bar,) = _bars(cells[1])
    done = re.search(r"\| (\d+)/60 ", bar)
    assert done is not None and 0 < int(done.group(1)) < 60, bar  # not the first frame's 0/60
    assert f"done={done.group(1)} " in bar, bar
