"""The magics in a real Jupyter kernel (nbclient), as nbconvert/nbval run them: one sanitised
final display per answer (what JupyterLab keeps too), never a raw widget repr."""

from __future__ import annotations

import textwrap

import nbformat
from nbclient import NotebookClient

from holynb.server import faults
from tests.helpers import kernel_setup_cell


def execute(cells, allow_errors=False):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=allow_errors).execute()
    return nb.cells


def texts(cell, name="stdout"):
    return "".join(
        o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == name
    )


def displayed(cell):
    """The text/plain of the cell's displays: an answer, then its status or figures line."""
    return "\n".join(
        o["data"].get("text/plain", "") for o in cell.outputs if o.output_type == "display_data"
    )


def test_llm_cell_in_a_kernel_displays_sanitised_html_once(local):
    nasty = 'Hi <img src=x onerror="alert(1)"> <script>x()</script>'
    local.register_model("xss", lambda m, p: nasty)
    cells = execute(
        [
            kernel_setup_cell(local),
            "%%llm -o r\nhello kernel",
            "print(r.text == _llm, r.usage.completion_tokens > 0)",
            "%%llm -m xss\nsay something nasty",
            "%llm cost",
        ]
    )
    assert texts(cells[1]) == ""  # no plain-text copy besides the display
    assert "You said: hello kernel" in displayed(cells[1])
    figures = displayed(cells[1]).strip().splitlines()[-1]
    assert "local/echo" in figures and "tokens" in figures
    assert texts(cells[2]).strip() == "True True"
    for cell in cells[1:4]:
        for out in cell.outputs:
            data = out.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data
            assert "VBox" not in data.get("text/plain", "")
    shown = [o["data"]["text/html"] for o in cells[3].outputs if "text/html" in o.get("data", {})]
    assert shown and all("<img" not in h and "<script" not in h for h in shown)
    cost = next(o["data"] for o in cells[4].outputs if o.output_type == "display_data")
    assert "<table>" in cost["text/html"] and "local/echo" in cost["text/html"]


def test_errors_in_a_kernel_are_a_short_box_without_traceback(local):
    local.faults.push(faults.status(404))
    cells = execute(
        [
            kernel_setup_cell(local),
            "%%llm\nhello",
        ]
    )
    err = displayed(cells[1])
    assert "NotFoundError" in err and "Hint" in err and "Traceback" not in err
    assert err.splitlines()[-1].startswith("Failed · local/echo · no answer")
    assert "waiting" not in err
    (box,) = [o["data"]["text/html"] for o in cells[1].outputs if o.output_type == "display_data"]
    assert "holynb-error mathjax_ignore" in box and "holynb-failed" in box
    assert not [o for o in cells[1].outputs if o.output_type == "error"]


def test_interrupting_a_stream_in_a_kernel_keeps_the_partial_answer(local):
    local.tokens_per_second = 30
    try:
        cells = execute(
            [
                f"""
            %load_ext holynb
            import holynb, os, signal, threading
            s = holynb.Session(model="local/echo", base_url={local.base_url!r},
                               api_key={local.api_key.get()!r})
            holynb.notebook.magics.set_default_session(s)
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
            """,
                "%%llm\nthis will be interrupted",
                "row = s.records[-1]; print(row.interrupted, row.completion_tokens > 5, "
                "len(s.last_result.text) > 10)",
            ]
        )
    finally:
        local.tokens_per_second = None
    out = displayed(cells[1])
    assert "You said" in out and "Interrupted" in out
    assert not [o for o in cells[1].outputs if o.output_type == "error"]
    assert texts(cells[2]).strip() == "True True True"


def test_tags_references_and_option_errors_in_a_kernel(local):
    nb_cells = execute(
        [
            kernel_setup_cell(local),
            "answer = 6 * 7",
            "%%llm -o r\nExplain {In[-1]}",
            "print(s.records[-1].tag, 'answer = 6 * 7' in r.text, '%%llm' in r.text)",
            "%%llm max-tokens 5\nhi",
            "print(len(s.records))",
        ],
        allow_errors=True,
    )
    asked, shown, bad = nb_cells[2], nb_cells[3], nb_cells[4]
    assert texts(shown).strip() == f"In[{asked.execution_count}] True False"
    assert displayed(asked).strip().splitlines()[-1].endswith(f"+ In[{asked.execution_count - 1}]")
    errors = [o for o in bad.outputs if o.output_type == "error"]
    shown_error = texts(bad, "stderr") + "".join("\n".join(o.traceback) for o in errors)
    assert "UsageError" in shown_error and "max-tokens 5" in shown_error
    assert "Traceback" not in shown_error and "File " not in shown_error
    assert texts(nb_cells[5]).strip() == "1"  # nothing was sent


def test_format_code_inserts_code_once_per_cell_and_never_prose(local):
    local.register_model("coder", lambda m, p: "Here:\n```python\nimport statistics\n```\nDone.")
    setup = f"""
        %load_ext holynb
        import holynb
        holynb.notebook.magics.set_default_session(holynb.Session(model="local/echo",
                                                         base_url={local.base_url!r},
                                                         api_key={local.api_key.get()!r}))
        inserted = []
        get_ipython().set_next_input = lambda text, replace=False: inserted.append(text)
        """
    code_cell = "%%llm -m coder -f code\nwrite the import"
    cells = execute(
        [
            setup,
            code_cell,
            code_cell,  # the same cell run again (a second Run All): no second cell
            "%%llm -f code\nno code block in this answer",
            "print(inserted, repr(_llm_code))",
        ]
    )
    assert texts(cells[4]).strip() == "['import statistics'] ''"
    assert "no code block" in texts(cells[3])


def test_an_answer_cut_by_max_tokens_says_so_in_its_figures_line(local):
    cells = execute(
        [
            kernel_setup_cell(local),
            "%%llm --max-tokens 4\ntell me a long story about otters and rivers",
        ]
    )
    figures = displayed(cells[1]).splitlines()[-1]
    assert "stopped at 4 tokens" in figures, figures


def test_format_text_stays_verbatim_in_the_stored_output(local):
    local.register_model("marker", lambda m, p: "# Not a heading\n**not bold**")
    cells = execute(
        [
            kernel_setup_cell(local),
            "%%llm -m marker -f text\nanything",
        ]
    )
    (html,) = [o["data"]["text/html"] for o in cells[1].outputs if o.output_type == "display_data"]
    assert '<pre class="holynb-code"><code' in html and "# Not a heading" in html
    assert "<h1>" not in html and "<strong>" not in html


def test_a_prompt_that_cannot_be_filled_fails_the_cell_and_stops_run_all(local):
    import pytest
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    sources = [kernel_setup_cell(local), "%%llm\nTell me about {nowhere}", "print('ran on')"]
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    before = local.stats.requests
    with pytest.raises(CellExecutionError):
        NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    failed = nb.cells[1]
    shown = texts(failed, "stderr") + "".join(
        "\n".join(o.traceback) for o in failed.outputs if o.output_type == "error"
    )
    assert "no variable 'nowhere'" in shown and "-n" in shown
    assert "Traceback" not in shown and "File " not in shown
    assert texts(failed) == ""  # not a printed refusal
    assert nb.cells[2].outputs == []  # Run All stopped here
    assert local.stats.requests == before


def test_braces_in_a_kernel_cell_are_sent_as_written_and_n_sends_it_verbatim(local):
    prompt = 'Solve $e^{i\\pi}$ for {city}; JSON {"a": {"b": 1}}; C: int f() { return 0; }'
    cells = execute(
        [
            kernel_setup_cell(local),
            "city = 'Hanoi'",
            "%%llm -o filled\n" + prompt,
            "%%llm --no-interpolate -o raw\n" + prompt,
            "%%llm -n\nKeep {nowhere} as typed",
        ]
    )
    sent = [r["body"]["messages"][-1]["content"].rstrip("\n") for r in local.requests_log[-3:]]
    assert sent[0] == prompt.replace("{city}", "Hanoi")
    assert sent[1] == prompt and sent[2] == "Keep {nowhere} as typed"
    assert displayed(cells[2]).splitlines()[-1].endswith("+ {city}")
    assert not displayed(cells[3]).splitlines()[-1].endswith("}")  # nothing filled in


def test_llm_history_shows_the_conversation_only(local):
    cells = execute(
        [
            kernel_setup_cell(local),
            "%llm history",
            "%%llm --chat\nfirst question",
            "%%llm --chat\nsecond question",
            "r = s.chat('a call outside the conversation')",
            "%llm history",
        ]
    )
    assert "No conversation" in texts(cells[1]) and "--chat" in texts(cells[1])
    shown = texts(cells[5])
    lines = shown.strip().splitlines()
    assert lines[0] == "Conversation (4 messages):"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "user", "assistant", "user", "assistant"
    ]  # fmt: skip
    assert "first question" in lines[1] and "second question" in lines[3]
    assert "outside the conversation" not in shown and "cost_usd" not in shown
    assert not [o for o in cells[5].outputs if o.output_type != "stream"]  # no ledger table


def _final_plain(cell):
    shown = [o for o in cell.outputs if o.output_type in ("display_data", "update_display_data")]
    return shown[-1]["data"]["text/plain"]


def test_several_models_keep_a_figures_line_per_model_in_text_plain(local):
    cell = "%%llm -m local/echo,local/json --max-tokens 20\nhello kernel"
    widget = "import os\nos.environ['HOLYNB_DISPLAY'] = 'widget'\n"
    for setup in (kernel_setup_cell(local), widget + kernel_setup_cell(local)):
        plain = _final_plain(execute([setup, cell])[1])
        echo, json = plain.split("── local/json")
        assert echo.startswith("── local/echo") and "You said: hello kernel" in echo
        for part, model in ((echo, "local/echo"), (json, "local/json")):
            figures = part.strip().splitlines()[-1]
            assert figures.startswith(f"{model} · ") and "completion tokens" in figures, plain


def test_llm_cost_text_plain_has_the_summary_per_model(local):
    cells = execute([kernel_setup_cell(local), "%llm hi", "%llm -m local/json hi", "%llm cost"])
    plain = _final_plain(cells[3])
    assert not plain.startswith("Session(")
    lines = plain.splitlines()
    assert "total" in lines[0]
    assert any(line.lstrip().startswith("local/echo") for line in lines)
    assert any(line.lstrip().startswith("local/json") for line in lines)
    assert "p50" in plain and "calls" in plain
