"""Session.map / amap: many prompts, one row each, crash-safe with a checkpoint."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pytest

import holynb
from holynb import RetryPolicy
from holynb.frames import RESULT_COLUMNS
from holynb.keystore import KeyStore
from holynb.server import faults
from tests.helpers import key_env, session_for

PRICES = {"local/echo": {"input": 3.0, "output": 15.0}}


def prompts(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def test_a_list_gives_one_row_per_prompt_in_input_order(local):
    df = session_for(local).map(prompts(40), progress=False, max_tokens=6)
    assert list(df.columns) == list(RESULT_COLUMNS)
    assert df.index.equals(pd.RangeIndex(40))
    assert df["ok"].all() and (df["attempts"] == 1).all() and not df["cache_hit"].any()
    assert [t.split(".")[0] for t in df["text"]] == [f"You said: item {i}" for i in range(40)]
    assert df["prompt"].tolist() == prompts(40)
    assert local.stats.completed == 40


def test_a_dataframe_with_a_template_keeps_its_index(local):
    reviews = pd.DataFrame(
        {"review": ["great", "awful", "fine"], "stars": [5, 1, 3]}, index=["r9", "r2", "r5"]
    )
    df = session_for(local).map(reviews, template="Classify ({stars}*): {review}", progress=False)
    assert df.index.tolist() == ["r9", "r2", "r5"]
    assert df.loc["r2", "prompt"] == "Classify (1*): awful"
    assert df.loc["r2", "text"].startswith("You said: Classify (1*): awful")
    joined = reviews.join(df[["text", "ok"]])
    assert joined["ok"].all()


def test_a_template_naming_a_missing_column_fails_before_sending(local):
    reviews = pd.DataFrame({"review": ["great"]})
    with pytest.raises(holynb.ConfigurationError, match="'text', not a column"):
        session_for(local).map(reviews, template="Classify: {text}", progress=False)
    with pytest.raises(holynb.ConfigurationError, match="needs template="):
        session_for(local).map(reviews, progress=False)
    assert local.stats.requests == 0


def test_a_series_and_message_lists(local):
    s = session_for(local)
    series = pd.Series(["a", "b"], index=[10, 20], name="word")
    df = s.map(series, template="Say {word}", progress=False)
    assert df.index.tolist() == [10, 20] and df.loc[20, "prompt"] == "Say b"
    chats = [[{"role": "user", "content": "x"}], [{"role": "user", "content": "y"}]]
    df = s.map(chats, system="Be brief.", progress=False)
    assert df["ok"].all() and df.loc[1, "text"].startswith("You said: y")


def test_one_failed_item_is_recorded_on_its_row_and_the_rest_finish(local):
    local.faults.push(faults.status(400, message="bad item"))
    df = session_for(local, concurrency=1).map(prompts(5), progress=False)
    assert df["ok"].tolist() == [False, True, True, True, True]
    assert df.loc[0, "error"].startswith("BadRequestError: HTTP 400")
    assert pd.isna(df.loc[0, "text"]) and df.loc[0, "model"] == "local/echo"
    assert df["error"].iloc[1:].isna().all()


def test_a_bad_prompt_is_that_items_error(local):
    df = session_for(local).map(["fine", None, "also fine"], progress=False)
    assert df["ok"].tolist() == [True, False, True]
    assert df.loc[1, "error"].startswith("TypeError: prompt must be")
    assert local.stats.requests == 2


def test_errors_raise_stops_at_the_first_failure(local):
    local.faults.push(faults.status(400))
    with pytest.raises(holynb.BadRequestError):
        session_for(local, concurrency=1).map(prompts(5), progress=False, errors="raise")
    assert local.stats.requests == 1


def test_the_budget_refuses_the_rest_without_sending_them(local):
    s = session_for(local, prices=PRICES, concurrency=1)
    s.budget_usd = 0.0012  # room for a few 50-token answers, not for 20
    df = s.map(prompts(20), progress=False, max_tokens=50)
    refused = df[df["error"].fillna("").str.startswith("BudgetExceededError")]
    assert 0 < df["ok"].sum() < 20 and len(refused) == 20 - df["ok"].sum()
    assert (refused["attempts"] == 0).all() and (refused["cost_usd"] == 0).all()
    assert local.stats.requests == df["ok"].sum()
    assert s.total_cost_usd <= 0.0012


def test_a_checkpoint_sends_only_what_is_not_stored(local, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    s = session_for(local)
    local.faults.push(faults.status(400))  # item 0 fails: retried on the next run
    first = s.map(prompts(30), checkpoint=ckpt, progress=False, max_tokens=6, concurrency=1)
    assert first["ok"].sum() == 29 and len(KeyStore(ckpt)) == 29
    items = prompts(30)
    items[7] = "an edited prompt"
    again = s.map(items, checkpoint=ckpt, progress=False, max_tokens=6, concurrency=1)
    assert again["ok"].all()
    assert local.stats.requests == 30 + 2  # the failed item and the edited one
    sent = again[~again["cache_hit"]].index.tolist()
    assert sent == [0, 7]
    assert (again.loc[again["cache_hit"], "cost_usd"] == 0).all()
    assert (again.loc[again["cache_hit"], "text"] == first.loc[again["cache_hit"], "text"]).all()
    changed = s.map(items, checkpoint=ckpt, progress=False, max_tokens=7, concurrency=4)
    assert not changed["cache_hit"].any()  # another parameter: every item is a new request


def test_2000_items_with_transient_faults_each_row_once_and_no_double_billing(local):
    # about 10% of requests fail (503, 429, dropped or cut connections), in a fixed pattern;
    # one retry each, so some items fail for good and say why
    pattern = ["503", "429:retry_after=0", "drop", "cut"]
    for k in range(260):
        local.faults.push("delay:0", times=9)
        local.faults.push(pattern[k % len(pattern)])
    retry = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.002)
    s = session_for(local, concurrency=32, retry=retry)
    df = s.map(prompts(2000), concurrency=32, progress=False, max_tokens=4)
    assert len(df) == 2000 and df.index.equals(pd.RangeIndex(2000))
    assert df["prompt"].tolist() == prompts(2000)
    failed = df[~df["ok"]]
    assert 0 < len(failed) < 100
    assert failed["error"].str.match(r"^(ServerError|RateLimitError|APIConnectionError)").all()
    assert df.loc[df["ok"], "error"].isna().all()
    assert local.stats.completed == df["ok"].sum()
    assert (df.loc[df["ok"], "attempts"] >= 1).all() and (df["attempts"] > 1).any()


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, holynb
    url, ckpt = sys.argv[1:]
    s = holynb.Session(base_url=url, model="local/echo", concurrency=8)
    s.map([f"item {i}" for i in range(400)], checkpoint=ckpt, progress=False, max_tokens=4)
    """
)


def test_sigkill_mid_map_then_a_rerun_finishes_sending_at_most_concurrency_twice(local, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    local.latency_ms = 10
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_SCRIPT, local.base_url, str(ckpt)], env=key_env(local)
        )
        deadline = time.monotonic() + 60
        while local.stats.completed < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_after = local.stats.requests
        stored = len(KeyStore(ckpt))
        assert 80 <= stored < 400
        s = session_for(local, concurrency=8)
        df = s.map(prompts(400), checkpoint=ckpt, progress=False, max_tokens=4)
    finally:
        local.latency_ms = 0
    assert df["ok"].all() and len(df) == 400
    assert df["cache_hit"].sum() == stored
    assert local.stats.requests - killed_after == 400 - stored
    assert local.stats.requests - 400 <= 8  # only the items in flight at the kill


def _interrupt_main_when(condition, fired: list[float], within_s: float = 30.0) -> threading.Thread:
    main = threading.main_thread().ident

    def watch() -> None:
        deadline = time.monotonic() + within_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        fired.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)  # what the kernel's Interrupt does

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_an_interrupt_stops_promptly_and_keeps_every_finished_item(local, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    local.latency_ms = 40
    try:
        s = session_for(local, concurrency=8)
        fired: list[float] = []
        watcher = _interrupt_main_when(lambda: len(s.records) >= 24, fired)
        with pytest.raises(holynb.MapInterrupted) as caught:
            s.map(prompts(300), checkpoint=ckpt, progress=False, max_tokens=4)
        watcher.join()
        assert time.monotonic() - fired[0] < 1.0  # prompt: in-flight requests are cancelled
        sent = local.stats.requests
        time.sleep(0.1)
        assert local.stats.requests == sent  # nothing more goes out
        partial = caught.value.frame
        assert "run the same call again" in str(caught.value)
        assert 24 <= len(partial) < 300 and partial["ok"].all()
        assert partial.index.is_monotonic_increasing
        assert len(KeyStore(ckpt)) == len(partial)
        interrupted = s.ledger[s.ledger["interrupted"]]
        assert len(interrupted) <= 8
        df = s.map(prompts(300), checkpoint=ckpt, progress=False, max_tokens=4)
    finally:
        local.latency_ms = 0
    assert df["ok"].all() and df["cache_hit"].sum() == len(partial)
    assert local.stats.requests <= 300 + 8


def test_cancelling_amap_keeps_the_finished_items_in_the_checkpoint(local, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    local.latency_ms = 30

    s = session_for(local, concurrency=4)

    async def main() -> None:
        task = asyncio.ensure_future(
            s.amap(prompts(200), checkpoint=ckpt, progress=False, max_tokens=4)
        )
        while local.stats.completed < 8:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await s.aclose()

    try:
        asyncio.run(main())
    finally:
        local.latency_ms = 0
    # every answer the client received before the cancel is in the checkpoint (the server may
    # have sent a few more that were still on their way when the cancel came)
    received = sum(1 for r in s.records if r.ok)
    assert 8 - 4 <= received == len(KeyStore(ckpt)) <= local.stats.completed


def test_progress_shows_done_failed_and_cached_counts(local, tmp_path, capsys):
    ckpt = tmp_path / "run.sqlite"
    s = session_for(local)
    s.map(prompts(5), checkpoint=ckpt, progress=False)
    local.faults.push(faults.status(400))
    s.map(prompts(8), checkpoint=ckpt, concurrency=1)
    err = capsys.readouterr().err
    assert "8/8" in err and "done=2 failed=1 cached=5" in err


def test_a_concurrency_above_the_sessions_is_capped_with_a_warning(local):
    with pytest.warns(UserWarning, match="capped by the session's concurrency=2") as caught:
        df = session_for(local, concurrency=2).map(prompts(3), concurrency=5, progress=False)
    assert caught[0].filename == __file__  # points at the caller's line
    assert df["ok"].all()


def test_map_and_amap_take_the_same_parameters():
    import inspect

    sync = inspect.signature(holynb.Session.map).parameters
    asynchronous = inspect.signature(holynb.Session.amap).parameters
    assert list(sync) == list(asynchronous)


def test_nothing_is_left_running_after_map(local):
    before = threading.active_count()
    session_for(local).map(prompts(50), progress=False)
    assert threading.active_count() <= before + 1  # at most holynb's loop thread


def test_any_iterable_of_prompts_works_and_a_single_string_is_refused(local):
    df = session_for(local).map((f"gen {i}" for i in range(3)), progress=False)
    assert df["ok"].all() and df.index.equals(pd.RangeIndex(3))
    with pytest.raises(holynb.ConfigurationError, match="For one prompt use"):
        session_for(local).map("just one", progress=False)
    with pytest.raises(holynb.ConfigurationError, match=r"pd\.Series"):
        session_for(local).map({"a": "x"}, progress=False)


def test_no_prompts_give_an_empty_frame_with_the_columns(local):
    df = session_for(local).map([], progress=True)
    assert list(df.columns) == list(RESULT_COLUMNS) and len(df) == 0
    assert df["text"].dtype == object and df["ok"].dtype == bool
    assert local.stats.requests == 0


def test_a_run_of_request_specs_may_ask_each_item_of_another_model(local, tmp_path):
    from holynb.bulk import MapRun, Request
    from holynb.server.models import echo

    local.register_model("local/echo-b", echo)
    s = session_for(local)
    specs = [Request("same prompt", model=m) for m in ("local/echo", "local/echo-b")]
    ckpt = tmp_path / "run.sqlite"
    df = asyncio.run(MapRun(s, specs, checkpoint=ckpt, progress=False).arun())
    assert df["model"].tolist() == ["local/echo", "local/echo-b"] and df["ok"].all()
    assert len(KeyStore(ckpt)) == 2  # one key per model


def test_identical_requests_in_one_map_are_sent_once_and_share_the_answer(local):
    # the budget holds the worst case of 3 requests (50 tokens each), not of 6
    s = session_for(local, prices=PRICES, budget_usd=0.003)
    items = ["same", "other", "same", "same", "other", "alone"]
    df = s.map(items, progress=False, max_tokens=50)
    assert local.stats.requests == 3  # "same", "other", "alone": once each
    assert len(df) == 6 and df["ok"].all() and df["prompt"].tolist() == items
    assert df["duplicate_of"].tolist() == [None, None, 0, 0, 1, None]
    assert (df.loc[[2, 3], "text"] == df.loc[0, "text"]).all()
    assert (df.loc[[2, 3, 4], "attempts"] == 0).all()  # nothing was sent for them
    assert (df.loc[[2, 3, 4], "cost_usd"] == 0).all()  # paid once, on the first row
    assert df["cost_usd"].sum() == pytest.approx(s.total_cost_usd)
    assert len(s.ledger) == 3


def test_a_shared_failure_is_on_every_row_that_asked_it(local):
    s = session_for(local, retry=RetryPolicy(max_retries=0))
    local.faults.push(faults.status(400))
    df = s.map(["same", "same", "same"], progress=False, concurrency=1)
    assert local.stats.requests == 1
    assert (~df["ok"]).all() and df["error"].str.startswith("BadRequestError").all()
    assert df["duplicate_of"].tolist() == [None, 0, 0]


def test_a_map_with_duplicates_resumes_from_the_checkpoint(local, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    s = session_for(local)
    first = s.map(["a", "b", "a"], checkpoint=ckpt, progress=False, max_tokens=6)
    again = s.map(["a", "b", "a"], checkpoint=ckpt, progress=False, max_tokens=6)
    assert local.stats.requests == 2 and len(KeyStore(ckpt)) == 2
    assert again["text"].tolist() == first["text"].tolist()
    assert again["duplicate_of"].tolist() == [None, None, 0]
