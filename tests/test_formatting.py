"""One money format, the figures line and holynb's own HTML (never typeset as maths)."""

from __future__ import annotations

import pytest

from holynb.errors import BudgetExceededError
from holynb.formatting import error_html, figures_line, status_html
from holynb.interpreter.execution import ExecutionResult, RunManyResult
from holynb.render import render_markdown
from holynb.results import ChatResult, Usage
from holynb.units import money


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (0, "$0.00"),
        (0.00003, "$0.00003"),
        (0.0000261, "$0.0000261"),
        (0.0073, "$0.0073"),
        (0.0110, "$0.011"),
        (0.5, "$0.50"),
        (1.0, "$1.00"),
        (1234.5, "$1,234.50"),
        (1e-12, "<$0.000000001"),
        (None, "cost unknown"),  # no price: never shown as $0
    ],
)
def test_money_shows_enough_significant_digits(usd, text):
    assert money(usd) == text


def test_one_money_format_in_figures_cards_summaries_and_reprs():
    result = ChatResult("hi", "m", usage=Usage(3, 4), latency_ms=5.0, cost_usd=0.00003)
    assert figures_line(result).endswith("· $0.00003")
    card = ExecutionResult(True, "2", None, None, "local/python", cost_usd=0.00003)
    assert "$0.00003" in card.summary()
    assert "$0.00003" in RunManyResult([card])._repr_html_()


def test_an_answer_cut_by_the_token_cap_says_so():
    result = ChatResult("a b", "m", finish_reason="length", usage=Usage(3, 40), cost_usd=0.0)
    assert "stopped at 40 tokens" in figures_line(result)
    assert "stopped" not in figures_line(ChatResult("a", "m", finish_reason="stop"))


def test_holynb_html_is_never_typeset_as_maths():
    err = BudgetExceededError("Budget reached: spent $0.0073 of $0.0078")
    assert 'class="holynb-error mathjax_ignore"' in error_html(err)
    assert "mathjax_ignore" in status_html("m · $0.0073")
    failed = status_html("Failed · m · 0.1 s", "failed")
    assert "holynb-failed" in failed and "--jp-error-color" in failed


def test_currency_stays_text_and_maths_renders():
    html = render_markdown("a plan at $5 per user beats one at $40; and $x^2$, \\(y\\), $$z$$")
    assert html.count('<span class="mathjax_ignore">$</span>') == 2
    assert "\\(x^2\\)" in html and "\\(y\\)" in html and "\\[z\\]" in html
    # no other "$" is left for MathJax to pair up
    assert html.replace('<span class="mathjax_ignore">$</span>', "").count("$") == 0
    assert render_markdown("`$HOME`") == "<p><code>$HOME</code></p>\n"


def test_a_cached_answer_says_from_cache_and_what_it_saved_with_no_rate(local, tmp_path):
    from tests.helpers import session_for

    prices = {"local/echo": {"input": 3.0, "output": 15.0}}
    s = session_for(local, prices=prices, cache=tmp_path / "cache.sqlite")
    first = s.chat("Say hi")
    hit = s.chat("Say hi")
    assert hit.cache_hit and hit.saved_usd
    line = figures_line(hit)
    assert f"from cache · saved {money(hit.saved_usd)}" in line
    assert "tok/s" not in line and " ms" not in line and "$0.00" not in line.split("saved")[0]
    assert "tok/s" in figures_line(first) or first.usage.completion_tokens <= 1


def test_a_cost_estimates_repr_uses_the_money_format(local):
    from tests.helpers import session_for

    s = session_for(local, prices={"local/echo": {"input": 3.0, "output": 15.0}})
    estimate = s.estimate("Say hi", max_tokens=5)
    assert estimate.cost_usd is not None
    text = repr(estimate)
    assert money(estimate.cost_usd) in text and "e-0" not in text
