"""Interrupting a ``%%llm`` cell in a real kernel (nbclient), the way JupyterLab's Kernel >
Interrupt does it (SIGINT to the kernel process), and stopping a ``--bg`` call (what its Stop
button calls): ``-o VAR`` and ``_llm`` hold this call's partial result (``interrupted=True``),
never the previous call's answer, and a fresh ``-o`` name is set too."""

from __future__ import annotations

import os
import signal
import textwrap
import threading

import nbformat
from nbclient import NotebookClient

from tests.helpers import kernel_setup_cell

SLOW = "local/slow"  # 400 ms to the first token, then 40 tokens a second
LONG_PROMPT = " ".join(["Please repeat this sentence about otters slowly."] * 40)
INTERRUPT_AFTER_S = 2.0  # mid-stream: the echo of LONG_PROMPT takes about 10 s


def run(cells: list[str], interrupt: dict[int, float]) -> list[nbformat.NotebookNode]:
    """Run ``cells`` in one kernel; cell ``i`` in ``interrupt`` gets a SIGINT after that many
    seconds (sent to the kernel's process from this test, as JupyterLab does)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True)
    with client.setup_kernel():
        pid = client.km.provisioner.process.pid  # type: ignore[union-attr]
        for index, cell in enumerate(nb.cells):
            timer = None
            if index in interrupt:
                timer = threading.Timer(interrupt[index], os.kill, (pid, signal.SIGINT))
                timer.start()
            client.execute_cell(cell, index)
            if timer is not None:
                timer.cancel()
    return nb.cells


def stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
    )


def errors(cell: nbformat.NotebookNode) -> list[str]:
    return [o.ename for o in cell.outputs if o.output_type == "error"]


def test_interrupt_sets_out_and_llm_to_this_calls_partial_result(local):
    cells = run(
        [
            kernel_setup_cell(local),
            "%%llm -o long\nfirst question",
            "first = long",
            f"%%llm -m {SLOW} -o long\n{LONG_PROMPT}",
            "print(long is not first, long.interrupted, long.text == _llm,"
            " long.text.startswith('You said'), long.text != first.text,"
            " 0 < long.usage.completion_tokens < 300)",
        ],
        interrupt={3: INTERRUPT_AFTER_S},
    )
    assert errors(cells[3]) == [], cells[3].outputs
    assert stdout(cells[4]).split() == ["True"] * 6, cells[4].outputs


def test_interrupt_sets_a_fresh_out_name(local):
    cells = run(
        [
            kernel_setup_cell(local),
            f"%%llm -m {SLOW} -o fresh\n{LONG_PROMPT}",
            "print(fresh.interrupted, fresh.text == _llm, fresh.text.startswith('You said'))",
        ],
        interrupt={1: INTERRUPT_AFTER_S},
    )
    assert errors(cells[2]) == [], cells[2].outputs
    assert stdout(cells[2]).split() == ["True"] * 3


def test_interrupt_before_an_answer_leaves_no_stale_out(local):
    cells = run(
        [
            kernel_setup_cell(local),
            "%%llm -o early\nfirst question",
            # --no-stream: nothing of this call arrives before the interrupt (400 ms latency)
            f"%%llm -m {SLOW} --no-stream -o early\n{LONG_PROMPT}",
            "print('early' in globals(), '_llm' in globals())",
        ],
        interrupt={2: 0.2},
    )
    assert stdout(cells[3]).split() == ["False", "False"], cells[3].outputs


def test_stopping_a_background_call_sets_out_to_its_partial_result(local):
    cells = run(
        [
            kernel_setup_cell(local),
            "%%llm -o bg\nfirst question",
            "first = bg",
            f"%%llm --bg -m {SLOW} -o bg\n{LONG_PROMPT}",
            # what the Stop button calls (set_stop(future.cancel)), then wait for the cleanup
            f"""
            import time
            time.sleep({INTERRUPT_AFTER_S})
            _llm_task.cancel()
            for _ in range(50):
                if bg is not first:
                    break
                time.sleep(0.1)
            print(bg is not first, bg.interrupted, bg.text == _llm, bg.text.startswith('You said'))
            """,
        ],
        interrupt={},
    )
    assert errors(cells[4]) == [], cells[4].outputs
    assert stdout(cells[4]).split() == ["True"] * 4, cells[4].outputs
