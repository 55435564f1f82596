"""The notebook a kernel runs for, as saved on disk: what the cell below a running cell holds.

``%%llm -f code`` asks the frontend for a new cell below with the answer's code; when the saved
notebook already has that code in the cell below (a tutorial's Run All, a re-run after a
restart), asking again would add a copy each time. jupyter-server tells the kernel its
notebook's path (``JPY_SESSION_NAME``, ipykernel's ``__session__``; VS Code's
``__vsc_ipynb_file__``); the running cell is found by its id (sent by JupyterLab) or else by
its source.

>>> cell_below(shell, cell_id, "%%llm -f code\\nWrite Python that ...")
'import statistics\\nprint(...)'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["cell_below", "notebook_path"]


def notebook_path(shell: Any) -> Path | None:
    """The saved notebook this kernel runs for, if the frontend said and it exists."""
    ns = getattr(shell, "user_ns", None) or {}
    for value in (
        os.environ.get("JPY_SESSION_NAME"),
        ns.get("__session__"),
        ns.get("__vsc_ipynb_file__"),
    ):
        if isinstance(value, str) and value.endswith(".ipynb") and os.path.isfile(value):
            return Path(value)
    return None


def _source(cell: Any) -> str:
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    return "".join(source) if isinstance(source, list) else str(source)


def cell_below(shell: Any, cell_id: str, source: str) -> str | None:
    """The source of the code cell below the running one in the saved notebook (found by
    ``cell_id``, else by its ``source``); None when unknown or not a code cell."""
    path = notebook_path(shell)
    if path is None:
        return None
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(cells, list):
        return None
    wanted = source.strip()
    for i, cell in enumerate(cells[:-1]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        if (cell.get("id") == cell_id) if cell_id else (_source(cell).strip() == wanted):
            below = cells[i + 1]
            code = isinstance(below, dict) and below.get("cell_type") == "code"
            return _source(below) if code else None
    return None
