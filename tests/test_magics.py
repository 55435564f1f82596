"""The %%llm / %llm magics in a plain InteractiveShell (plain-text frontend)."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import holynb
from holynb.notebook import magics
from holynb.server import faults
from tests.helpers import magic_shell, run_cell as run, session_for


@pytest.fixture
def shell(local):
    yield from magic_shell(session_for(local))


def test_cell_magic_streams_plain_text_and_sets_llm(shell, capsys):
    run(shell, "%%llm\nhello there")
    out = capsys.readouterr().out
    assert "You said: hello there" in out
    assert shell.user_ns["_llm"].startswith("You said: hello there")
    assert "StreamView" not in out and "VBox" not in out


def test_line_magic_takes_the_rest_of_the_line_as_prompt(shell, capsys):
    run(shell, "%llm what's up, doc")
    assert shell.user_ns["_llm"].startswith("You said: what's up, doc")


def test_out_option_stores_the_chat_result(shell):
    run(shell, "%%llm -o answer --max-tokens 5\nshort please")
    answer = shell.user_ns["answer"]
    assert isinstance(answer, holynb.ChatResult)
    assert answer.usage.completion_tokens == 5 and answer.finish_reason == "length"


def test_options_reach_the_request(shell, local):
    run(shell, '%%llm -m local/echo -s "be brief" -t 0.2 --max-tokens 7\nhi')
    body = local.requests_log[-1]["body"]
    assert body["model"] == "local/echo" and body["temperature"] == 0.2
    assert body["max_tokens"] == 7
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


def test_variables_are_interpolated_and_double_braces_kept(shell):
    run(shell, "city = 'Hanoi'")
    run(shell, '%%llm\nWeather in {city}? Format: {{"temp": 1}}')
    assert 'Weather in Hanoi? Format: {"temp": 1}' in magics_prompt(shell)


def magics_prompt(shell):
    return magics.get_default_session().records and shell.user_ns["_llm"]


def test_unknown_variable_is_a_clear_message_and_nothing_is_sent(shell, local, capsys):
    result = shell.run_cell("%%llm\nTell me about {nowhere}", store_history=True)
    assert isinstance(result.error_in_exec, UsageError)  # the cell fails: Run All stops
    assert "no variable 'nowhere'" in capsys.readouterr().err
    assert "--no-interpolate" in str(result.error_in_exec)
    assert local.stats.requests == 0


def test_in_out_and_err_references(shell, local):
    run(shell, "x = 6 * 7")
    n = shell.execution_count - 1
    run(shell, "x")
    m = shell.execution_count - 1
    shell.run_cell("1 / 0", store_history=True)
    run(shell, f"%%llm\nExplain {{In[{n}]}} giving {{Out[{m}]}} and {{Err}}")
    sent = local.requests_log[-1]["body"]["messages"][-1]["content"]
    assert "x = 6 * 7" in sent and "42" in sent and "ZeroDivisionError" in sent


def test_chat_keeps_a_conversation_and_new_resets_it(shell, local):
    run(shell, "%%llm --chat\nfirst question")
    run(shell, "%%llm --chat\nsecond question")
    messages = local.requests_log[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    run(shell, "%%llm --chat --new\nfresh start")
    assert len(local.requests_log[-1]["body"]["messages"]) == 1


def test_without_chat_each_cell_stands_alone(shell, local):
    run(shell, "%%llm\none")
    run(shell, "%%llm\ntwo")
    assert len(local.requests_log[-1]["body"]["messages"]) == 1


def test_format_code_puts_the_answer_in_the_next_cell(shell, local, monkeypatch):
    local.register_model("coder", lambda m, p: "Here:\n```python\nprint('hi')\n```\nDone.")
    captured = {}
    monkeypatch.setattr(
        shell, "set_next_input", lambda text, replace=False: captured.update(text=text)
    )
    run(shell, "%%llm -m coder -f code\nwrite code")
    assert captured["text"] == "print('hi')"


def test_format_json_parses_the_answer(shell, local):
    local.register_model("jsoner", lambda m, p: 'Sure! ```json\n{"a": 1, "b": [true, null]}\n```')
    run(shell, "%%llm -m jsoner -f json -o r\ngive json")
    assert shell.user_ns["_llm_json"] == {"a": 1, "b": [True, None]}
    assert shell.user_ns["r_json"] == {"a": 1, "b": [True, None]}


def test_no_stream_gives_the_same_text(shell):
    run(shell, "%%llm --no-stream\nsame")
    a = shell.user_ns["_llm"]
    run(shell, "%%llm\nsame")
    assert shell.user_ns["_llm"] == a


def test_api_error_shows_a_short_box_not_a_traceback(shell, local, capsys):
    local.faults.push(faults.status(401))
    run(shell, "%%llm\nhello")
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "AuthenticationError" in captured.err and "Hint" in captured.err
    assert "Traceback" not in shown


def test_config_shows_settings_without_the_key(shell, capsys):
    magics.set_default_session(
        holynb.Session(
            base_url=magics.get_default_session().base_url, api_key="sk-hs-SECRETSECRETSECRET123456"
        )
    )
    run(shell, "%llm config")
    out = capsys.readouterr().out
    assert "base_url" in out and "set (" in out and "SECRETSECRET" not in out


def test_config_spent_counts_the_calls_without_a_price(shell, local, capsys):
    local.register_model("mystery/model", lambda messages, params: "a mystery answer")
    magics.set_default_session(session_for(local, model="mystery/model"))
    with pytest.warns(holynb.prices.UnknownPriceWarning):
        run(shell, "%llm --no-stream hello")
    capsys.readouterr()
    run(shell, "%llm config")
    assert "spent: cost unknown (1 call without a price)" in capsys.readouterr().out


def test_config_changes_model_and_keeps_the_ledger(shell, capsys):
    run(shell, "%llm hi")
    run(shell, "%llm config model=local/slow budget=2")
    s = magics.get_default_session()
    assert s.model == "local/slow" and s.budget_usd == 2 and len(s.records) == 1


def test_models_cost_and_history(shell, capsys):
    run(shell, "%llm hi")
    run(shell, "%llm models")
    assert "local/echo" in capsys.readouterr().out
    run(shell, "%llm cost")
    assert "local/echo" in capsys.readouterr().out
    assert list(magics.get_default_session().ledger["kind"]) == ["stream"]
    run(shell, "%llm history")  # the conversation only: there is none
    assert "No conversation yet" in capsys.readouterr().out


def test_help_is_generated_from_the_arguments(shell):
    doc = magics.LLMMagics.llm.__doc__
    assert "--max-tokens" in doc and "--format" in doc


def test_interpret_magic_shows_a_card_and_stores_the_result(shell, capsys):
    magics.set_default_session(session_for(magics.get_default_session(), model="local/python"))
    run(shell, "%%interpret --verify -o res\nprint(6 * 7)")
    res = shell.user_ns["res"]
    assert res.success and res.output.strip() == "42" and res.agrees is True
    assert magics.get_default_session().records[-1].kind == "interpret"


def test_interpret_magic_on_the_shared_local_server_with_python_enabled(shell):
    # what notebooks do offline: the default session on this process's own server, code on
    magics.set_default_session(holynb.local_session(model="local/python", python=True))
    run(shell, "%%interpret -o res\nprint(6 * 7)")
    assert shell.user_ns["res"].success and shell.user_ns["res"].output.strip() == "42"


def test_interpret_magic_catches_a_wrong_claim(shell):
    magics.set_default_session(session_for(magics.get_default_session(), model="local/python"))
    run(shell, "%%interpret --verify -o res\n# holynb: lie\nprint('truth')")
    assert shell.user_ns["res"].agrees is False


def test_config_keeps_prices_log_retry_and_counts_past_spending(shell, local, tmp_path):
    s = session_for(
        local,
        prices={"local/echo": {"input": 1000.0, "output": 1000.0}},
        log_path=tmp_path / "log.sqlite",
    )
    magics.set_default_session(s)
    run(shell, "%llm hi")
    spent = s.total_cost_usd
    run(shell, "%llm config model=local/echo budget=100")
    fresh = magics.get_default_session()
    assert fresh.prices is s.prices and fresh.settings.retry == s.settings.retry
    assert fresh.meter.budget.spent_usd == spent > 0
    run(shell, "%llm --max-tokens 20 again")  # under a budget, a priced call needs a bound
    assert len(session_for(local, log_path=tmp_path / "log.sqlite").records) == 2


def test_format_text_shows_the_answer_verbatim(shell, local, monkeypatch):
    local.register_model("marker", lambda m, p: "plain **not bold** <b>x</b>")
    shown = []
    import holynb.notebook.display as display

    real = display.StreamView.finish
    monkeypatch.setattr(
        display.StreamView, "finish", lambda self, result: (shown.append(self), real(self, result))
    )
    monkeypatch.setenv("HOLYNB_DISPLAY", "widget")
    run(shell, "%%llm -m marker -f text\nanything")
    html = shown[0].answer_html
    assert '<pre class="holynb-code"><code>' in html
    assert "**not bold**" in html and "&lt;b&gt;" in html
    assert shell.user_ns["_llm"] == "plain **not bold** <b>x</b>"


def test_config_with_a_log_in_the_environment_does_not_double_the_ledger(
    shell, local, tmp_path, monkeypatch
):
    path = tmp_path / "env.sqlite"
    monkeypatch.setenv("HOLYNB_LOG_PATH", str(path))
    s = session_for(local, prices={"local/echo": {"input": 1000.0, "output": 1000.0}})
    magics.set_default_session(s)
    for i in range(3):
        run(shell, f"%llm call {i}")
    spent = s.total_cost_usd
    run(shell, "%llm config budget=100")
    fresh = magics.get_default_session()
    assert len(fresh.records) == 3 and fresh.total_cost_usd == pytest.approx(spent)
    assert fresh.meter.budget.spent_usd == pytest.approx(spent)
    run(shell, "%llm --max-tokens 20 one more")
    assert len(fresh.records) == 4
    assert len(session_for(local, log_path=path).records) == 4


def test_out_binds_the_cells_own_answer_while_background_cells_finish(shell, local):
    # 40 background answers that finish one after another while the foreground cells run
    local.register_model(
        "bg", lambda m, p: "background " * (4 * len(m[-1]["content"])), tokens_per_second=200
    )
    local.register_model("fg", lambda m, p: f"foreground {m[-1]['content'].strip()}")
    magics.get_default_session().prices.update(
        {"bg": {"input": 0, "output": 0}, "fg": {"input": 0, "output": 0}}
    )
    tasks = []
    for i in range(40):
        run(shell, f"%%llm --bg -m bg\nq{'x' * i}")
        tasks.append(shell.user_ns["_llm_task"])
    wrong = []
    for i in range(100):
        run(shell, f"%%llm -m fg -o ans\nq{i}")
        if shell.user_ns["ans"].text != f"foreground q{i}":
            wrong.append((i, shell.user_ns["ans"].text))
    for task in tasks:
        task.result(timeout=30)
    assert not wrong


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("%%llm max-tokens 5\nhi", "unknown words in the option line: 'max-tokens 5'"),
        ("%%llm --max-tokens 5 please\nhi", "unknown words in the option line: 'please'"),
        ("%%llm --bogus\nhi", "unrecognized arguments: --bogus"),
        ('%%llm -s "unclosed\nhi', "No closing quotation"),
        ("%%llm -f yaml\nhi", "invalid choice"),
        ("%%interpret verify\nprint(1)", "unrecognized arguments: verify"),
        ("%%interpret --verify extra words\nprint(1)", "unrecognized arguments: extra words"),
    ],
)
def test_bad_option_lines_are_a_one_line_usage_error_and_nothing_is_sent(
    shell, local, capsys, cell, says
):
    result = shell.run_cell(cell, store_history=True)
    err = capsys.readouterr().err
    assert isinstance(result.error_in_exec, UsageError)
    assert says in str(result.error_in_exec)
    assert err.startswith("UsageError: %%") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert local.stats.requests == 0


def test_line_magic_still_takes_any_words_as_the_prompt(shell, local):
    run(shell, "%llm max-tokens 5 is not an option here")
    assert sent_prompt(local) == "max-tokens 5 is not an option here"


def test_option_line_takes_variables_but_the_prompt_is_filled_once(shell, local):
    shell.user_ns["which"] = "local/echo"
    shell.user_ns["data"] = '{"user": {"id": 7}}'
    run(shell, "%%llm -m {which} -s $which\nCheck {data}")
    body = local.requests_log[-1]["body"]
    assert body["model"] == "local/echo" and body["messages"][0]["content"] == "local/echo"
    assert sent_prompt(local) == 'Check {"user": {"id": 7}}'


def test_line_magic_prompt_is_filled_once(shell, local):
    shell.user_ns["data"] = '{"user": {"id": 7}} In[1] Err'
    run(shell, "%llm Check {data}")
    assert sent_prompt(local) == 'Check {"user": {"id": 7}} In[1] Err'


def test_ledger_tag_is_the_cell_number_the_user_sees(shell, local):
    result = run(shell, "%%llm\ntagged")
    assert magics.get_default_session().records[-1].tag == f"In[{result.execution_count}]"


def sent_prompt(local):
    return local.requests_log[-1]["body"]["messages"][-1]["content"].rstrip("\n")


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("%llm config colour=blue", "cannot set 'colour=blue'"),
        ("%llm cache sometimes", "use %llm cache, %llm cache clear"),
        ("%%llm\n   ", "Nothing to ask"),
        ("%%interpret\n   \n", "Nothing to run"),
    ],
)
def test_every_magic_refusal_fails_the_cell(shell, local, capsys, cell, says):
    result = shell.run_cell(cell, store_history=True)
    captured = capsys.readouterr()
    assert isinstance(result.error_in_exec, UsageError)  # red, and Run All stops
    assert says in str(result.error_in_exec) and says not in captured.out
    assert local.stats.requests == 0


def test_an_answer_without_json_fails_a_format_json_cell(shell, local, capsys):
    local.register_model("prose", lambda m, p: "No JSON here, sorry.")
    result = shell.run_cell("%%llm -m prose -f json\ngive json", store_history=True)
    assert isinstance(result.error_in_exec, UsageError)
    assert "JSON" in str(result.error_in_exec)
    assert shell.user_ns["_llm"] == "No JSON here, sorry."  # the answer is kept
