"""Session.compare, map with schema=, holynb.side_by_side and the multi-column live views, on
the local server (models that fail are registered on it: a 404 is an unknown model name)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any, Literal

import pandas as pd
import pydantic
import pytest

import holynb
from holynb.compare import astream_models, models_from
from holynb.errors import RateLimitError
from holynb.notebook.side_by_side import ColumnsView, PlainColumnsView, side_by_side, stream_to_view
from holynb.results import ChatResult, Usage
from holynb.server import LocalServer
from holynb.server.models import echo
from holynb.server.wire import RequestError
from tests.helpers import kernel_setup_cell, magic_shell, run_cell, session_for

XSS = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>'
PROMPTS = ["Say hi", "Say bye", "Say thanks"]


class Sentiment(pydantic.BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


def _busy(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    raise RequestError(429, "Rate limit reached for requests.", type="requests")


def _evil(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    return f"**bold** {XSS}"


@pytest.fixture(scope="module", autouse=True)
def extra_models(server: LocalServer) -> None:
    server.register_model("local/busy", _busy)  # always 429
    server.register_model("local/evil", _evil)  # answers with HTML that would run
    server.register_model("local/sleepy", lambda m, p: "late", latency_ms=3000)
    server.register_model("local/crawl", echo, tokens_per_second=10)  # 6+ s per answer


@pytest.fixture
def session(local: LocalServer) -> Iterator[holynb.Session]:
    s = session_for(local, log_path="")
    yield s
    s.close()


def _chat_log(server: LocalServer) -> list[dict[str, Any]]:
    return [e for e in server.requests_log if e["path"] == "/v1/chat/completions"]


# -- compare -----------------------------------------------------------------------------------


def test_compare_gives_one_row_per_prompt_and_model(session: holynb.Session) -> None:
    cmp = session.compare(PROMPTS, models=["local/echo", "local/json"], progress=False)
    assert list(cmp.columns[:4]) == ["prompt_index", "prompt", "model", "text"]
    assert len(cmp) == 6 and cmp["ok"].all()
    assert list(cmp["prompt_index"]) == [0, 0, 1, 1, 2, 2]
    assert list(cmp["model"]) == ["local/echo", "local/json"] * 3
    assert cmp.loc[0, "text"] == session.chat("Say hi").text


def test_prompt_index_holds_the_inputs_labels(session: holynb.Session) -> None:
    prompts = pd.Series(["a", "b"], index=["x", "y"])
    cmp = session.compare(prompts, models="local/echo,local/json", progress=False)
    assert list(cmp["prompt_index"]) == ["x", "x", "y", "y"]


def test_a_missing_model_fails_on_its_rows_only(session: holynb.Session) -> None:
    cmp = session.compare(PROMPTS, models=["local/echo", "local/missing"], progress=False)
    bad = cmp[cmp["model"] == "local/missing"]
    good = cmp[cmp["model"] == "local/echo"]
    assert not bad["ok"].any() and good["ok"].all()
    assert bad["error"].str.startswith("NotFoundError: ").all()
    assert good["text"].str.startswith("You said: Say").all()


def test_a_rate_limited_model_is_retried_then_fails_alone(
    session: holynb.Session, local: LocalServer
) -> None:
    cmp = session.compare(PROMPTS, models=["local/busy", "local/json"], progress=False)
    busy = cmp[cmp["model"] == "local/busy"]
    assert busy["error"].str.startswith("RateLimitError: ").all()
    assert (busy["attempts"] == 3).all()  # 1 + FAST_RETRY's 2 retries
    assert cmp[cmp["model"] == "local/json"]["ok"].all()
    sent = [e["model"] for e in _chat_log(local)]
    assert sent.count("local/busy") == 9 and sent.count("local/json") == 3


def test_a_model_that_times_out_fails_alone(local: LocalServer) -> None:
    s = session_for(local, log_path="", timeout=0.4, retry=holynb.RetryPolicy(max_retries=0))
    try:
        cmp = s.compare(PROMPTS[:2], models=["local/sleepy", "local/echo"], progress=False)
    finally:
        s.close()
    sleepy = cmp[cmp["model"] == "local/sleepy"]
    assert sleepy["error"].str.startswith("APITimeoutError: ").all()
    assert cmp[cmp["model"] == "local/echo"]["ok"].all()


def test_compare_with_a_checkpoint_sends_nothing_the_second_time(
    session: holynb.Session, local: LocalServer, tmp_path: Any
) -> None:
    path = tmp_path / "cmp.sqlite"
    first = session.compare(PROMPTS, ["local/echo", "local/json"], checkpoint=path, progress=False)
    sent = len(_chat_log(local))
    again = session.compare(PROMPTS, ["local/echo", "local/json"], checkpoint=path, progress=False)
    assert len(_chat_log(local)) == sent == 6
    assert again["cache_hit"].all() and list(again["text"]) == list(first["text"])


def test_compare_with_a_schema_adds_the_fields_for_every_model(
    session: holynb.Session, local: LocalServer
) -> None:
    cmp = session.compare(
        ["Classify: negative", "Classify: positive"],
        models=["local/json", "local/json-noformat"],
        schema=Sentiment,
        progress=False,
    )
    assert cmp["ok"].all()
    assert list(cmp["label"]) == ["negative", "negative", "positive", "positive"]
    assert list(cmp["confidence"]) == [0.5] * 4


def test_models_are_a_list_or_a_comma_separated_string() -> None:
    assert models_from(" a, b ,a") == ["a", "b"]
    assert models_from(["x", "y"]) == ["x", "y"]
    with pytest.raises(ValueError, match="model names"):
        models_from("a,,b")


# -- map with schema= ----------------------------------------------------------------------------


def test_map_with_a_schema_turns_fields_into_columns(session: holynb.Session) -> None:
    reviews = pd.DataFrame(
        {"review": ["loved it, positive", "holynb: invalid-always", "neutral, fine"]},
        index=["r1", "r2", "r3"],
    )
    df = session.map(
        reviews, template="Classify: {review}", schema=Sentiment, model="local/json", progress=False
    )
    assert list(df.index) == ["r1", "r2", "r3"]
    assert df.loc["r1", "label"] == "positive" and df.loc["r3", "label"] == "neutral"
    assert df["confidence"].dtype == "float64"
    assert not df.loc["r2", "ok"] and pd.isna(df.loc["r2", "label"])
    assert df.loc["r2", "error"].startswith("SchemaValidationError: ")
    assert "\nHint:" not in df.loc["r2", "error"]
    assert df.loc["r2", "attempts"] == 2  # the call and its repair, both recorded
    assert len(session.ledger) == 4


def test_map_with_a_schema_resumes_from_the_checkpoint_with_its_columns(
    session: holynb.Session, local: LocalServer, tmp_path: Any
) -> None:
    path = tmp_path / "run.sqlite"
    prompts = ["Classify: negative", "Classify: neutral"]
    first = session.map(prompts, schema=Sentiment, model="local/json", checkpoint=path)
    sent = len(_chat_log(local))
    again = session.map(prompts, schema=Sentiment, model="local/json", checkpoint=path)
    assert len(_chat_log(local)) == sent == 2
    assert list(again["label"]) == list(first["label"]) == ["negative", "neutral"]


def test_a_field_named_like_a_map_column_gets_a_prefix(session: holynb.Session) -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    df = session.map(["hello"], schema=schema, model="local/json", progress=False)
    assert df.loc[0, "answer_text"] == "hello" and df.loc[0, "text"] == '{"text": "hello"}'


# -- side_by_side ------------------------------------------------------------------------------


def _compare_frame(session: holynb.Session) -> pd.DataFrame:
    return session.compare(
        ["Say <script>hi</script>", "Say bye"],
        models=["local/evil", "local/echo", "local/missing"],
        progress=False,
    )


def test_side_by_side_has_one_row_per_prompt_and_a_group_per_model(
    session: holynb.Session,
) -> None:
    wide = side_by_side(_compare_frame(session)).frame
    assert len(wide) == 2
    assert list(dict.fromkeys(wide.columns.get_level_values(0))) == [
        "local/evil",
        "local/echo",
        "local/missing",
    ]
    assert {"text", "cost_usd", "latency_ms"} <= set(wide.columns.get_level_values(1))
    assert wide.loc[1, ("local/echo", "text")].startswith("You said: Say bye.")


def test_side_by_side_html_is_sanitised(session: holynb.Session) -> None:
    html = side_by_side(_compare_frame(session))._repr_html_()
    assert "<strong>bold</strong>" in html  # Markdown is rendered
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;hi&lt;/script&gt;" in html  # the prompt is escaped
    assert "NotFoundError" in html and "mathjax_ignore" in html


def test_side_by_side_plain_text_is_readable(session: holynb.Session) -> None:
    text = repr(side_by_side(_compare_frame(session)))
    assert text.startswith("[0] Say <script>hi</script>\n  ── local/evil ($0.00 · ")
    assert "  ── local/missing" in text and "NotFoundError: " in text
    assert "\n\n[1] Say bye\n" in text


def test_side_by_side_is_exported_and_refuses_other_frames(session: holynb.Session) -> None:
    assert holynb.side_by_side is side_by_side
    with pytest.raises(ValueError, match="compare"):
        holynb.side_by_side(session.map(["x"], progress=False))


# -- several live streams ----------------------------------------------------------------------


def test_astream_models_keeps_going_when_one_model_fails(session: holynb.Session) -> None:
    async def collect() -> list[tuple[int, str, Any]]:
        try:
            models = ["local/echo", "local/missing", "local/json"]
            return [e async for e in astream_models(session, "hi", models)]
        finally:
            await session.aclose()

    events = asyncio.run(collect())
    endings = {i: kind for i, kind, _ in events if kind != "text"}
    assert endings == {0: "done", 1: "failed", 2: "done"}
    text0 = "".join(p for i, kind, p in events if i == 0 and kind == "text")
    done0 = next(p for i, kind, p in events if i == 0 and kind == "done")
    assert isinstance(done0, ChatResult) and done0.text == text0 and done0.model == "local/echo"


def _result(model: str, text: str) -> ChatResult:
    usage = Usage(prompt_tokens=5, completion_tokens=3)
    return ChatResult(text=text, model=model, usage=usage, latency_ms=120.0, cost_usd=0.0)


def test_columns_view_puts_one_stream_view_per_model_side_by_side() -> None:
    view = ColumnsView(["m1", "m2"])
    assert len(view.widget.children) == 2
    view.append(0, "Hello ")
    view.append(1, XSS)
    view.finish(0, _result("m1", "Hello there"))
    assert view.states == ["done", "streaming"]
    view.fail(1, RateLimitError("HTTP 429", status=429))
    assert view.states == ["done", "failed"]
    html = view.static_html()
    assert "Hello there" in html and "RateLimitError" in html
    assert "<script" not in html and "<img" not in html
    assert html.count("holynb-status") == 2  # one status line per column


def test_plain_columns_view_prints_each_answer_under_a_heading_in_order() -> None:
    out = io.StringIO()
    view = PlainColumnsView(["m1", "m2"], out=out)
    view.append(1, "second")
    view.finish(1, _result("m2", "second"))
    assert out.getvalue() == ""  # nothing until every answer has ended
    view.append(0, "first")
    view.fail(0, RateLimitError("HTTP 429", status=429))
    text = out.getvalue()
    assert text.index("── m1 ──\nfirst\nRateLimitError: HTTP 429") < text.index("── m2 ──\nsecond")
    assert "m2 · 5 prompt + 3 completion tokens" in text


# -- %%llm -m a,b,c ----------------------------------------------------------------------------


@pytest.fixture
def shell(local: LocalServer) -> Iterator[Any]:
    yield from magic_shell(session_for(local, log_path=""))


def test_magic_with_several_models_prints_each_answer_under_a_heading(
    shell: Any, capsys: Any
) -> None:
    run_cell(shell, "%%llm -m local/echo,local/missing,local/json -o cmp\nhello there")
    out = capsys.readouterr().out
    echo, missing, json_ = (
        out.index(f"── {m} ──") for m in ("local/echo", "local/missing", "local/json")
    )
    assert echo < missing < json_
    assert "You said: hello there" in out[echo:missing]
    assert "NotFoundError" in out[missing:json_]
    cmp = shell.user_ns["cmp"]
    assert list(cmp["model"]) == ["local/echo", "local/missing", "local/json"]
    assert list(cmp["ok"]) == [True, False, True] and list(cmp.columns[:3]) == [
        "prompt_index",
        "prompt",
        "model",
    ]
    assert (cmp["prompt"].str.strip() == "hello there").all()
    assert shell.user_ns["_llm"]["local/echo"].startswith("You said: hello there")
    assert holynb.side_by_side(cmp).models == list(cmp["model"])


def test_magic_with_several_models_sends_the_options_to_each(
    shell: Any, local: LocalServer
) -> None:
    run_cell(shell, '%%llm -m "local/echo, local/json" -s "be brief" --max-tokens 7\nhi')
    bodies = [e["body"] for e in _chat_log(local)]
    assert sorted(b["model"] for b in bodies) == ["local/echo", "local/json"]
    assert all(b["max_tokens"] == 7 and b["messages"][0]["content"] == "be brief" for b in bodies)


def test_magic_refuses_chat_with_several_models(shell: Any, local: LocalServer) -> None:
    result = shell.run_cell("%%llm --chat -m local/echo,local/json\nhi")
    assert "--chat takes one model" in str(result.error_in_exec)
    assert not _chat_log(local)


def test_magic_with_several_models_streams_into_columns_in_a_widget_frontend(
    shell: Any, monkeypatch: Any
) -> None:
    from holynb.notebook import side_by_side as sidebyside

    made: list[ColumnsView] = []

    def widget_view(models: Any, **kwargs: Any) -> ColumnsView:
        made.append(ColumnsView(models, **kwargs))
        return made[-1]

    monkeypatch.setattr(sidebyside, "make_columns_view", widget_view)
    run_cell(shell, "%%llm -m local/echo,local/slow --max-tokens 20\nhi")
    (view,) = made
    assert view.states == ["done", "done"]
    assert all(v.renders >= 1 for v in view.views)
    assert "You said: hi" in view.views[1].text
    assert "local/slow · " in view.views[1].status_html


def test_several_models_in_a_real_kernel_print_headings_and_show_sanitised_columns(
    local: LocalServer,
) -> None:
    import textwrap

    import nbformat
    from nbclient import NotebookClient

    sources = [
        kernel_setup_cell(local),
        "%%llm -m local/evil,local/echo -o cmp\nhello kernel",
        "holynb.side_by_side(cmp)",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in sources]
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=False).execute()
    magic, table = nb.cells[1], nb.cells[2]
    stdout = "".join(o.get("text", "") for o in magic.outputs if o.output_type == "stream")
    assert stdout.index("── local/evil ──") < stdout.index("── local/echo ──\nYou said: hello")
    html = [o["data"]["text/html"] for o in magic.outputs + table.outputs if "data" in o]
    assert len(html) == 2 and all("<img" not in h and "<script" not in h for h in html)
    plain = table.outputs[0]["data"]["text/plain"]
    assert plain.startswith("[0] hello kernel\n  ── local/evil ($0.00 · ")


def test_compare_takes_a_single_prompt_or_message_list(session: holynb.Session) -> None:
    one = session.compare("Say hi", models=["local/echo", "local/json"], progress=False)
    messages = [{"role": "user", "content": "Say hi"}]
    two = session.compare(messages, models=["local/echo", "local/json"], progress=False)
    assert len(one) == len(two) == 2 and list(one["text"]) == list(two["text"])


def test_an_interrupt_stops_every_column_and_keeps_what_arrived(session: holynb.Session) -> None:
    import os
    import signal
    import threading

    out = io.StringIO()
    view = PlainColumnsView(["local/crawl", "local/echo"], out=out)
    timer = threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        frame = stream_to_view(session, "hi", ["local/crawl", "local/echo"], view)
    finally:
        timer.cancel()
    assert view.states == ["interrupted", "done"]
    crawl = frame.iloc[0]
    assert not crawl["ok"] and crawl["error"].startswith("Interrupted")
    assert crawl["text"] and "You said: hi".startswith(crawl["text"][:11])
    assert frame.iloc[1]["ok"]
    assert "── local/crawl ──" in out.getvalue() and "Interrupted · " in out.getvalue()
    interrupted = [r for r in session.records if r.model == "local/crawl"]
    assert len(interrupted) == 1 and interrupted[0].interrupted  # the ledger has what arrived


def test_identical_requests_in_one_compare_are_sent_once(
    session: holynb.Session, local: LocalServer
) -> None:
    cmp = session.compare(["Say hi", "Say bye", "Say hi"], ["local/echo", "local/json"],
                          progress=False)  # fmt: skip
    assert len(_chat_log(local)) == 4  # two prompts, two models
    assert len(cmp) == 6 and cmp["ok"].all()
    assert cmp["duplicate_of"].tolist() == [None, None, None, None, 0, 1]
    assert cmp.loc[4, "text"] == cmp.loc[0, "text"] and cmp.loc[5, "model"] == "local/json"
