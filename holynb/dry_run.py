"""Dry runs: what a ``map``, ``compare`` or ``batch`` would send and cost at most, sending nothing.

``dry_run=True`` builds every request exactly as the run would (templates filled in, images
prepared, parameters merged) and returns one row per request instead of sending it:

- ``prompt`` (as the run's result frame shows it), ``model``;
- ``prompt_tokens``: the offline estimate, images counted by the wire format's rule;
- ``max_completion_tokens``: the length cap of one answer;
- ``worst_cost_usd``: what the budget would reserve for it (the prompt with its margin, every
  answer at its cap, at the dearest price it may cost: a flex call at the default tier's, a
  prompt-cached one with its whole prompt as a cache write, a batch at batch prices); 0.0 for a
  cached row, None when no price is known;
- ``cached``: already in the checkpoint or the response cache, so it would cost nothing;
- ``refused``: why the run would not send it (a bad prompt, no price under a budget, the
  budget spent by the rows before it; for a batch the whole job is held at once), else None.

The frame's ``attrs`` hold the totals (``requests``, ``to_send``, ``worst_cost_usd``: None when
any row sent has no known price, ``refused``, ``batch``, ``budget_left_usd``), and its repr ends
with them on one line.

>>> est = s.map(df, template="Classify: {review}", max_tokens=5, dry_run=True)
>>> est.attrs["worst_cost_usd"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from holynb.worst_case import UnboundedCall, output_cap

if TYPE_CHECKING:
    import pandas as pd

    from holynb.calls.caller import Caller

__all__ = ["PLAN_COLUMNS", "Planned", "plan_frame", "total_line"]

PLAN_COLUMNS = (
    "prompt",
    "model",
    "prompt_tokens",
    "max_completion_tokens",
    "worst_cost_usd",
    "cached",
    "refused",
)


@dataclass(frozen=True, slots=True)
class Planned:
    """One request a run would send: its body (None: it cannot be built, ``error`` says
    why) and whether its answer is stored already."""

    prompt: Any
    body: dict[str, Any] | None
    cached: bool = False
    error: str | None = None


def plan_frame(
    caller: Caller, planned: Sequence[Planned], index: Any = None, *, batch: bool = False
) -> pd.DataFrame:
    """The dry run's frame of ``planned`` (see the module docstring); sends nothing."""
    import pandas as pd

    meter = caller.meter
    budget = meter.budget
    left = None
    if budget is not None:
        left = max(budget.limit_usd - budget.spent_usd - budget.reserved_usd, 0.0)
    rows: list[tuple[Any, ...]] = []
    running = 0.0
    unknown = False
    for item in planned:
        body = item.body
        if body is None:
            rows.append((item.prompt, None, None, None, None, False, item.error))
            continue
        tokens = meter.prompt_tokens(body["messages"])
        cap = output_cap(body)
        refused = None
        try:
            worst: float | None = meter.bounds.usd(body, batch=batch)
        except UnboundedCall as err:
            worst = None
            if budget is not None:
                refused = str(err)
        if item.cached:
            worst, refused = 0.0, None  # its stored answer is used: nothing is reserved
        elif worst is None:
            unknown = unknown or refused is None  # sent without a budget, at a cost unknown
        elif not batch and left is not None and running + worst > left:
            refused = (
                f"the budget: {_usd(running)} of the {_usd(left)} left is reserved by the rows "
                f"before, and this one could cost up to {_usd(worst)}"
            )
        else:
            running += worst
        rows.append((item.prompt, body["model"], tokens, cap, worst, item.cached, refused))
    if batch and left is not None:  # a batch is held all at once, or not at all
        why = None
        if running > left:
            why = f"the budget: the whole job could cost up to {_usd(running)}, {_usd(left)} left"
        elif any(r[6] is not None for r in rows):
            why = "the budget: another request of the job cannot be bounded (see its row)"
        if why is not None:
            rows = [(*r[:6], r[6] or why) for r in rows]
    frame = _frame_class()(rows, columns=list(PLAN_COLUMNS), index=index)
    frame["cached"] = frame["cached"].astype(bool)
    n_refused = int(frame["refused"].notna().sum())
    sent = [r for r in rows if not r[5] and r[6] is None]
    frame.attrs.update(
        dry_run=True,
        requests=len(rows),
        to_send=len(sent),
        worst_cost_usd=None if unknown else round(running, 12),
        refused=n_refused,
        batch=batch,
        budget_left_usd=left,
    )
    if isinstance(frame.index, pd.RangeIndex) and index is None:
        frame.index.name = None
    return frame


def total_line(attrs: dict[str, Any]) -> str:
    """The dry run's totals as one line of text."""
    worst = attrs.get("worst_cost_usd")
    money = "unknown (a model has no price)" if worst is None else _usd(worst)
    text = (
        f"dry run: {attrs.get('to_send', 0)} of {attrs.get('requests', 0)} requests would be "
        f"sent{' as a batch' if attrs.get('batch') else ''}, costing at most {money}"
    )
    if attrs.get("refused"):
        text += f"; {attrs['refused']} refused"
    return text + "; nothing was sent."


def _usd(value: float) -> str:
    from holynb.units import money

    return money(value)


@cache
def _frame_class() -> type:
    import pandas as pd

    class DryRun(pd.DataFrame):
        """A dry run's frame: a DataFrame whose repr ends with the totals."""

        @property
        def _constructor(self) -> type:
            return DryRun

        def __repr__(self) -> str:
            return super().__repr__() + "\n" + total_line(self.attrs)

        def _repr_html_(self) -> str | None:
            html = super()._repr_html_()
            if html is None:
                return None
            from html import escape

            return html + f"<p>{escape(total_line(self.attrs))}</p>"

    return DryRun
