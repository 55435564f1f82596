"""What a batch job has cost so far and the most it can still cost, for ``BatchJob.wait``'s bar.

The cost so far is what the rows of the parts that ended cost at batch prices (``wait`` reads
each part as it ends, so its rows are in the ledger at once). The rows still running are bounded
by their worst case at batch prices (the prompt's estimate and its ``max_tokens``, as a budget
reserves them), and projected, as map's bar does, at the mean cost of the rows answered so far.
A model without a price makes it ``cost unknown``, never $0.

>>> spend = Spend(row_worst(meter.bounds, requests))   # e.g. [0.01, 0.02, 0.03, 0.04]
>>> spend.costs = {0: 0.002, 1: 0.004}                 # the rows of the parts that ended
>>> spend.postfix(running=[2, 3])
'cost=$0.0060 projected=$0.0120 at most $0.0760'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from holynb.worst_case import UnboundedCall

if TYPE_CHECKING:
    from holynb.worst_case import WorstCase

__all__ = ["Spend", "row_worst"]


def row_worst(bounds: WorstCase, requests: list[bytes]) -> list[float] | None:
    """Each request line's worst case at batch prices; None when a model has no price."""
    try:
        return [bounds.usd(orjson.loads(line)["body"], batch=True) for line in requests]
    except UnboundedCall:
        return None


@dataclass
class Spend:
    """The money figures of one job's bar: ``worst`` per row, ``costs`` of the ended rows."""

    worst: list[float] | None
    costs: dict[int, float | None] = field(default_factory=dict)

    def postfix(self, running: Iterable[int]) -> str:
        """``cost=$… projected=$… at most $…`` with ``running`` the rows not ended yet."""
        pending = [row for row in running if row not in self.costs]
        if self.worst is None or any(cost is None for cost in self.costs.values()):
            return "cost unknown"
        spent = sum(cost or 0.0 for cost in self.costs.values())
        most = spent + sum(self.worst[row] for row in pending)
        if not self.costs:
            return f"at most ${most:.4f}"
        text = f"cost=${spent:.4f}"
        if pending:
            answered = sum(cost is not None and cost > 0 for cost in self.costs.values())
            if answered:
                text += f" projected=${spent + spent / answered * len(pending):.4f}"
            text += f" at most ${most:.4f}"
        return text
