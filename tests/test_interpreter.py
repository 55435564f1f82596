"""CodeInterpreter end to end against the local server's local/python model (which really runs
the code in the sandbox) and the local sandbox for verification. Nothing mocked."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

import holynb
from holynb.interpreter.code_interpreter import CodeInterpreter
from holynb.interpreter.execution import (
    ExecutionError,
    ExecutionResult,
    result_card_html,
    same_output,
)
from holynb.interpreter.protocol import code_from_messages, code_message
from holynb.interpreter.sandbox import SandboxLimits
from holynb.server import LocalServer, faults
from holynb.server.python_model import BROKEN_REPLY, PythonModel, python_model
from tests.helpers import session_for, wait_until_gone

LIMITS = SandboxLimits(timeout_s=4, memory_mb=256, max_output_bytes=100_000)  # roomy under load


@pytest.fixture
def python(local: LocalServer) -> Iterator[PythonModel]:
    """The server's local/python model with its counters at zero."""
    assert local.python  # the fixture server runs code models: LocalServer(python=True)
    model = python_model(local.models)
    assert model is not None
    model.reset()
    yield model


@pytest.fixture
def session(local: LocalServer) -> Iterator[holynb.Session]:
    s = session_for(local, model="local/python")
    yield s
    s.close()


@pytest.fixture(scope="module")
def limited(server: LocalServer) -> str:
    """A local/python with short limits, so limit tests stay fast."""
    server.register_model("local/python-limited", PythonModel(LIMITS))
    return "local/python-limited"


def _chat_bodies(server: LocalServer) -> list[dict]:
    return [e["body"] for e in server.requests_log if e["path"] == "/v1/chat/completions"]


# -- a single run ------------------------------------------------------------------------------


def test_run_returns_the_real_output_as_claimed(session: holynb.Session) -> None:
    r = CodeInterpreter(session).run("import math\nprint(math.factorial(10))")
    assert (r.success, r.output, r.error, r.model) == (True, "3628800\n", None, "local/python")
    assert r.answered and r.attempts == 1 and r.execution_time_ms and r.execution_time_ms > 0
    assert r.raw and "3628800" in r.raw and r.cost_usd == 0.0 and not r.verified


def test_an_exception_is_reported_with_name_and_message(session: holynb.Session) -> None:
    r = CodeInterpreter(session).run("print('before')\n1 / 0")
    assert not r.success and r.output == "before\n"
    assert r.error == ExecutionError("ZeroDivisionError", "division by zero")


@pytest.mark.parametrize("wrap", ["plain", "fence", "prose", "python"])
def test_every_wrapping_the_model_uses_is_read(session: holynb.Session, wrap: str) -> None:
    r = CodeInterpreter(session).run(f"print('ok')  # holynb: wrap={wrap}")
    assert r.success and r.output == "ok\n" and r.attempts == 1
    assert r.parse_repaired == (wrap == "python")  # a Python literal is not JSON as written


async def test_arun_works_on_the_callers_loop(local: LocalServer) -> None:
    async with session_for(local, model="local/python") as s:
        r = await CodeInterpreter(s).arun("print(2 ** 10)")
    assert r.output == "1024\n"


def test_article_style_answers_are_read_leniently(
    session: holynb.Session, local: LocalServer
) -> None:
    reply = (
        'Result: {"success": "false", "output": null, '
        '"error": "KeyError: \'x\'", "execution_time_ms": "3.5 ms"}'
    )
    name = f"local/article-{uuid.uuid4().hex[:6]}"
    local.register_model(name, lambda messages, params: reply)
    r = CodeInterpreter(session, model=name).run("{}['x']")
    assert (r.success, r.output, r.execution_time_ms) == (False, "", 3.5)
    assert r.error == ExecutionError("KeyError", "'x'")


# -- ledger and cost ---------------------------------------------------------------------------


def test_ledger_rows_are_kind_interpret_with_the_tag(session: holynb.Session) -> None:
    ci = CodeInterpreter(session, tag="cell-7")
    ci.run("print(1)")
    ci.run("print(2)", tag="other")
    rows = session.ledger
    assert list(rows["kind"]) == ["interpret", "interpret"]
    assert list(rows["tag"]) == ["cell-7", "other"]


def test_cost_is_summed_over_every_round_trip(local: LocalServer, python: PythonModel) -> None:
    prices = {"local/python": {"input": 3.0, "output": 15.0}}
    with session_for(local, model="local/python", prices=prices) as s:
        r = CodeInterpreter(s).run("print('x' * 3)\n# holynb: garble")
        ledger = s.ledger
    assert r.attempts == 2 and len(ledger) == 2 and (ledger["cost_usd"] > 0).all()
    assert r.cost_usd == pytest.approx(ledger["cost_usd"].sum())


def test_an_unknown_price_makes_the_cost_unknown(local: LocalServer) -> None:
    name = f"acme-unpriced-{uuid.uuid4().hex[:6]}"  # not local/*: no price anywhere
    local.register_model(name, PythonModel(LIMITS))
    with session_for(local, model=name) as s, pytest.warns(UserWarning, match="no price"):
        r = CodeInterpreter(s).run("print(1)")
    assert r.success and r.cost_usd is None  # never invented as 0


# -- JSON recovery -----------------------------------------------------------------------------


def test_one_repair_round_trip_fixes_an_unreadable_reply(
    local: LocalServer, session: holynb.Session, python: PythonModel
) -> None:
    r = CodeInterpreter(session).run("print('fixed')\n# holynb: garble")
    assert r.success and r.output == "fixed\n" and r.parse_repaired and r.attempts == 2
    assert (python.calls, python.repairs) == (2, 1)  # counted on the server
    repair = _chat_bodies(local)[-1]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"].startswith("Ran it.")  # its own reply, sent back
    assert "no JSON object" in repair[3]["content"]  # with the parse error


def test_a_model_that_never_answers_json_gives_up_honestly(
    session: holynb.Session, local: LocalServer
) -> None:
    r = CodeInterpreter(session, model="local/broken").run("print(1)")
    assert not r.answered and not r.success and r.model is None
    assert r.error is not None and r.error.name == "JSONExtractionError"
    assert r.attempts == 2 and r.raw == BROKEN_REPLY  # one repair, no more
    assert len(_chat_bodies(local)) == 2


# -- fallback models ---------------------------------------------------------------------------


def test_falls_back_after_a_failing_model(session: holynb.Session, local: LocalServer) -> None:
    local.faults.push(faults.status(503), times=3)  # the first model: every retry fails
    r = CodeInterpreter(session, model="local/echo", fallbacks=["local/python"]).run("print(5)")
    assert r.success and r.output == "5\n" and r.model == "local/python"
    assert r.attempts == 2 and any("ServerError" in n for n in r.notes)
    assert list(session.ledger["ok"]) == [False, True]


def test_falls_back_after_unreadable_answers(session: holynb.Session) -> None:
    ci = CodeInterpreter(session, models=["local/broken", "local/missing", "local/python"])
    r = ci.run("print('third time')")
    assert r.model == "local/python" and r.output == "third time\n"
    assert r.attempts == 4  # broken twice (with the repair), missing once, python once
    assert "local/broken: still unreadable" in r.notes[1]
    assert "NotFoundError" in r.notes[2]


def test_when_every_model_fails_the_result_names_the_api_error(session: holynb.Session) -> None:
    r = CodeInterpreter(session, models=["local/missing"]).run("print(1)")
    assert not r.answered and not r.success
    assert r.error is not None and r.error.name == "NotFoundError"
    assert "local/missing" in r.error.message


# -- response_format ---------------------------------------------------------------------------


def test_json_mode_is_requested(session: holynb.Session, local: LocalServer) -> None:
    CodeInterpreter(session).run("print(1)")
    assert _chat_bodies(local)[0]["response_format"] == {"type": "json_object"}


def test_rejected_json_mode_is_dropped_and_remembered(
    session: holynb.Session, local: LocalServer
) -> None:
    message = "Unrecognized request argument supplied: response_format"
    local.faults.push(faults.status(400, message=message))
    ci = CodeInterpreter(session)
    first, second = ci.run("print(1)"), ci.run("print(2)")
    assert first.success and first.attempts == 2 and second.attempts == 1
    sent = ["response_format" in body for body in _chat_bodies(local)]
    assert sent == [True, False, False]


def test_json_mode_false_never_sends_it(session: holynb.Session, local: LocalServer) -> None:
    CodeInterpreter(session, json_mode=False).run("print(1)")
    assert "response_format" not in _chat_bodies(local)[0]


# -- verification ------------------------------------------------------------------------------


def test_verify_agrees_with_an_honest_claim(session: holynb.Session) -> None:
    r = CodeInterpreter(session, verify=True).run("print(sum(range(10)))")
    assert r.verified and r.agrees is True and r.verified_output == "45\n"


def test_verify_catches_a_wrong_claim(session: holynb.Session) -> None:
    r = CodeInterpreter(session, verify=True).run("print(6 * 7)  # holynb: lie")
    assert r.success and r.output == "53\n"  # what the model claimed
    assert r.verified_output == "42\n" and r.agrees is False
    assert "DISAGREES" in r.summary() and "42" in str(r)


def test_verify_compares_errors_too(session: holynb.Session) -> None:
    r = CodeInterpreter(session, verify=True).run("print('a')\nraise ValueError('no')")
    assert r.agrees is True and r.verified_error == ExecutionError("ValueError", "no")
    assert r.verify_error is None


def test_verify_is_python_only(session: holynb.Session) -> None:
    with pytest.raises(holynb.ConfigurationError, match="Python"):
        CodeInterpreter(session, language="javascript", verify=True)


def test_outputs_compare_without_trailing_whitespace() -> None:
    assert same_output("1 \r\n2\t\n\n", "1\n2")
    assert not same_output(" 1", "1") and not same_output("1\n\n2", "1\n2")


# -- sandbox limits, through the whole path ----------------------------------------------------


_BOMBS = {
    "infinite loop": ("while True:\n    pass", "TimeoutError"),
    "memory bomb": ("hog = []\nwhile True:\n    hog.append(bytearray(10**7))", "MemoryError"),
    "huge output": ("while True:\n    print('y' * 999)", "OutputLimitExceeded"),
    "fork bomb": (
        "import os\nfor _ in range(200):  # bounded on purpose\n"
        "    if os.fork() == 0:\n"
        "        os.execv('/bin/sh', ['sh', '-c', 'sleep 30; exit 0', MARKER])\n"
        "while True:\n    pass",
        "TimeoutError",
    ),
}


@pytest.mark.parametrize("case", list(_BOMBS))
def test_sandbox_limits_stop_the_code_and_leave_no_process(
    session: holynb.Session, limited: str, case: str
) -> None:
    marker = f"holynb-test-{uuid.uuid4().hex}"
    body, expected = _BOMBS[case]
    code = (
        f"import subprocess\nMARKER = {marker!r}\n"
        "subprocess.Popen(['sh', '-c', 'sleep 30; exit 0', MARKER])\n" + body
    )
    started = time.monotonic()
    r = CodeInterpreter(session, model=limited, verify=True, limits=LIMITS).run(code)
    assert time.monotonic() - started < 10
    assert not r.success and r.error is not None and r.error.name == expected  # the claim
    assert r.verify_error is not None and r.verify_error.name == expected  # the local run
    assert "stopped by the sandbox" in r.verify_error.message and r.agrees is None
    assert wait_until_gone(marker) == []


# -- many snippets -----------------------------------------------------------------------------


def test_run_many_200_keeps_order_and_bounds_concurrency(
    session: holynb.Session, python: PythonModel
) -> None:
    snippets = [f"print({i} * {i})" for i in range(200)]
    results = CodeInterpreter(session, concurrency=6).run_many(snippets, progress=False)
    assert [r.output for r in results] == [f"{i * i}\n" for i in range(200)]
    assert results.failed == 0 and python.calls == 200
    assert 2 <= python.peak_active <= 6  # in flight at once, counted by the server
    assert any(r.parse_repaired for r in results)  # some answers came as Python literals
    frame = results.to_frame()
    assert len(frame) == 200 and frame["success"].all() and list(frame["code"]) == snippets


def test_run_many_keeps_per_item_errors(session: holynb.Session, local: LocalServer) -> None:
    local.faults.push(faults.status(400))  # one request is rejected; the batch goes on
    results = CodeInterpreter(session).run_many([f"print({i})" for i in range(10)])
    failed = [r for r in results if not r.success]
    assert len(failed) == 1 and failed[0].error is not None
    assert failed[0].error.name == "BadRequestError" and not failed[0].answered
    assert all(r.output == f"{i}\n" for i, r in enumerate(results) if r.success)


def test_run_many_shows_progress(session: holynb.Session, capsys: pytest.CaptureFixture) -> None:
    CodeInterpreter(session).run_many(["print(1)", "print(2)"], progress=True)
    assert "interpret" in capsys.readouterr().err


async def test_an_interrupted_batch_keeps_what_finished(local: LocalServer) -> None:
    async with session_for(local, model="local/python") as s:
        ci = CodeInterpreter(s, concurrency=2)
        snippets = ["print(0)", "print(1)"] + ["import time; time.sleep(1.5)"] * 4
        task = asyncio.ensure_future(ci.arun_many(snippets, progress=False))
        await asyncio.sleep(0.6)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    batch = ci.last_batch
    assert batch is not None and len(batch) == 6
    assert [r.output for r in batch[:2]] == ["0\n", "1\n"]
    assert {r.error.name for r in batch[2:] if r.error} == {"Interrupted"}


# -- showing a result --------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]


def test_the_card_escapes_model_output(session: holynb.Session) -> None:
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    r = CodeInterpreter(session, verify=True).run(f"print({hostile!r})  # holynb: lie")
    card = result_card_html(r)
    parser = _Tags()
    parser.feed(card)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert not [a for a in parser.attributes if a.startswith("on")]
    assert "&lt;script&gt;" in card and "DISAGREES" in card
    assert r._repr_html_() == card


def test_plain_text_shows_the_outcome() -> None:
    error = ExecutionError("ZeroDivisionError", "division by zero")
    r = ExecutionResult(False, "a\n", error, 1.5, "m", attempts=1, cost_usd=None)
    assert r.summary() == (
        "failed: ZeroDivisionError: division by zero · m · 1.5 ms claimed · cost unknown · "
        "1 attempt"
    )
    assert str(r).splitlines()[1:] == ["--- output (claimed) ---", "a"]


def test_the_prompt_fence_survives_backticks_in_the_code() -> None:
    code = 'print("```")\nprint("````")'
    message = code_message(code)
    assert code_from_messages([{"role": "user", "content": message}]) == ("python", code)


def test_a_server_without_python_says_how_to_enable_it():
    with LocalServer() as srv:  # code-running models are off by default
        s = session_for(srv, model="local/python")
        r = CodeInterpreter(s).run("print(1)")
        s.close()
    assert not r.success and "--enable-python" in " ".join(r.notes)
