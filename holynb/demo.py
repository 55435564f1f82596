"""The ``holynb demo`` walk-through: one streamed answer, one more, and the ledger."""

from __future__ import annotations

import sys
from typing import Any

from holynb.offline import auto_session, local_server


def run_demo(prompt: str, out: Any = None) -> int:
    """Stream one answer, ask once more without streaming, and print the ledger."""
    out = out or sys.stdout
    session, how = auto_session()
    if session.uses_offline_server:
        local_server().tokens_per_second = 60  # slow enough to watch the answer stream in
    print(how, file=out)
    print(f"\n>>> {prompt}\n", file=out)
    for text in session.stream(prompt, tag="demo"):
        print(text, end="", file=out, flush=True)
    print("\n", file=out)
    result = session.chat("Summarise that in one line.", max_tokens=40, tag="demo")
    print(f">>> Summarise that in one line.\n\n{result.text}\n", file=out)
    frame = session.ledger
    shown = [
        "model",
        "kind",
        "ok",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "latency_ms",
        "ttft_ms",
        "attempts",
    ]
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print("Ledger:", file=out)
        print(frame[shown].to_string(index=False), file=out)
    session.close()
    return 0
