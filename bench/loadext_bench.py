"""How long ``%load_ext holynb`` takes, and what a first ``%%llm`` cell then costs.

    python bench/loadext_bench.py            # median of 5 fresh interpreters

"at-once" runs the first cell right after ``%load_ext``; "idle" waits a second first, as a
person would, so the background warm-up has finished. Each run is a new Python process with
an IPython InteractiveShell (IPython's own start-up is not counted) and the local server
already running in that process.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

RUN = r"""
import io, json, sys, time, contextlib
from IPython.core.interactiveshell import InteractiveShell
import holynb
from holynb.offline import local_server
server = local_server()
shell = InteractiveShell.instance()
t0 = time.perf_counter()
shell.run_cell("%load_ext holynb")
t1 = time.perf_counter()
if sys.argv[1] == "idle":
    time.sleep(1.0)  # a person reads before running the next cell: the warm-up thread finishes
shell.run_cell("import holynb; holynb.notebook.magics.set_default_session(holynb.local_session())")
with contextlib.redirect_stdout(io.StringIO()):
    t2 = time.perf_counter()
    shell.run_cell("%%llm --max-tokens 5\nhello")
    t3 = time.perf_counter()
    shell.run_cell("%%llm --max-tokens 5\nhello")
    t4 = time.perf_counter()
print(json.dumps({"load_ext_ms": (t1 - t0) * 1e3, "first_cell_ms": (t3 - t2) * 1e3,
                  "second_cell_ms": (t4 - t3) * 1e3}))
"""


def main(reps: int = 5) -> None:
    print(f"| measure (median of {reps}) | ms |\n|---|--:|")
    for mode in ("at-once", "idle"):
        runs = []
        for _ in range(reps):
            done = subprocess.run(
                [sys.executable, "-c", RUN, mode], capture_output=True, text=True, check=True
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        for key in ("load_ext_ms", "first_cell_ms", "second_cell_ms"):
            label = key.removesuffix("_ms").replace("_", " ")
            print(f"| {label} ({mode}) | {statistics.median(r[key] for r in runs):.1f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
