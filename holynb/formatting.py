"""How holynb writes figures for people: money, durations, the figures line, error boxes.

One money format everywhere (``holynb.units.money``: figures lines, ``%llm cost``, interpreter
cards, summaries, budget messages, reprs): enough significant digits to see a $0.00003 call.

>>> money(0.0000261), money(0.0073), money(12.3456), money(0)
('$0.0000261', '$0.0073', '$12.35', '$0.00')

holynb's own HTML carries the class ``mathjax_ignore`` (``IGNORE_MATHS``): JupyterLab's maths
typesetter skips it, so "$0.0073 of $0.0078" stays money and never becomes italic maths. Every
colour is one of JupyterLab's theme variables, so light and dark themes both read well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from holynb.highlight import BLOCK_CLASS, CODE_CSS
from holynb.render import escape_text
from holynb.units import money

if TYPE_CHECKING:
    from holynb.results import ChatResult

__all__ = [
    "IGNORE_MATHS",
    "answer_html",
    "cost_summary",
    "cost_text",
    "duration",
    "error_html",
    "error_text",
    "figures_line",
    "status_html",
]

IGNORE_MATHS = "mathjax_ignore"  # JupyterLab's MathJax does not typeset inside this class
_MESSAGE_CHARS = 300
_CODE_BLOCK = f'<pre class="{BLOCK_CLASS}">'
_MEASURABLE_MS = 100.0  # shorter generation times give meaningless rates: use the latency

ERROR_STYLE = (
    "border-left: 3px solid var(--jp-error-color1, #d32f2f); "
    "background: var(--jp-rendermime-error-background, #fdd); "
    "color: var(--jp-ui-font-color1, #222); "
    "padding: 4px 8px; margin: 4px 0; line-height: 1.4; white-space: normal"
)
STATUS_STYLE = (
    "font-size: var(--jp-ui-font-size0, 11px); color: var(--jp-ui-font-color2, #666); "
    "line-height: 1.4; white-space: normal"
)
# Status lines of calls that did not finish: a coloured rule and words ("Interrupted", "Failed").
_STATE_STYLE = {
    "interrupted": "border-left: 3px solid var(--jp-warn-color1, #f57c00); padding-left: 6px",
    "failed": "border-left: 3px solid var(--jp-error-color1, #d32f2f); padding-left: 6px",
}
_STATE_WORD_STYLE = {
    "interrupted": "color: var(--jp-warn-color0, #e65100); font-weight: 600",
    "failed": "color: var(--jp-error-color0, #b71c1c); font-weight: 600",
}


def duration(ms: float) -> str:
    """Milliseconds below a second, else seconds with two decimals.

    >>> duration(210), duration(2870)
    ('210 ms', '2.87 s')
    """
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def figures_line(result: ChatResult) -> str:
    """One line of plain text with a call's figures: model, tokens, tokens/s, latency, time to
    first token, cost (or "cost unknown"), attempts when there were retries, and "stopped at N
    tokens" when the token cap cut the answer.

    >>> figures_line(result)
    'gpt-4.1 · 12 prompt + 345 completion tokens · 120.3 tok/s · 2.87 s · ttft 210 ms · $0.0028'
    """
    usage = result.usage
    tilde = "~" if usage.estimated else ""
    tokens = f"{tilde}{usage.completion_tokens:,} completion tokens"
    if usage.prompt_tokens or not usage.estimated:  # an estimate without a prompt count: omit
        tokens = f"{tilde}{usage.prompt_tokens:,} prompt + {tokens}"
    parts = [result.model, tokens + (" (estimated)" if usage.estimated else "")]
    if result.cache_hit:  # nothing was sent: no rate, no latency, what it would have cost
        saved = "cost unknown" if result.saved_usd is None else money(result.saved_usd)
        return " · ".join([*parts, "from cache", f"saved {saved}"])
    generation_ms = result.latency_ms
    if result.ttft_ms is not None and result.latency_ms - result.ttft_ms >= _MEASURABLE_MS:
        generation_ms = result.latency_ms - result.ttft_ms  # the rate while tokens were arriving
    if usage.completion_tokens > 1 and generation_ms > 0:
        parts.append(f"{usage.completion_tokens / (generation_ms / 1000):,.1f} tok/s")
    parts.append(duration(result.latency_ms))
    if result.ttft_ms is not None:
        parts.append(f"ttft {duration(result.ttft_ms)}")
    parts.append("cost unknown" if result.cost_usd is None else money(result.cost_usd))
    if result.attempts > 1:
        parts.append(f"{result.attempts} attempts")
    if result.finish_reason == "length":
        parts.append(f"stopped at {tilde}{usage.completion_tokens:,} tokens (the max_tokens cap)")
    return " · ".join(parts)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 1] + "…"


def _error_parts(error: BaseException) -> tuple[str, str, str | None]:
    message = getattr(error, "message", None)
    if not isinstance(message, str):
        message = str(error)
    hint = getattr(error, "hint", None)
    return type(error).__name__, _first_line(message), hint if isinstance(hint, str) else None


def error_text(error: BaseException) -> str:
    """A short plain-text account of ``error``: class, first line of the message, the hint.

    >>> error_text(RateLimitError("429 Too Many Requests"))
    'RateLimitError: 429 Too Many Requests\\nHint: Lower concurrency=, set rpm=/tpm= ...'
    """
    name, message, hint = _error_parts(error)
    text = f"{name}: {message}" if message else name
    return f"{text}\nHint: {hint}" if hint else text


def error_html(error: BaseException) -> str:
    """A short, readable error box (HTML, everything escaped, theme colours): class, message,
    hint.

    >>> error_html(ValueError("<b>bad</b>"))
    '<div class="holynb-error mathjax_ignore" ...><strong>ValueError</strong>: &lt;b&gt;...'
    """
    name, message, hint = _error_parts(error)
    body = f"<strong>{escape_text(name)}</strong>"
    if message:
        body += f": {escape_text(message)}"
    if hint:
        body += f"<br><span>Hint: {escape_text(hint)}</span>"
    return f'<div class="holynb-error {IGNORE_MATHS}" style="{ERROR_STYLE}">{body}</div>'


def status_html(text: str, state: str = "done") -> str:
    """A status or figures line as HTML; ``state`` ``interrupted`` or ``failed`` marks it with
    a theme colour and puts its first word ("Interrupted", "Failed") in bold."""
    style = STATUS_STYLE
    body = escape_text(text)
    if state in _STATE_STYLE:
        style = f"{style}; {_STATE_STYLE[state]}"
        word, sep, rest = text.partition(" · ")
        if sep:
            body = (
                f'<span style="{_STATE_WORD_STYLE[state]}">{escape_text(word)}</span>'
                f"{sep}{escape_text(rest)}"
            )
    return (
        f'<div class="holynb-status holynb-{escape_text(state)} {IGNORE_MATHS}" '
        f'style="{style}">{body}</div>'
    )


def answer_html(html: str) -> str:
    """Sanitised answer HTML in JupyterLab's Markdown styles (harmless elsewhere), with the
    style sheet of its code blocks (``holynb.highlight.CODE_CSS``) when it has any."""
    style = f"<style>{CODE_CSS}</style>" if _CODE_BLOCK in html else ""
    return f'<div class="jp-RenderedHTMLCommon holynb-answer">{style}{html}</div>'


def cost_text(known_usd: float, unpriced_calls: int = 0) -> str:
    """A total that hides no unknown price: ``"$0.0123"``, ``"$0.0123 + 4 calls without a
    price"`` (the calls whose model has no known price are not in the dollar figure), and
    ``"cost unknown (4 calls without a price)"`` when nothing known was spent (never $0.00 for
    calls nobody priced)."""
    if not unpriced_calls:
        return money(known_usd)
    calls = f"{unpriced_calls} call{'' if unpriced_calls == 1 else 's'} without a price"
    if known_usd == 0:
        return f"cost unknown ({calls})"
    return f"{money(known_usd)} + {calls}"


def cost_summary(frame: Any) -> str:
    """What the rows of a result frame (``map``, ``compare``, batch results, a ledger) cost,
    as text: the known total, and how many rows used tokens of a model without a price.

    >>> holynb.cost_summary(df)
    'cost unknown (12 calls without a price)'
    """
    costs = frame["cost_usd"]
    used = (frame["prompt_tokens"].fillna(0) + frame["completion_tokens"].fillna(0)) > 0
    unpriced = int((costs.isna() & used).sum())
    return cost_text(float(costs.sum()), unpriced)
