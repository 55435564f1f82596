"""Views of a ledger: per-model summary, compact HTML, and plots."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from holynb.formatting import cost_text
from holynb.ledger import stopped_by_user
from holynb.units import money

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_COLUMNS = [
    "model",
    "calls",
    "ok",
    "interrupted",
    "success_rate",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "ttft_p50_ms",
    "cache_hits",
    "saved_usd",
]


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: calls, successes, calls the user interrupted, success rate (of the calls
    not interrupted: a stopped call is not a failure), tokens, cost (None when any price is
    unknown), latency percentiles of successful calls and median time to first token; answers
    from the response cache count as calls and in ``cache_hits`` / ``saved_usd``, not in tokens
    or latency (nothing was sent for them)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for model, group in frame.groupby("model", sort=True):
        hit = group["cache_hit"].astype(bool)
        sent = group[~hit]
        ok = group[group["ok"]]
        stopped = sum(  # by the user: not a failure
            stopped_by_user(i, e) for i, e in zip(group["interrupted"], group["error"], strict=True)
        )
        ended = len(group) - stopped
        ok_sent = sent[sent["ok"]]
        costs = group["cost_usd"]
        known = costs.notna().all() and len(costs) > 0
        latency = ok_sent["latency_ms"].astype(float)
        ttft = ok_sent["ttft_ms"].dropna().astype(float)
        saved = group.loc[hit, "saved_usd"]
        rows.append(
            {
                "model": model,
                "calls": len(group),
                "ok": len(ok),
                "interrupted": stopped,
                "success_rate": len(ok) / ended if ended else None,
                "prompt_tokens": int(sent["prompt_tokens"].sum()),
                "completion_tokens": int(sent["completion_tokens"].sum()),
                "cached_tokens": int(sent["cached_tokens"].sum()),
                "cost_usd": float(costs.sum()) if known else None,
                "latency_p50_ms": latency.quantile(0.50) if len(latency) else None,
                "latency_p95_ms": latency.quantile(0.95) if len(latency) else None,
                "latency_p99_ms": latency.quantile(0.99) if len(latency) else None,
                "ttft_p50_ms": ttft.quantile(0.50) if len(ttft) else None,
                "cache_hits": int(hit.sum()),
                "saved_usd": float(saved.fillna(0.0).sum()),
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if kind == "usd":
        return money(value)
    if kind == "pct":
        return f"{value:.0%}"
    if kind == "ms":
        return f"{value:,.0f} ms"
    return f"{value:,}"


_HEAD = ["model", "calls", "success", "tokens in / out", "cost", "p50", "p95", "ttft p50"]


def _summary_cells(summary: pd.DataFrame) -> list[list[str]]:
    # one row of text cells per model, as both the HTML table and the plain text show them
    return [
        [
            str(r["model"]),
            _fmt(r["calls"], "int"),
            _fmt(r["success_rate"], "pct")
            + (f" ({r['interrupted']:,} interrupted)" if r["interrupted"] else ""),
            f"{r['prompt_tokens']:,} / {r['completion_tokens']:,}",
            _fmt(r["cost_usd"], "usd"),
            _fmt(r["latency_p50_ms"], "ms"),
            _fmt(r["latency_p95_ms"], "ms"),
            _fmt(r["ttft_p50_ms"], "ms"),
        ]
        for r in summary.to_dict("records")
    ]


def summary_text(summary: pd.DataFrame, total_cost: float, unknown: int, title: str) -> str:
    """The summary as plain text (what a saved notebook's text/plain keeps): the title and
    total, then one aligned line per model with ``summary_html``'s columns."""
    rows = [_HEAD, *_summary_cells(summary)]
    # latency columns at least "99,999 ms" wide: a saved notebook's text does not shift with them
    least = [0, 0, 0, 0, 0, 9, 9, 9]
    widths = [max(least[k], *(len(row[k]) for row in rows)) for k in range(len(_HEAD))]
    lines = [
        "  ".join(
            c.ljust(w) if k == 0 else c.rjust(w)
            for k, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join([f"{title} — total {cost_text(total_cost, unknown)}", *lines])


def summary_html(summary: pd.DataFrame, total_cost: float, unknown: int, title: str) -> str:
    """A compact HTML table of a summary (every value escaped)."""
    head = _HEAD
    body = []
    for cells in _summary_cells(summary):
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return (
        f"<div class='holynb-summary mathjax_ignore'><b>{html.escape(title)}</b> — total "
        f"{html.escape(cost_text(total_cost, unknown))}"
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
        "<tbody>" + "".join(body) + "</tbody></table></div>"
    )


def plot(frame: pd.DataFrame) -> Any:
    """Cumulative cost over time and latency distribution per model (matplotlib Figure)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Session.plot() needs matplotlib: pip install matplotlib") from err
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    fig, (ax_cost, ax_lat) = plt.subplots(1, 2, figsize=(11, 3.8))
    data = frame.sort_values("ts")
    costs = data["cost_usd"].fillna(0.0).astype(float).cumsum()  # the known costs
    ax_cost.step(data["ts"], costs, where="post")
    used = data["prompt_tokens"].fillna(0) + data["completion_tokens"].fillna(0) > 0
    unpriced = int((data["cost_usd"].isna() & used).sum())
    note = f"\n(+ {unpriced} call{'s' * (unpriced != 1)} without a price)" if unpriced else ""
    ax_cost.set_title("Cumulative cost (USD)" + note)
    # Readable clock times ("14:59:07", not "14:59.140000") and the one money format.
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
    formatter = mdates.ConciseDateFormatter(locator)
    formatter.formats = ["%Y", "%b", "%d %b", "%H:%M", "%H:%M", "%H:%M:%S.%f"]
    formatter.zero_formats = ["", "%Y", "%b", "%d %b", "%H:%M", "%H:%M:%S"]
    formatter.offset_formats = ["", "%Y", "%b %Y", "%d %b %Y", "%d %b %Y", "%d %b %Y %H:%M"]
    ax_cost.xaxis.set_major_locator(locator)
    ax_cost.xaxis.set_major_formatter(formatter)
    ax_cost.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: money(value)))
    ok = data[data["ok"]]
    models = sorted(ok["model"].unique())
    if models:
        ax_lat.boxplot(
            [ok[ok["model"] == m]["latency_ms"].astype(float) for m in models],
            orientation="horizontal",
        )
        ax_lat.set_yticks(range(1, len(models) + 1), models)
    ax_lat.set_title("Latency per model (ms)")
    fig.tight_layout()
    plt.close(fig)
    return fig
