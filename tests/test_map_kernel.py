"""map and compare interrupted in a real Jupyter kernel (nbclient), as the Interrupt button does
it: SIGINT to the kernel process."""

from __future__ import annotations

import re

import nbformat

from holynb.server.models import echo
from tests.helpers import kernel_setup_cell, run_interrupting

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error(cell: nbformat.NotebookNode) -> tuple[str, str, str]:
    (err,) = [o for o in cell.outputs if o.output_type == "error"]
    return err.ename, err.evalue, ANSI.sub("", "\n".join(err.traceback))


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream").strip()


def test_an_interrupted_map_shows_a_short_message_and_the_next_cell_gets_the_rows(local):
    local.register_model("local/steady", echo, latency_ms=300)
    cells = run_interrupting(
        [
            kernel_setup_cell(local),
            'df = s.map([f"item {i}" for i in range(60)], model="local/steady", concurrency=2,'
            " progress=False)",
            "rows = s.last_map\nprint(0 < len(rows) < 60, rows['ok'].all(), 'df' in dir())",
        ],
        interrupted=1,
        after_s=1.5,
    )
    name, value, shown = _error(cells[1])
    assert name == "MapInterrupted"
    assert "s.last_map" in value or ".last_map" in value  # how to get the rows, in the message
    assert "session.py" not in shown and "bulk.py" not in shown and "_loop.py" not in shown
    assert len(shown.splitlines()) <= 12, shown
    assert _stdout(cells[2]) == "True True False"


def test_an_interrupted_compare_shows_a_short_message_and_keeps_the_long_rows(local):
    local.register_model("local/steady", echo, latency_ms=300)
    cells = run_interrupting(
        [
            kernel_setup_cell(local),
            'cmp = s.compare([f"q {i}" for i in range(30)], ["local/echo", "local/steady"],'
            " concurrency=2, progress=False)",
            "print(list(s.last_map.columns[:3]), 0 < len(s.last_map) < 60)",
        ],
        interrupted=1,
        after_s=1.5,
    )
    name, value, shown = _error(cells[1])
    assert name == "MapInterrupted" and "s.last_map" in value
    assert "compare.py" not in shown and "session.py" not in shown
    assert _stdout(cells[2]) == "['prompt_index', 'prompt', 'model'] True"
