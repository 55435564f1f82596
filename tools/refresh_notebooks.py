"""Re-run the tutorials offline and store their outputs (what nbval compares afterwards).

    python tools/refresh_notebooks.py                      # every notebook in notebooks/
    python tools/refresh_notebooks.py notebooks/01-quickstart.ipynb

Runs each notebook top to bottom in a fresh kernel with no API key in the environment (so on
holynb's local server, as CI does), then writes it back with the new outputs.
"""

from __future__ import annotations

import os
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


def refresh(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
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
