"""What the streaming widget costs: a 10,000-token answer displayed vs not displayed.

    python bench/widget_bench.py            # about 30 s
    python bench/widget_bench.py --reps 5 --paced 1000

The answer (Markdown: headings, paragraphs, lists, code fences, tables) comes from the local
server on 127.0.0.1, one chunk per token. The consumers run inside a real IPython kernel started
by nbclient, so widgets talk through real comms over ZMQ; inside the kernel every comm message
is counted (and its JSON size summed) by wrapping ``publish_msg`` of ipykernel's ``Comm``.

Consumers, in turn, each run ``--reps`` times (the median is shown):

- ``none``: ``for text in session.stream(...): pass``;
- ``StreamView``: holynb's widget (coalesced renders, settled blocks sent once);
- ``PlainView``: the text-frontend view (stdout, then one sanitised HTML display);
- ``one HTML widget``: a reference without holynb's chunking: a single ``ipywidgets.HTML``
  re-rendered in full at the same 16 Hz.

``--paced N`` adds a run at N tokens/s, where the coalescing, not the stream, sets the rate.
A second table times ``render_markdown`` on 1 KB and 50 KB and one ``MarkdownStream`` update of
a 50 KB answer (only the open tail is rendered).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOKENS = 10_000
MODEL = "bench/markdown"

KERNEL_SETUP = """
import json, statistics, time
import ipywidgets
import holynb
from holynb.notebook.display import PlainView, StreamView, MAX_UPDATES_PER_SECOND
from holynb.render import render_markdown

COUNT = {"messages": 0, "bytes": 0}
_probe = ipywidgets.HTML()
COMM_CLASS = type(_probe.comm)  # ipykernel's Comm: it overrides publish_msg
_probe.close()
_publish = COMM_CLASS.publish_msg

def _counting(self, msg_type, data=None, metadata=None, buffers=None, **keys):
    COUNT["messages"] += 1
    COUNT["bytes"] += len(json.dumps(data, default=str))
    return _publish(self, msg_type, data, metadata, buffers, **keys)

COMM_CLASS.publish_msg = _counting
s = holynb.Session(model=MODEL, base_url=BASE_URL, api_key=API_KEY)


class OneHTML:
    # the reference: one HTML widget, the whole answer re-rendered at the same rate
    def __init__(self):
        self.html = ipywidgets.HTML()
        self.parts, self.due, self.renders = [], 0.0, 0

    def show(self):
        from IPython.display import display
        display(self.html)

    def append(self, text):
        self.parts.append(text)
        if time.monotonic() >= self.due:
            self.flush()

    def flush(self):
        self.html.value = render_markdown("".join(self.parts))
        self.renders += 1
        self.due = time.monotonic() + 1 / MAX_UPDATES_PER_SECOND

    def finish(self, result):
        self.flush()


def consume(kind):
    view = {"none": None, "StreamView": lambda: StreamView(MODEL),
            "PlainView": lambda: PlainView(MODEL, out=open("/dev/null", "w")),
            "one HTML widget": OneHTML}[kind]
    before = dict(COUNT)
    started = time.perf_counter()
    view = view() if view else None
    if view is not None:
        view.show()
    deltas = 0
    for text in s.stream("go"):
        deltas += 1
        if view is not None:
            view.append(text)
    if view is not None:
        view.finish(s.last_result)
    wall = time.perf_counter() - started
    return {
        "kind": kind, "wall_s": wall, "deltas": deltas,
        "renders": getattr(view, "renders", 0),
        "messages": COUNT["messages"] - before["messages"],
        "bytes": COUNT["bytes"] - before["bytes"],
    }
"""

KINDS = ["none", "StreamView", "PlainView", "one HTML widget"]


def answer(tokens: int) -> str:
    """A deterministic Markdown answer of exactly ``tokens`` tokens (the server's counting)."""
    from holynb.server import tokenize

    blocks = []
    i = 0
    while sum(len(tokenize(b)) for b in blocks) < tokens + 50:
        i += 1
        blocks.append(f"## Section {i}")
        blocks.append(
            f"Paragraph {i} has **bold**, *italic* and `code` words; it keeps going for a "
            "while so that the answer looks like prose, with a [link](https://example.com)."
        )
        blocks.append("\n".join(f"- item {i}.{k} with some words" for k in range(4)))
        blocks.append(f"```python\ndef f{i}(x):\n    return x * {i}\n```")
        if i % 3 == 0:
            blocks.append(
                "| a | b |\n|---|--:|\n" + "\n".join(f"| {k} | {k * i} |" for k in range(3))
            )
    pieces = tokenize("\n\n".join(blocks))[:tokens]
    return "".join(pieces)


def run_kernel(base_url: str, reps: int, paced: float | None, server: object) -> list[dict]:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    key = server.api_key.get()  # type: ignore[attr-defined]  # the kernel is another process
    setup = f"MODEL = {MODEL!r}\nBASE_URL = {base_url!r}\nAPI_KEY = {key!r}\n" + KERNEL_SETUP
    cells = [setup, "consume('none'); consume('StreamView'); None  # warm-up"]
    for rep in range(reps):
        for kind in KINDS:
            cells.append(f"print(json.dumps({{**consume({kind!r}), 'rep': {rep}}}))")
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    rows: list[dict] = []
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        if paced:
            server.tokens_per_second = paced  # type: ignore[attr-defined]
            for kind in ("StreamView", "one HTML widget"):
                extra = nbformat.v4.new_code_cell(
                    f"print(json.dumps({{**consume({kind!r}), 'paced': True}}))"
                )
                nb.cells.append(extra)
                client.execute_cell(extra, len(nb.cells) - 1)
            server.tokens_per_second = None  # type: ignore[attr-defined]
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                for line in out["text"].splitlines():
                    if line.startswith("{"):
                        rows.append(json.loads(line))
            if out.get("output_type") == "error":
                raise RuntimeError("\n".join(out["traceback"]))
    return rows


def render_table() -> list[str]:
    from holynb.render import MarkdownStream, render_markdown

    text = answer(TOKENS)
    lines = ["| what | size | time per call |", "|---|--:|--:|"]
    for label, size in (("render_markdown", 1024), ("render_markdown", 50 * 1024)):
        sample = (text * 3)[:size]
        n = 200 if size < 10_000 else 10
        started = time.perf_counter()
        for _ in range(n):
            render_markdown(sample)
        lines.append(
            f"| {label} | {size // 1024} KB | {(time.perf_counter() - started) / n * 1000:.2f} ms |"
        )
    sample = (text * 3)[: 50 * 1024]
    stream = MarkdownStream()
    for end in range(1000, len(sample), 1000):
        stream.update(sample[:end])
    started = time.perf_counter()
    n = 50
    for k in range(n):
        stream.update(sample[: len(sample) - n + k])
    per = (time.perf_counter() - started) / n * 1000
    lines.append(f"| MarkdownStream.update (open tail of a 50 KB answer) | 50 KB | {per:.2f} ms |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--paced", type=float, default=2000.0, help="tokens/s of the paced run (0: none)"
    )
    args = parser.parse_args()

    from holynb.server import LocalServer, count_tokens

    text = answer(TOKENS)
    server = LocalServer().start()
    server.register_model(MODEL, lambda messages, params: text)
    try:
        rows = run_kernel(server.base_url, args.reps, args.paced or None, server)
    finally:
        server.stop()

    print(
        f"# Widget overhead: one {count_tokens(text):,}-token answer ({len(text) / 1024:.0f} KB "
        f"of Markdown) from the local server, consumed in a kernel (median of {args.reps})\n"
    )
    print("| consumer | wall s | overhead vs none | renders | comm messages | comm KB |")
    print("|---|--:|--:|--:|--:|--:|")
    base = statistics.median(
        r["wall_s"] for r in rows if r["kind"] == "none" and not r.get("paced")
    )
    for kind in KINDS:
        group = [r for r in rows if r["kind"] == kind and not r.get("paced")]
        wall = statistics.median(r["wall_s"] for r in group)
        last = group[-1]
        print(
            f"| {kind} | {wall:.3f} | {wall - base:+.3f} s | {last['renders']} | "
            f"{last['messages']} | {last['bytes'] / 1024:.0f} |"
        )
    paced = [r for r in rows if r.get("paced")]
    if paced:
        print(f"\nPaced at {args.paced:,.0f} tokens/s (one run each):\n")
        print("| consumer | wall s | renders | renders/s | comm messages | messages/s | comm KB |")
        print("|---|--:|--:|--:|--:|--:|--:|")
        for r in paced:
            wall = r["wall_s"]
            print(
                f"| {r['kind']} | {wall:.2f} | {r['renders']} | {r['renders'] / wall:.1f} | "
                f"{r['messages']} | {r['messages'] / wall:.1f} | {r['bytes'] / 1024:.0f} |"
            )
    print("\n# Rendering\n")
    print("\n".join(render_table()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
