"""What a magic cell says when something goes wrong, and the notebook newcomer's small snags:
hints in the magic's words, interrupted calls, budget refusals, `%llm config` on the local
server, the local server's default model and the top-level exports."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import holynb
from holynb.errors import (
    BudgetExceededError,
    JSONExtractionError,
    NotFoundError,
    StreamError,
    plain_message,
)
from holynb.notebook import magics
from holynb.notebook.display import StreamView
from holynb.notebook.magic_errors import for_magic
from tests.helpers import CHILD_ENV, session_for

PRICES = {"local/echo": {"input": 3.0, "output": 15.0}}
PYTHON_WORDS = ("err.partial", "err.raw", "Session.models()", "response_format", "Session(")
JARGON = ("TransferEncodingError", "ServerDisconnectedError", "ConnectionRefusedError",
          "message:", "aiohttp", "httpx", "Errno")  # fmt: skip


@pytest.fixture
def shell(local):
    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext holynb")
    magics.set_default_session(session_for(local, max_retries=0))
    yield sh
    sh.run_cell("%llm --new")


def cell_error(shell, capsys, source):
    result = shell.run_cell(source, store_history=True)
    assert result.error_in_exec is None, result.error_in_exec
    captured = capsys.readouterr()
    return captured.out + captured.err


def assert_magic_words(text):
    for word in PYTHON_WORDS + JARGON:
        assert word not in text, (word, text)


# -- (7) hints name what the cell can do; no library jargon ------------------------------------


def test_a_cut_stream_says_the_connection_closed_and_o_keeps_the_partial(shell, local, capsys):
    local.faults.push("cut:5")
    text = cell_error(shell, capsys, "%%llm -o part\nwrite a long story about ducks please")
    assert "StreamError: The connection closed mid-answer, after 5 chunks." in text
    assert "-o VAR" in text
    assert_magic_words(text)
    kept = shell.user_ns["part"]
    assert isinstance(kept, holynb.ChatResult) and kept.text


def test_an_unknown_model_points_to_percent_llm_models(shell, local, capsys):
    text = cell_error(shell, capsys, "%%llm -m no/such-model\nhello")
    assert "NotFoundError" in text
    assert "%llm models" in text and "%llm config model=" in text
    assert_magic_words(text)


def test_a_server_that_is_down_is_said_in_plain_words(shell, capsys):
    magics.set_default_session(holynb.Session(model="m", base_url="http://127.0.0.1:9",
                                              api_key="k", max_retries=0))  # fmt: skip
    text = cell_error(shell, capsys, "%llm hello")
    assert "Could not talk to http://127.0.0.1:9: nothing answered there" in text
    assert "%llm config" in text and "holynb serve" in text
    assert_magic_words(text)


def test_a_dropped_connection_is_said_in_plain_words(shell, local, capsys):
    local.faults.push("drop")
    text = cell_error(shell, capsys, "%llm hello")
    assert "the server closed the connection" in text
    assert_magic_words(text)


def test_a_budget_refusal_in_a_cell_names_the_magic_options(shell, local, capsys):
    magics.set_default_session(session_for(local, budget_usd=0.0000001, prices=PRICES))
    text = cell_error(shell, capsys, "%%llm --max-tokens 50\nhello")
    assert "it was not sent" in text
    assert "%llm config budget=" in text and "--max-tokens" in text
    assert "session.budget_usd" not in text
    assert local.stats.requests == 0


def test_json_that_cannot_be_read_points_to_llm_not_err_raw(shell, local, capsys):
    local.register_model("prose", lambda m, p: "no json here, sorry")
    result = shell.run_cell("%%llm -m prose -f json\ngive me json", store_history=True)
    assert isinstance(result.error_in_exec, UsageError)  # a magic error fails the cell
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "_llm" in text and "JSON only" in text
    assert_magic_words(text)


def test_interpret_cards_say_connection_failures_in_plain_words(shell, local, capsys):
    magics.set_default_session(holynb.Session(model="m", base_url="http://127.0.0.1:9",
                                              api_key="k", max_retries=0))  # fmt: skip
    text = cell_error(shell, capsys, "%%interpret\nprint(1)")
    assert "nothing answered there (connection refused)" in text
    assert_magic_words(text)


def test_python_callers_keep_the_python_hints(local):
    s = session_for(local, max_retries=0)
    local.faults.push("cut:3")
    with pytest.raises(StreamError) as info:
        for _ in s.stream("tell me a long story about ducks"):
            pass
    assert "err.partial" in str(info.value) and "err.partial" in info.value.hint
    shown = for_magic(info.value)
    assert "err.partial" not in shown.hint and shown.partial is info.value.partial
    assert "err.partial" in info.value.hint  # the original is untouched
    with pytest.raises(NotFoundError) as info:
        s.chat("x", model="no/such")
    assert "Session.models()" in info.value.hint
    assert "%llm models" in for_magic(info.value).hint
    err = JSONExtractionError("No JSON found.\nHint: the full reply is in err.raw.", raw="x")
    assert for_magic(err).message == "No JSON found."


def test_plain_message_keeps_messages_without_jargon():
    assert plain_message("HTTP 503 from http://h/v1: overloaded") == (
        "HTTP 503 from http://h/v1: overloaded"
    )
    assert (
        plain_message(
            "The stream broke after 1 chunks: Could not talk to http://h/v1: "
            "ClientPayloadError: Response payload is not completed"
        )
        == "The connection closed mid-answer, after 1 chunk."
    )
    assert plain_message("No answer from http://h/v1 within the timeout (ReadTimeout: x).") == (
        "No answer from http://h/v1 within the timeout."
    )


def test_budget_error_keeps_its_python_text():
    err = BudgetExceededError("Budget reached; it was not sent.", hint="Raise the limit.")
    assert str(err) == "Budget reached; it was not sent. Raise the limit."
    assert err.message == "Budget reached; it was not sent." and err.sent is False


# -- (9) interrupted calls are not failures ----------------------------------------------------


def stop_a_stream(local, s):
    local.register_model("local/crawl", lambda m, p: "slow " * 50, tokens_per_second=50)
    stream = s.stream("a long answer", model="local/crawl")
    next(iter(stream))
    stream.close()  # what the Stop button and the kernel's Interrupt do


def test_interrupted_calls_are_reported_apart_from_failures(local):
    s = session_for(local, max_retries=0)
    s.chat("one")
    stop_a_stream(local, s)
    record = s.records[-1]
    assert record.interrupted and not record.ok and record.error.startswith("Interrupted")
    local.faults.push("cut:3")
    with pytest.raises(StreamError):
        list(s.stream("a cut answer about ducks and geese and swans"))
    assert s.records[-1].interrupted  # a cut stream is incomplete too, but a failure
    rows = s.summary().set_index("model")
    echo, crawl = rows.loc["local/echo"], rows.loc["local/crawl"]
    assert (echo["calls"], echo["ok"], echo["interrupted"]) == (2, 1, 0)
    assert echo["success_rate"] == 0.5
    assert (crawl["calls"], crawl["ok"], crawl["interrupted"]) == (1, 0, 1)
    assert pd.isna(crawl["success_rate"])  # nothing ran to its end: no rate, not 0%
    html = s._repr_html_()
    assert "– (1 interrupted)" in html and ">0%" not in html


def test_percent_llm_cost_reports_interrupted_calls_apart(shell, local, capsys):
    s = magics.get_default_session()
    s.chat("one")
    stop_a_stream(local, s)
    shell.run_cell("%llm cost")
    html = s._repr_html_()
    assert "100% (1 interrupted)" not in html  # two models: one row each
    assert "(1 interrupted)" in html and ">0%" not in html


# -- (10) a refused call shows no cost -----------------------------------------------------------


def test_a_call_refused_by_the_budget_shows_not_sent_without_a_cost(local):
    s = session_for(local, budget_usd=0.0000001, prices={"local/echo": {"input": 3, "output": 15}})
    with pytest.raises(BudgetExceededError) as info:
        s.chat("hello", max_tokens=50)
    view = StreamView("local/echo", cost_of=lambda tokens: 0.000026)
    view.fail(for_magic(info.value))
    status = re.sub("<[^>]+>", "", view.status_html)
    assert "so far" not in status and "$" not in status
    assert "not sent" in status and view.state == "failed"


# -- (12) the local server's default model, the top-level exports --------------------------------


def test_a_session_on_the_offline_server_defaults_to_local_echo(local):
    s = holynb.Session(base_url=local.base_url)
    assert s.uses_offline_server and s.model == "local/echo"
    assert s.chat("hi").text.startswith("You said: hi")
    assert holynb.Session(base_url=local.base_url, model="other").model == "other"


def test_the_offline_default_does_not_override_holynb_model(local, monkeypatch):
    monkeypatch.setenv("HOLYNB_MODEL", "from/env")
    assert holynb.Session(base_url=local.base_url).model == "from/env"


def test_local_server_and_submodules_work_without_importing_them():
    code = (
        "import holynb\n"
        "assert holynb.local_server is holynb.offline.local_server\n"
        "assert 'local_server' in holynb.__all__\n"
        "s = holynb.Session(base_url=holynb.local_server().base_url)\n"
        "print(s.model, s.chat('hi').text[:12])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=CHILD_ENV, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "local/echo You said: hi"


def test_missing_key_hint_says_to_paste_what_holynb_serve_prints(monkeypatch):
    from holynb.errors import MissingAPIKeyError

    for name in ("HOLYSHEEP_API_KEY", "HOLYNB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MissingAPIKeyError) as info:
        holynb.Session(base_url="https://api.example.com/v1").chat("x")
    assert "holynb serve" in str(info.value) and "export" in str(info.value)


# -- (13) %llm config on the local server ----------------------------------------------------------


def test_config_on_the_local_server_says_no_key_is_needed(shell, capsys):
    shell.run_cell("%llm config")
    out = capsys.readouterr().out
    assert "api key: not needed (holynb's local server)" in out
    assert "missing" not in out


def test_config_elsewhere_without_a_key_says_how_to_set_it(shell, capsys, monkeypatch):
    for name in ("HOLYSHEEP_API_KEY", "HOLYNB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    magics.set_default_session(holynb.Session(model="m", base_url="http://127.0.0.1:9"))
    shell.run_cell("%llm config")
    assert "api key: missing (set HOLYSHEEP_API_KEY)" in capsys.readouterr().out


# -- (11) %llm ... ? is a prompt ------------------------------------------------------------------


def test_a_trailing_question_mark_is_part_of_the_prompt(shell, capsys):
    run_ok = shell.run_cell("%llm What is a p-value?", store_history=True)
    assert run_ok.error_in_exec is None and run_ok.error_before_exec is None
    assert shell.user_ns["_llm"].startswith("You said: What is a p-value?")
    assert "not found" not in capsys.readouterr().out


def test_only_percent_llm_lines_are_rewritten():
    from holynb.notebook.magics import keep_question_marks

    same = ["%llm?\n", "%llm ??\n", "x = y?\n", "%llmx what?\n"]
    for line in same:
        assert keep_question_marks([line]) == [line]
    assert keep_question_marks(["%%llm\n", "%llm inside a cell?\n"])[1] == "%llm inside a cell?\n"
    assert keep_question_marks(["if x:\n", "    %llm why?\n"]) == [
        "if x:\n",
        "    get_ipython().run_line_magic('llm', 'why?')\n",
    ]
