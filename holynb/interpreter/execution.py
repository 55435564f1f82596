"""What the code interpreter returns: ExecutionResult and friends, and the HTML card.

>>> r.success, r.output, r.error, r.agrees
>>> display(HTML(result_card_html(r)))
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from holynb.units import money

if TYPE_CHECKING:
    import pandas as pd


_CARD_OUTPUT_CHARS = 20_000


def sum_costs(costs: Iterable[float | None]) -> float | None:
    """The sum of ``costs``; None when any of them is unknown (None), never a partial total."""
    total = 0.0
    for cost in costs:
        if cost is None:
            return None
        total += cost
    return total


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """An exception by class name and message, e.g. ``ExecutionError("ZeroDivisionError",
    "division by zero")``; ``str()`` gives ``"ZeroDivisionError: division by zero"``."""

    name: str
    message: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name

    @classmethod
    def parse(cls, text: str) -> ExecutionError:
        """``"Name: message"`` (as tracebacks end) split into its parts.

        >>> ExecutionError.parse("ValueError: bad")
        ExecutionError(name='ValueError', message='bad')
        """
        m = _ERROR_LINE_RE.match(text.strip())
        if m:
            return cls(m.group(1), (m.group(2) or "").strip())
        return cls("Error", text.strip())


_ERROR_LINE_RE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s*(.*))?$", re.S)


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What a model claimed about running some code, and (``verify=True``) what really happened.

    Claimed by the model: ``success``, ``output`` (stdout), ``error`` (an
    :class:`ExecutionError` or None) and ``execution_time_ms``. About the call: ``model`` (the one
    whose answer was used; None when no model gave one), ``raw`` (its reply), ``parse_repaired``
    (the JSON needed fixing, locally or by the repair round-trip), ``attempts`` (requests sent,
    across the JSON-mode probe, repairs and fallbacks), ``cost_usd`` (their sum; None when a
    price is unknown), ``latency_ms`` (wall time of the whole run) and ``notes`` (what went wrong
    on the way, e.g. a model that failed).

    Verified locally: ``verified_output`` (real stdout), ``verified_error`` (the exception the
    code really raised), ``verify_error`` (set when the sandbox itself stopped the code: time,
    memory or output limit; there is then nothing fair to compare) and ``agrees`` (claimed and
    real success match and so do the outputs, compared by :func:`same_output`; None when not
    verified, not answered, or stopped by the sandbox).

    >>> r = ci.run("1/0")
    >>> r.success, str(r.error)
    (False, 'ZeroDivisionError: division by zero')
    """

    success: bool
    output: str
    error: ExecutionError | None
    execution_time_ms: float | None
    model: str | None
    raw: str = field(default="", repr=False)
    parse_repaired: bool = False
    attempts: int = 0
    cost_usd: float | None = 0.0
    latency_ms: float = 0.0
    code: str = field(default="", repr=False)
    verified_output: str | None = None
    verified_error: ExecutionError | None = None
    verify_error: ExecutionError | None = None
    agrees: bool | None = None
    notes: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        """Whether a model's answer was used (False: every model failed; see ``error``)."""
        return self.model is not None

    @property
    def verified(self) -> bool:
        """Whether the code was also run locally."""
        return self.verified_output is not None or self.verify_error is not None

    def summary(self) -> str:
        """One line: outcome, model, claimed time, agreement, cost, attempts.

        >>> ci.run("print(1)").summary()
        'success · local/python · 41.2 ms claimed · agrees · $0.00 · 1 attempt'
        """
        if not self.answered:
            head = f"no answer ({self.error})" if self.error else "no answer"
        elif self.success:
            head = "success"
        else:
            head = f"failed: {self.error}" if self.error else "failed"
        parts = [head]
        if self.model:
            parts.append(self.model)
        if self.execution_time_ms is not None:
            parts.append(f"{self.execution_time_ms:.1f} ms claimed")
        if self.verified:
            parts.append(_agreement(self))
        parts.append("cost unknown" if self.cost_usd is None else money(self.cost_usd))
        parts.append(f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        if self.parse_repaired:
            parts.append("JSON repaired")
        return " · ".join(parts)

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.output:
            lines += ["--- output (claimed) ---", self.output.rstrip("\n")]
        if self.verified and self.agrees is False and self.verified_output is not None:
            lines += ["--- output (real) ---", self.verified_output.rstrip("\n")]
        if self.verified_error is not None and self.agrees is False:
            lines.append(f"real error: {self.verified_error}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return result_card_html(self)

    def to_dict(self) -> dict[str, Any]:
        """A flat dict (errors as ``"Name: message"`` strings), one row of ``to_frame()``."""
        return {
            "success": self.success,
            "output": self.output,
            "error": None if self.error is None else str(self.error),
            "execution_time_ms": self.execution_time_ms,
            "model": self.model,
            "parse_repaired": self.parse_repaired,
            "attempts": self.attempts,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "agrees": self.agrees,
            "verified_output": self.verified_output,
            "verified_error": None if self.verified_error is None else str(self.verified_error),
            "verify_error": None if self.verify_error is None else str(self.verify_error),
            "code": self.code,
            "raw": self.raw,
            "notes": "; ".join(self.notes),
        }


def _agreement(r: ExecutionResult) -> str:
    if r.verify_error is not None:
        return f"not compared: sandbox stopped the code ({r.verify_error.name})"
    if r.agrees is None:
        return "not compared"
    return "agrees" if r.agrees else "DISAGREES with the real run"


class RunManyResult(list[ExecutionResult]):
    """The results of :meth:`CodeInterpreter.run_many`: a list in input order, plus a table.

    >>> results = ci.run_many(snippets)
    >>> results[0].output
    >>> results.to_frame()            # one row per snippet
    >>> results.failed, results.total_cost_usd
    """

    @property
    def failed(self) -> int:
        """How many snippets did not succeed (the code failed, or no model answered)."""
        return sum(1 for r in self if not r.success)

    @property
    def total_cost_usd(self) -> float | None:
        """The summed cost; None when any part of it is unknown."""
        return sum_costs(r.cost_usd for r in self)

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame, one row per snippet in input order (see ``ExecutionResult.to_dict``)."""
        import pandas as pd

        rows = [r.to_dict() for r in self]
        columns = list(ExecutionResult(False, "", None, None, None).to_dict())
        return pd.DataFrame(rows, columns=columns)

    def _repr_html_(self) -> str:
        cost = self.total_cost_usd
        head = (
            f"{len(self)} snippets · {self.failed} failed · "
            f"{'cost unknown' if cost is None else money(cost)}"
        )
        frame = self.to_frame().drop(columns=["code", "raw"])
        return (
            f"<div class='mathjax_ignore'><p>{html.escape(head)}</p>"
            + frame.to_html(max_rows=20, escape=True)
            + "</div>"
        )


def same_output(claimed: str, real: str) -> bool:
    """Whether two outputs match once line endings are ``\\n``, trailing spaces and tabs are cut
    from every line and trailing newlines from the whole; anything else must match exactly.

    >>> same_output("42 \\r\\n\\n", "42\\n")
    True
    """
    return _normalise(claimed) == _normalise(real)


def _normalise(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip(" \t") for line in lines).rstrip("\n")


# -- the HTML card -----------------------------------------------------------------------------

# Colours that read on light and dark notebook themes alike (text colour is inherited).
_CARD = (
    '<div class="holynb-interpret mathjax_ignore" '
    'style="border:1px solid var(--jp-border-color1,rgba(127,127,127,0.4));'
    "border-radius:6px;padding:6px 10px;margin:4px 0;font-family:system-ui,sans-serif;"
    'font-size:13px">{body}</div>'
)
_PRE = (
    '<pre style="margin:4px 0;padding:6px;background:var(--jp-layout-color2,rgba(127,127,127,0.1));'
    "border-radius:4px;"
    'white-space:pre-wrap;max-height:24em;overflow:auto">{text}</pre>'
)
_LABEL = '<div style="opacity:0.7;font-size:12px;margin-top:4px">{text}</div>'


def result_card_html(result: ExecutionResult) -> str:
    """A compact HTML card for a result: status line, claimed output, error, and, when
    verified, agreement (with the real output when they differ). Every value is escaped; the
    card has no scripts and no event handlers.

    >>> from IPython.display import HTML
    >>> HTML(result_card_html(ci.run("print(2 + 2)")))
    """
    esc = _escape
    if not result.answered:
        colour, mark = "var(--jp-error-color1, #cf222e)", "✗"
    elif result.agrees is False:
        colour, mark = "var(--jp-warn-color1, #bc4c00)", "≠"
    elif result.success:
        colour, mark = "var(--jp-success-color1, #1a7f37)", "✓"
    else:
        colour, mark = "var(--jp-warn-color1, #bc4c00)", "!"
    head = f'<span style="color:{colour};font-weight:600">{mark}</span> {esc(result.summary())}'
    parts = [f"<div>{head}</div>"]
    if result.output:
        parts.append(_LABEL.format(text="output (claimed)"))
        parts.append(_PRE.format(text=esc(_clip(result.output))))
    if result.error is not None:
        parts.append(
            '<div style="color:var(--jp-error-color1,#cf222e);margin-top:4px">'
            f"<b>{esc(result.error.name)}</b>"
            f"{': ' + esc(result.error.message) if result.error.message else ''}</div>"
        )
    if result.verified and result.agrees is False:
        parts.append(_LABEL.format(text="output (real, run locally)"))
        parts.append(_PRE.format(text=esc(_clip(result.verified_output or ""))))
        if result.verified_error is not None:
            parts.append(_LABEL.format(text=f"real error: {esc(str(result.verified_error))}"))
    if result.verify_error is not None:
        parts.append(_LABEL.format(text=f"local run: {esc(str(result.verify_error))}"))
    for note in result.notes:
        parts.append(_LABEL.format(text=esc(note)))
    return _CARD.format(body="".join(parts))


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _clip(text: str) -> str:
    if len(text) <= _CARD_OUTPUT_CHARS:
        return text
    return text[:_CARD_OUTPUT_CHARS] + f"\n… ({len(text) - _CARD_OUTPUT_CHARS:,} more characters)"
