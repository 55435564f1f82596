"""In a real kernel (nbclient): holynb's warnings are one short line, and ``%llm ... ?`` is a
prompt, not IPython's help syntax."""

from __future__ import annotations

from holynb.server import faults
from tests.helpers import kernel_setup_cell
from tests.test_magics_kernel import execute, texts


def test_holynb_warnings_are_one_short_line_without_a_path(local):
    local.register_model("mystery/model", lambda m, p: "An answer nobody prices.")
    cells = execute(
        [
            f"""
        import holynb, warnings
        s = holynb.Session(model="mystery/model", base_url={local.base_url!r},
                           api_key={local.api_key.get()!r})
        """,
            "r = s.chat('hello')",
            "warnings.warn('a warning of the user', UserWarning)",
        ]
    )
    err = texts(cells[1], "stderr")
    assert err.startswith("UnknownPriceWarning: ") and err.count("\n") == 1, err
    assert "/" not in err.replace("mystery/model", "") and ".py" not in err
    assert "return " not in err and "warnings.warn" not in err
    other = texts(cells[2], "stderr")
    assert ".py:" in other and "UserWarning: a warning of the user" in other  # unchanged


def test_a_trailing_question_mark_stays_in_the_llm_prompt(local):
    cells = execute(
        [
            kernel_setup_cell(local),
            "%llm What is a p-value?",
            "print(_llm.startswith('You said: What is a p-value?'))",
        ]
    )
    shown = texts(cells[1]) + "".join(
        o.get("data", {}).get("text/plain", "") for o in cells[1].outputs
    )
    assert "not found" not in shown and "You said: What is a p-value?" in shown
    assert texts(cells[2]).strip() == "True"


def test_cell_magic_help_is_readable_with_examples():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext holynb")
    doc = shell.find_cell_magic("llm").__doc__
    assert doc.startswith("Usage:\n\n  %%llm [-m MODEL]")
    assert "::" not in doc and "``" not in doc
    assert doc.count("  %%llm") + doc.count("  %llm ") >= 4  # usage and three examples
    assert "Examples:" in doc and "%llm What is a p-value?" in doc
    assert shell.find_cell_magic("interpret").__doc__.startswith("Usage:\n\n  %%interpret")


def test_a_wrong_model_shows_only_its_error_and_no_price_warning(local):
    # the widget view, as in JupyterLab: its live status line ticks while the 404 is on its way
    local.faults.push(faults.delay(seconds=0.5))
    cells = execute(
        [
            "import os\nos.environ['HOLYNB_DISPLAY'] = 'widget'\n" + kernel_setup_cell(local),
            "%%llm -m acme/no-such-model\nhello",
            "r = s.chat('hello', model='acme/no-such-model-2')",
        ],
        allow_errors=True,
    )
    for cell in cells[1:]:
        shown = texts(cell, "stderr") + texts(cell) + str(cell.outputs)
        assert "NotFoundError" in shown
        assert "UnknownPriceWarning" not in shown and "no price" not in shown, shown
