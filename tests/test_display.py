"""The views: coalesced updates, final figures, errors, the Stop button, choosing a view."""

from __future__ import annotations

import asyncio
import io
import re
import textwrap
from types import SimpleNamespace
from typing import Any, ClassVar

import comm
import nbformat
import pytest
from comm.base_comm import BaseComm
from nbclient import NotebookClient

from holynb.errors import ConfigurationError, NotFoundError, RateLimitError, StreamError
from holynb.notebook import display
from holynb.notebook.display import (
    MAX_UPDATES_PER_SECOND,
    PlainView,
    StreamView,
    answer_card_html,
    display_mode,
    error_html,
    error_text,
    figures_line,
    make_view,
)
from holynb.render import render_markdown
from holynb.results import ChatResult, Usage
from holynb.server import faults
from tests.helpers import session_for

XSS = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>'


class FakeClock:
    """Stands in for ``time`` inside holynb.notebook.display: each append costs ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock(step=0.001)
    monkeypatch.setattr(display, "time", fake)
    return fake


class CountingComm(BaseComm):
    """A comm that records what it would send to the frontend."""

    sent: ClassVar[list[tuple[str, Any]]] = []

    def publish_msg(self, msg_type: str, data: Any = None, *args: Any, **keys: Any) -> None:
        CountingComm.sent.append((msg_type, data))


@pytest.fixture
def comms(monkeypatch) -> list[tuple[str, Any]]:
    CountingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: CountingComm(*a, **k))
    return CountingComm.sent


def result(text: str, **kwargs: Any) -> ChatResult:
    fields: dict[str, Any] = {
        "model": "m",
        "usage": Usage(prompt_tokens=12, completion_tokens=345),
        "latency_ms": 2870.0,
        "ttft_ms": 210.0,
        "cost_usd": 0.0028,
    }
    fields.update(kwargs)
    return ChatResult(text=text, **fields)


def words(n: int) -> list[str]:
    return [f"w{i} " if i % 50 else f"w{i}\n\n" for i in range(n)]


# -- coalescing --------------------------------------------------------------------------------


def test_tight_loop_of_appends_renders_only_a_few_times():
    view = StreamView("m")
    parts = words(10_000)
    for text in parts:
        view.append(text)
    assert view.renders <= 5
    assert view.text == "".join(parts)


def test_renders_are_capped_per_second_of_stream(clock):
    view = StreamView("m")  # 10,000 tokens at 1,000 tokens/s: a 10-second stream
    for text in words(10_000):
        clock.now += clock.step
        view.append(text)
    assert view.renders <= 10 * MAX_UPDATES_PER_SECOND + 1
    assert view.renders >= 10 * MAX_UPDATES_PER_SECOND - 5


def test_slow_stream_renders_every_token(clock):
    view = StreamView("m")
    for text in words(20):
        clock.now += 0.5  # 2 tokens/s
        view.append(text)
    assert view.renders == 20


async def test_text_held_back_is_shown_when_the_stream_pauses():
    view = StreamView("m")  # inside an event loop, as a --bg task runs
    view.append("first ")
    view.append("second")  # too soon after the first render: held back
    assert "second" not in view.answer_html
    await asyncio.sleep(2 / MAX_UPDATES_PER_SECOND)
    assert "first second" in view.answer_html


async def test_ending_cancels_the_pending_refresh():
    view = StreamView("m")
    view.append("a")
    view.append("b")
    view.finish(result("ab"))
    renders = view.renders
    await asyncio.sleep(2 / MAX_UPDATES_PER_SECOND)
    assert view.renders == renders


def test_slow_rendering_stretches_the_interval(clock):
    progress = display.Progress("m", None, min_interval=1 / 16)
    progress.refreshed(cost_s=0.1)  # a render that took 100 ms
    assert progress.due == pytest.approx(0.5)  # rendering may use at most a fifth of the time


def test_finish_shows_the_whole_answer_rendered_once(clock):
    parts = words(3_000)
    view = StreamView("m")
    for text in parts:
        clock.now += clock.step
        view.append(text)
    view.finish(result("".join(parts)))
    assert view.answer_html.replace('<div class="jp-RenderedHTMLCommon holynb-answer">', "") \
        .replace("</div>", "") == render_markdown("".join(parts))  # fmt: skip
    assert view.state == "done"


def test_settled_blocks_are_sent_once(clock, comms):
    view = StreamView("m")
    for text in words(10_000):
        clock.now += clock.step
        view.append(text)
    view.finish(result(view.text))
    opened = [d for kind, d in comms if kind == "comm_open"]
    updates = [d for kind, d in comms if kind == "comm_msg"]
    # each render sends the tail and the status line; settled chunks open one widget each
    assert len(updates) <= 3 * view.renders + len(opened)
    sent = sum(len(str(d)) for _, d in comms)
    assert sent < 20 * len(view.text)  # not the whole answer on every update
    assert len(opened) >= 10


def test_model_text_is_sanitised_in_the_widget():
    view = StreamView("m")
    view.append(XSS)
    view.flush()
    assert "<img" not in view.answer_html and "<script" not in view.answer_html
    view.finish(result(XSS))
    assert "<img" not in view.answer_html and "&lt;script&gt;" in view.answer_html


def test_model_name_is_escaped_in_the_status_line():
    view = StreamView("<b>evil</b>")
    view.append("hi")
    assert "<b>evil" not in view.status_html and "&lt;b&gt;evil" in view.status_html


# -- status and final figures ------------------------------------------------------------------


def test_status_shows_tokens_rate_elapsed_and_cost(clock):
    view = StreamView("gpt-x", cost_of=lambda tokens: tokens * 0.001)
    for text in words(11):
        clock.now += 0.1
        view.append(text)
    view.flush()
    status = re.sub("<[^>]+>", "", view.status_html)
    assert status == "gpt-x · 11 tokens · 10.0 tok/s · 1.1 s · $0.011 so far"


def test_a_call_that_failed_with_nothing_shows_no_cost_so_far(clock):
    view = StreamView("gpt-x", cost_of=lambda tokens: tokens * 0.001)
    clock.now += 0.4
    view.fail(NotFoundError("HTTP 404: no such model", status=404))
    status = re.sub("<[^>]+>", "", view.status_html)
    assert status.startswith("Failed · gpt-x · no answer · 0.4 s"), status
    assert "so far" not in status and "$" not in status, status


def test_status_says_cost_unknown_when_the_price_is():
    view = StreamView("m", cost_of=lambda tokens: None)
    view.append("a")
    assert "cost unknown" in view.status_html


def test_figures_line():
    line = figures_line(result("x", attempts=2))
    assert line == (
        "m · 12 prompt + 345 completion tokens · 129.7 tok/s · 2.87 s · ttft 210 ms · $0.0028 · "
        "2 attempts"
    )


def test_figures_line_marks_estimates_and_unknown_cost():
    r = result("x", usage=Usage(completion_tokens=5, estimated=True), cost_usd=None)
    line = figures_line(r)
    assert "~5 completion tokens (estimated)" in line and line.endswith("cost unknown")


def test_finish_shows_the_final_figures_and_hides_stop():
    view = StreamView("m")
    view.set_stop(lambda: None)
    view.append("Hello")
    view.finish(result("Hello"))
    assert figures_line(result("Hello")) in view.status_html
    assert view._stop.layout.display == "none"


# -- stop, interrupt, errors -------------------------------------------------------------------


def test_stop_button_appears_with_a_callback_and_calls_it():
    calls = []
    view = StreamView("m")
    assert view._stop.layout.display == "none"
    view.set_stop(lambda: calls.append("stop"))
    assert view._stop.layout.display is None
    view._stop.click()
    assert calls == ["stop"] and view._stop.disabled


def test_interrupted_keeps_the_partial_answer():
    view = StreamView("m")
    view.append("Partial **answer**")
    view.interrupted(result("Partial **answer**", interrupted=True))
    assert "<strong>answer</strong>" in view.answer_html
    assert "Interrupted · m · 12 prompt" in re.sub("<[^>]+>", "", view.status_html)
    assert "holynb-interrupted" in view.status_html and "--jp-warn-color" in view.status_html
    assert view.state == "interrupted"


def test_error_box_shows_class_message_and_hint_escaped():
    err = RateLimitError("429 <b>slow down</b>\nsecond line", status=429)
    html = error_html(err)
    assert "<strong>RateLimitError</strong>: 429 &lt;b&gt;slow down&lt;/b&gt;" in html
    assert "second line" not in html
    assert f"Hint: {err.hint}" in html.replace("&#x27;", "'")


def test_error_text_for_plain_frontends():
    err = RateLimitError("429 Too Many Requests", status=429, hint="Wait a minute.")
    assert error_text(err) == "RateLimitError: 429 Too Many Requests\nHint: Wait a minute."
    assert error_text(ValueError("bad\nvalue")) == "ValueError: bad"


def test_fail_keeps_partial_text_and_shows_the_box():
    view = StreamView("m")
    view.append("Half an")
    err = StreamError("The stream was cut", partial=result("Half an answer"))
    view.fail(err)
    assert "Half an answer" in view.answer_html
    assert "StreamError" in view._error.value and view._error.layout.display is None
    assert "Failed · m" in re.sub("<[^>]+>", "", view.status_html) and view.state == "failed"
    assert "holynb-failed" in view.status_html and "--jp-error-color" in view.status_html


def test_pricing_failure_does_not_break_the_view():
    def broken(tokens: int) -> float:
        raise RuntimeError("no prices")

    view = StreamView("m", cost_of=broken)
    view.append("a")
    assert "cost unknown" in view.status_html


# -- what plain-text frontends see -------------------------------------------------------------


def test_widget_bundle_has_no_raw_widget_repr():
    view = StreamView("m")
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "VBox" not in bundle["text/plain"] and "streaming" not in bundle["text/plain"]
    view.finish(result("Final answer"))
    assert view._repr_mimebundle_()["text/plain"] == "Final answer"


def test_plain_view_streams_text_then_the_figures_line():
    out = io.StringIO()
    view = PlainView("m", out=out)
    for text in ["Hello", ", ", "world"]:
        view.append(text)
    view.finish(result("Hello, world"))
    assert out.getvalue() == "Hello, world\n" + figures_line(result("Hello, world")) + "\n"


def test_plain_view_prints_an_answer_that_was_not_streamed():
    out = io.StringIO()
    PlainView("m", out=out).finish(result("Whole"))
    assert out.getvalue().startswith("Whole\nm · ")


def test_plain_view_writes_errors_to_stderr():
    out, err = io.StringIO(), io.StringIO()
    view = PlainView("m", out=out, err=err)
    view.append("partial")
    view.fail(RateLimitError("429", status=429, hint="Wait."))
    assert out.getvalue() == "partial\n"
    assert err.getvalue() == "RateLimitError: 429\nHint: Wait.\n"


def test_plain_view_says_interrupted():
    out = io.StringIO()
    view = PlainView("m", out=out)
    view.append("part")
    view.interrupted(result("part"))
    assert out.getvalue().splitlines()[1].startswith("Interrupted · m · ")


def test_result_card_is_sanitised_and_deterministic():
    assert answer_card_html(XSS) == answer_card_html(XSS)
    assert "<img" not in answer_card_html(XSS)


# -- choosing a view ---------------------------------------------------------------------------


def shell_with(metadata: dict[str, Any] | None) -> Any:
    if metadata is None:
        return SimpleNamespace()  # terminal IPython: no kernel
    parent = {"header": {"msg_type": "execute_request"}, "metadata": metadata}
    return SimpleNamespace(kernel=SimpleNamespace(get_parent=lambda: parent))


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("HOLYNB_DISPLAY", raising=False)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"cellId": "4f7c", "recordTiming": False, "deletedCells": []}, "widget"),  # JupyterLab
        ({"cellId": "vscode-notebook-cell:/a.ipynb#W1sZmlsZQ=="}, "widget"),  # VS Code
        ({}, "text"),  # nbclient, nbval, papermill, jupyter console
        (None, "text"),  # terminal IPython
    ],
)
def test_auto_mode_follows_the_frontend(no_env, metadata, expected):
    assert display_mode(shell=shell_with(metadata)) == expected


def test_plain_python_gets_text(no_env, monkeypatch):
    monkeypatch.setattr(display, "ipython_shell", lambda: None)
    assert isinstance(make_view("m"), PlainView)


def test_make_view_in_a_rich_frontend_gives_the_widget(no_env, monkeypatch):
    monkeypatch.setattr(display, "ipython_shell", lambda: shell_with({"cellId": "x"}))
    assert isinstance(make_view("m"), StreamView)


def test_env_override_wins_over_detection(monkeypatch):
    monkeypatch.setenv("HOLYNB_DISPLAY", "text")
    assert display_mode(shell=shell_with({"cellId": "x"})) == "text"
    monkeypatch.setenv("HOLYNB_DISPLAY", "Widget")
    assert display_mode(shell=shell_with(None)) == "widget"


def test_mode_argument_wins_over_env(monkeypatch):
    monkeypatch.setenv("HOLYNB_DISPLAY", "text")
    assert display_mode("widget") == "widget"
    assert display_mode("auto", shell=shell_with({"cellId": "x"})) == "widget"


def test_bad_mode_says_what_to_use(monkeypatch):
    monkeypatch.setenv("HOLYNB_DISPLAY", "fancy")
    with pytest.raises(ConfigurationError, match="HOLYNB_DISPLAY must be 'widget', 'text'"):
        display_mode()


def test_missing_ipywidgets_falls_back_to_text(monkeypatch):
    monkeypatch.setattr(display, "_widgets_available", lambda: False)
    assert display_mode("widget") == "text"


# -- in a real kernel run by nbclient (what nbval does) ----------------------------------------

CELL = """
import holynb
from holynb.notebook.display import make_view
s = holynb.Session(model={model!r}, base_url={url!r}, api_key={key!r})
view = make_view(s.model)
print(type(view).__name__)
view.show()
for text in s.stream("hello"):
    view.append(text)
view.finish(s.last_result)
"""


def run_cell(source: str) -> list[dict[str, Any]]:
    """Run one cell in a fresh kernel (it inherits this process's environment)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source))]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    return nb.cells[0].outputs


def _masked(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # numbers (times, rates) change from run to run: what nbval's sanitisers mask
    return [
        {key: re.sub(r"\d[\d.,]*", "N", value) for key, value in o["data"].items()}
        for o in outputs
        if o["output_type"] == "display_data"
    ]


def test_every_frontend_stores_one_rendered_answer_with_its_figures(local, monkeypatch):
    # nbclient/nbval (the plain view) and JupyterLab (the widget, replaced when the answer is
    # complete) leave the same single output: re-running a tutorial in Lab changes nothing nbval
    # compares, and no plain-text copy of the answer is printed besides it.
    local.register_model("local/xss", lambda messages, params: f"**Bold** {XSS}")
    source = CELL.format(model="local/xss", url=local.base_url, key=local.api_key.get())
    monkeypatch.setenv("HOLYNB_DISPLAY", "text")
    plain = run_cell(source)
    monkeypatch.setenv("HOLYNB_DISPLAY", "widget")
    widget = run_cell(source)
    for outputs, kind in ((plain, "PlainView"), (widget, "StreamView")):
        stdout = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        assert stdout == kind + "\n"  # only the cell's own print
        (final,) = [o for o in outputs if o.output_type == "display_data"]
        assert set(final.data) == {"text/html", "text/plain"}
        answer, figures = final.data["text/plain"].split("\n\n")
        assert answer == f"**Bold** {XSS}" and figures.startswith("local/xss · ")
        html = final.data["text/html"]
        assert "<strong>Bold</strong>" in html and "local/xss · " in html
        assert "<img" not in html and "<script" not in html
    assert _masked(plain) == _masked(widget)


def test_a_background_answer_is_stored_as_html_not_as_a_widget(local, monkeypatch):
    # a --bg call finishes on another thread: its widget is replaced all the same, in the cell
    # that started it, by the answer as HTML and a text/plain copy of the answer itself
    monkeypatch.setenv("HOLYNB_DISPLAY", "widget")
    source = f"""
    import threading
    import holynb
    from holynb.notebook.display import make_view
    s = holynb.Session(model="local/echo", base_url={local.base_url!r},
                       api_key={local.api_key.get()!r})
    view = make_view(s.model).show()

    def work():
        for text in s.stream("in the background"):
            view.append(text)
        view.finish(s.last_result)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    """
    outputs = run_cell(source)
    (final,) = [o for o in outputs if o.output_type == "display_data"]
    assert set(final.data) == {"text/html", "text/plain"}
    assert final.data["text/plain"].startswith("You said: in the background")
    assert "streaming answer" not in final.data["text/plain"]
    assert "holynb-answer" in final.data["text/html"]


def test_interrupt_keeps_the_partial_answer_in_view_and_ledger(local, no_env):
    source = f"""
    import os, signal, threading
    import holynb
    from holynb.notebook.display import make_view
    s = holynb.Session(model="local/slow", base_url={local.base_url!r},
                      api_key={local.api_key.get()!r})
    view = make_view(s.model)
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        for text in s.stream("hello"):
            view.append(text)
    except KeyboardInterrupt:
        view.interrupted(s.last_result)
    print(s.records[-1].interrupted, len(s.last_result.text) > 0)
    """
    outputs = run_cell(source)
    assert not [o for o in outputs if o.output_type == "error"]
    stdout = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert stdout.strip() == "True True"
    (final,) = [o for o in outputs if o.output_type == "display_data"]
    answer, status = final.data["text/plain"].split("\n\n")
    assert answer and status.startswith("Interrupted · local/slow · ")
    assert "holynb-interrupted" in final.data["text/html"]


def test_session_stream_through_the_widget(local):
    s = session_for(local)
    view = StreamView(s.model, cost_of=lambda tokens: 0.0)
    for text in s.stream("hello"):
        view.append(text)
    view.finish(s.last_result)
    assert view.text == s.last_result.text
    assert figures_line(s.last_result) in view.status_html.replace("&#x27;", "'")


@pytest.mark.parametrize("finish", ["finish", "interrupted"])
def test_the_note_ends_the_status_and_figures_lines_of_both_views(finish):
    note = "+ In[3] and traceback of In[4]"
    widget = StreamView("gpt-4.1", note=note)
    plain = PlainView("gpt-4.1", note=note, out=io.StringIO())
    widget.append("partial")
    assert widget.note == note and note in widget.status_html
    for view in (widget, plain):
        getattr(view, finish)(result("answer"))
    assert widget.status_html.endswith(f"$0.0028 · {note}</div>")
    assert plain._out.getvalue().endswith(f"$0.0028 · {note}\n")


def test_the_status_line_ticks_while_waiting_and_shows_retries(local, comms):
    local.faults.push(faults.status(429, retry_after=0.3))  # the first attempt: retried
    local.faults.push(faults.delay(1.2))  # the second: a slow first token
    s = session_for(local)
    view = StreamView(s.model)
    seen: list[str] = []
    view._status.observe(lambda change: seen.append(re.sub("<[^>]+>", "", change["new"])), "value")
    view.show()
    stream = s.stream("hello")
    stream.on_retry = view.retrying
    for text in stream:
        view.append(text)
    view.finish(stream.result)
    assert any("429, retrying 1/" in line and " in 0.3 s" in line for line in seen), seen
    before_text = [line for line in seen if " token" not in line.split(" · ")[1]]
    clocks = {line.rsplit(" · ", 1)[-1] for line in before_text}
    assert len(clocks) >= 3, before_text  # the clock moved while no token came
    assert "Interrupted" not in seen[-1] and "waiting" not in seen[-1]
