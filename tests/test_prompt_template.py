"""The %%llm prompt template: one pass over what the user typed, references only in braces."""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError

from holynb.errors import PromptError
from holynb.notebook.prompt_template import FilledPrompt, build_prompt, cell_number
from tests.helpers import magic_shell, run_cell as run, session_for


@pytest.fixture
def shell(local):
    yield from magic_shell(session_for(local))


def sent(local):
    return local.requests_log[-1]["body"]["messages"][-1]["content"]


def ask(shell, local, prompt):
    """Run a %%llm cell; the prompt the server received (None when nothing was sent)."""
    before = local.stats.requests
    run(shell, "%%llm\n" + prompt)
    return sent(local).rstrip("\n") if local.stats.requests > before else None


def test_a_variable_holding_nested_json_is_sent_as_valid_json(shell, local):
    shell.user_ns["payload"] = json.dumps({"user": {"id": 7}})
    prompt = ask(shell, local, "Validate {payload}")
    assert prompt == 'Validate {"user": {"id": 7}}'
    assert json.loads(prompt.removeprefix("Validate ")) == {"user": {"id": 7}}


def test_the_output_of_a_nested_dict_keeps_every_brace(shell, local):
    run(shell, "{'a': {'b': {'c': 1}}}")
    prompt = ask(shell, local, "What is in {Out[-1]}?")
    assert "{'a': {'b': {'c': 1}}}" in prompt


def test_values_are_never_scanned_again(shell, local):
    shell.run_cell("1 / 0", store_history=True)  # an error that "Err" must not pull in
    shell.user_ns["quote"] = "In[2] of the survey said: Err on the side of caution."
    shell.user_ns["braces"] = "{quote} and {{x}} and {In[1]}"
    prompt = ask(shell, local, "Summarise: {quote} / {braces}")
    assert prompt == (
        "Summarise: In[2] of the survey said: Err on the side of caution. / "
        "{quote} and {{x}} and {In[1]}"
    )


def test_bare_words_in_prose_are_plain_text(shell, local):
    shell.run_cell("1 / 0", store_history=True)
    text = "In[2] of the survey said: Err on the side of caution. Out[1] too."
    assert ask(shell, local, text) == text


def test_the_word_err_does_not_refuse_a_cell_when_no_error_happened(monkeypatch):
    shell = _fresh_shell(monkeypatch)
    assert build_prompt("Err on the side of caution", shell).text == ("Err on the side of caution")


def test_in_minus_one_is_the_cell_before_not_the_llm_cell(shell, local):
    run(shell, "answer = 6 * 7")
    prompt = ask(shell, local, "Explain {In[-1]}")
    assert "answer = 6 * 7" in prompt and "%%llm" not in prompt and "Explain {" not in prompt


def test_negative_indices_count_back_from_the_cell_before(shell, local):
    run(shell, "first = 1")
    run(shell, "second = 2")
    prompt = ask(shell, local, "{In[-2]} then {In[-1]}")
    assert prompt.index("first = 1") < prompt.index("second = 2")


def test_out_minus_one_is_the_output_of_the_cell_before(shell, local):
    run(shell, "21 * 2")
    prompt = ask(shell, local, "Why {Out[-1]}?")
    assert "42" in prompt


def test_err_n_is_the_traceback_of_cell_n_and_err_the_last(shell, local):
    shell.run_cell("{}['missing']", store_history=True)
    key_error = cell_number(shell) - 1
    shell.run_cell("1 / 0", store_history=True)
    prompt = ask(shell, local, f"First {{Err[{key_error}]}}, last {{Err}}")
    assert prompt.index("KeyError") < prompt.index("ZeroDivisionError")
    assert "/IPython/" not in prompt  # IPython's own frames are dropped


def test_the_figures_line_says_what_was_pulled_in(shell, local, capsys):
    run(shell, "x = 1")
    shell.run_cell("1 / 0", store_history=True)
    failed = cell_number(shell) - 1
    capsys.readouterr()
    run(shell, "%%llm\nWhy does {In[-1]} fail? {Err}")
    figures = capsys.readouterr().out.strip().splitlines()[-1]
    assert figures.endswith(f"+ In[{failed}] and traceback of In[{failed}]")


def test_double_braces_are_literal_braces(shell, local):
    shell.user_ns["city"] = "Hanoi"
    prompt = ask(shell, local, 'Weather in {city}? Reply {{"temp": {{"c": 1}}}} not {{city}}')
    assert prompt == 'Weather in Hanoi? Reply {"temp": {"c": 1}} not {city}'


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{nowhere}", "no variable 'nowhere'"),
        ("{In}", "needs a cell number"),
        ("{In[99999]}", "there is no cell 99999"),
        ("{Out[99999]}", "cell 99999 has no output"),
        ("{Err[99999]}", "cell 99999 raised no error"),
    ],
)
def test_what_cannot_be_filled_is_a_clear_error_and_nothing_is_sent(
    shell, local, capsys, template, says
):
    before = local.stats.requests
    result = shell.run_cell("%%llm\n" + template, store_history=True)
    assert isinstance(result.error_in_exec, UsageError)  # the cell fails (red, stops Run All)
    assert says in str(result.error_in_exec)
    assert says in capsys.readouterr().err
    assert local.stats.requests == before
    with pytest.raises(PromptError, match="the prompt"):
        build_prompt(template, shell)


@pytest.mark.parametrize(
    "text",
    [
        'Reply with {"a": 1}',
        "a lone } here",
        "two lines\nand { here",
        "Euler: $e^{i\\pi} + 1 = 0$ and $\\frac{1}{2}$",
        "int main(void) {\n    int a[2][2] = {{1, 2}, {3, 4}};\n    return 0;\n}",
        '{"user": {"id": 7, "tags": ["a"]}}',
        "{ spaced } and {not a name!}",
    ],
)
def test_brace_text_that_is_not_a_reference_is_sent_as_written(shell, local, text):
    assert ask(shell, local, text) == text


def test_references_are_filled_beside_pasted_braces(shell, local):
    shell.user_ns["city"] = "Hanoi"
    prompt = ask(shell, local, 'Weather in {city} as {"temp": {"c": 1}} in C: if (x) { y(); }')
    assert prompt == 'Weather in Hanoi as {"temp": {"c": 1}} in C: if (x) { y(); }'


def test_no_interpolate_sends_the_cell_verbatim(shell, local):
    shell.user_ns["city"] = "Hanoi"
    shell.run_cell("1 / 0", store_history=True)
    for flag in ("-n", "--no-interpolate"):
        run(shell, f"%%llm {flag}\nKeep {{city}}, {{{{x}}}}, {{nowhere}} and {{Err}} as typed")
        assert sent(local).rstrip("\n") == "Keep {city}, {{x}}, {nowhere} and {Err} as typed"


def test_the_figures_line_names_the_variables_filled_in(shell, local, capsys):
    shell.user_ns["city"] = "Hanoi"
    run(shell, "x = 1")
    capsys.readouterr()
    run(shell, '%%llm\nWeather in {city} after {In[-1]}, as {"c": 1}')
    figures = capsys.readouterr().out.strip().splitlines()[-1]
    assert figures.endswith("+ {city} and In[" + str(cell_number(shell) - 2) + "]"), figures


def test_err_without_any_error_is_a_clear_error(monkeypatch):
    with pytest.raises(PromptError, match="no error has happened"):
        build_prompt("Explain {Err}", _fresh_shell(monkeypatch))


def test_code_with_backtick_fences_cannot_close_the_fence_around_it(shell, local):
    run(shell, "s = '''\n```\nnot the end\n```\n'''")
    prompt = ask(shell, local, "{In[-1]}")
    assert "````python\n" in prompt


def test_the_note_lists_each_reference_once():
    filled = FilledPrompt("x", ("In[3]", "Out[4]", "In[3]", "traceback of In[5]"))
    assert filled.note == "+ In[3], Out[4] and traceback of In[5]"
    assert FilledPrompt("x").note == ""


class _FreshShell:
    """The attributes build_prompt reads, for a shell where nothing has failed yet."""

    def __init__(self):
        self.user_ns = {"In": [""], "Out": {}}
        self.execution_count = 1


def _fresh_shell(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "last_value", None, raising=False)
    return _FreshShell()
