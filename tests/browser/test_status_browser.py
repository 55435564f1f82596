"""The live status line of a ``%%llm`` cell in a real JupyterLab and chromium (issue 10, item 6):
its clock ticks while the first token is awaited, a retry says so while it waits, and a failed
call says "Failed", never "waiting". The first check runs in the light theme, the others in the
dark one (computed contrast of the live line in both).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from holynb.server import LocalServer, faults
from tests.browser.test_answer_browser import CONTRAST_JS, save, set_theme
from tests.browser.test_widget_browser import (
    FIGURES,
    PlaywrightTimeout,
    cell,
    open_notebook,
    run_cell,
    status_text,
    wait_figures,
    wait_text,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

LATE_MODEL = "local/late"
LATE_ANSWER = "Here at last, after a long think."
LATENCY_MS = 3000  # before the first byte: long enough to read the clock twice, 1 s apart
WAIT_CELL = f"%%llm -m {LATE_MODEL}\nTake your time"
RETRY_CELL = f"%%llm -m {LATE_MODEL}\nTry again"
FAIL_CELL = "%%llm -m local/no-such-model\nThis model does not exist"
WAITING = re.compile(r"waiting for the first token · (\d+\.\d) s")
RETRYING = r"429, retrying 1/\d+ in \d+\.\d s"
LEAST_CONTRAST = 3.0  # as for the figures line in test_answer_browser


@pytest.fixture(scope="module")
def late_server() -> Any:
    server = LocalServer().start()
    server.register_model(LATE_MODEL, lambda messages, params: LATE_ANSWER, latency_ms=LATENCY_MS)
    yield server
    server.stop()


def waiting_seconds(page: Any, index: int) -> float:
    shown = status_text(page, index)
    found = WAITING.search(shown)
    assert found, f"cell {index} no longer says it is waiting: {shown!r}"
    return float(found.group(1))


def contrast(page: Any, index: int) -> float:
    return cell(page, index).locator(".holynb-status").first.evaluate(CONTRAST_JS)


def test_status_line_ticks_while_waiting_shows_retries_and_failures(
    page: Any, lab: Any, late_server: LocalServer
) -> None:
    url = write_notebook(lab, late_server, "status.ipynb", WAIT_CELL, RETRY_CELL, FAIL_CELL)
    open_notebook(page, url)

    # -- waiting for the first token: the clock moves (light theme) ----------------------------
    run_cell(page, 1)
    wait_text(page, 1, WAITING.pattern, timeout_s=15)
    before = waiting_seconds(page, 1)
    page.wait_for_timeout(1000)
    after = waiting_seconds(page, 1)
    assert after - before >= 0.5, f"the clock is stuck: {before} s, then {after} s, 1 s apart"
    light = contrast(page, 1)
    wait_figures(page, 1)
    assert FIGURES.search(status_text(page, 1)) and "waiting" not in status_text(page, 1)

    # -- a 429 with Retry-After: the line says the retry while it waits (dark theme) ----------
    save(page, lab.root / "status.ipynb")  # else the reload asks whether to leave
    set_theme(lab, page, "JupyterLab Dark")  # the kernel, and its session, stay
    late_server.faults.push(faults.status(429, retry_after=1))
    run_cell(page, 2)
    try:
        wait_text(page, 2, RETRYING, timeout_s=15)
    except PlaywrightTimeout:
        pytest.fail(f"no retry words in the status line: {status_text(page, 2)!r}")
    dark = contrast(page, 2)
    assert "holynb-failed" not in (
        cell(page, 2).locator(".holynb-status").first.get_attribute("class") or ""
    )
    wait_figures(page, 2)
    done = status_text(page, 2)
    assert FIGURES.search(done) and "2 attempts" in done, done
    assert "retrying" not in done and "waiting" not in done, done
    assert LATE_ANSWER in cell(page, 2).locator(".holynb-answer").inner_text()

    # -- a call that fails (an unknown model: 404) says Failed, not waiting -------------------
    run_cell(page, 3)
    wait_text(page, 3, r"Failed ·", timeout_s=15)
    page.wait_for_timeout(700)  # a clock tick after the end must not bring "waiting" back
    failed = status_text(page, 3)
    assert "waiting" not in failed and "no answer" in failed, failed
    assert "NotFound" in cell(page, 3).locator(".holynb-error").inner_text()
    print(f"status contrast: light {light:.1f}, dark {dark:.1f}")
    assert light >= LEAST_CONTRAST and dark >= LEAST_CONTRAST, (light, dark)
