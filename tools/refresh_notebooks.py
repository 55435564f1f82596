"""Re-run the tutorials offline and store their outputs (what nbval compares afterwards).

    python tools/refresh_notebooks.py                      # every notebook in notebooks/
    python tools/refresh_notebooks.py notebooks/01-quickstart.ipynb

Runs each notebook top to bottom in a fresh kernel with no API key in the environment (so on
holynb's local server, as CI does), then writes it back with the new outputs.

nbval's comment markers (``# NBVAL_IGNORE_OUTPUT`` and the ``# (reason)`` under it) are moved
out of the cells into their tags (``nbval-ignore-output``) and metadata (``nbval_reason``), so
readers see clean cells.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SCRUBBED = (
    "HOLYSHEEP_API_KEY",
    "HOLYNB_API_KEY",
    "HOLYNB_BASE_URL",
    "HOLYNB_MODEL",
    "HOLYNB_LOG_PATH",
    "HOLYNB_CACHE",
    "HOLYNB_API",
    "HOLYNB_DISPLAY",
)


# nbval's comment markers and the cell tags nbval reads instead
MARKER_TAGS = {
    "NBVAL_IGNORE_OUTPUT": "nbval-ignore-output",
    "NBVAL_CHECK_OUTPUT": "nbval-check-output",
    "NBVAL_SKIP": "nbval-skip",
    "NBVAL_RAISES_EXCEPTION": "raises-exception",
}
_MARKER = re.compile(r"^#\s*(NBVAL_[A-Z_]+)\s*$")


def markers_to_tags(cell: nbformat.NotebookNode) -> None:
    """Move nbval comment markers (and a ``# (reason ...)`` comment right under one) from the
    cell's source into its tags and its ``nbval_reason`` metadata."""
    lines = cell.source.split("\n")
    kept: list[str] = []
    i = 0
    while i < len(lines):
        found = _MARKER.match(lines[i].strip())
        if not found or found.group(1) not in MARKER_TAGS:
            kept.append(lines[i])
            i += 1
            continue
        tags = cell.metadata.setdefault("tags", [])
        if MARKER_TAGS[found.group(1)] not in tags:
            tags.append(MARKER_TAGS[found.group(1)])
        i += 1
        if i < len(lines) and lines[i].startswith("# ("):
            reason = []
            while i < len(lines) and lines[i].startswith("#"):
                reason.append(lines[i].lstrip("# ").strip())
                i += 1
                if reason[-1].endswith(")"):
                    break
            cell.metadata["nbval_reason"] = " ".join(reason).strip("()")
    cell.source = "\n".join(kept)


def refresh(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            markers_to_tags(cell)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = _joined_streams(cell.outputs)
    nbformat.write(nb, path)
    print(f"refreshed {path.relative_to(ROOT)}")


def _joined_streams(outputs: list) -> list:
    """Consecutive stdout (or stderr) pieces as one output, as JupyterLab stores them."""
    joined: list = []
    for out in outputs:
        last = joined[-1] if joined else None
        if (
            out.output_type == "stream"
            and last is not None
            and last.output_type == "stream"
            and last.name == out.name
        ):
            last.text += out.text
        else:
            joined.append(out)
    return joined


def main(argv: list[str]) -> int:
    for name in SCRUBBED:
        os.environ.pop(name, None)
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        refresh(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
