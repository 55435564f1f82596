"""Dry runs: what map, compare and batch would send and cost at most, sending nothing."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

import holynb
from holynb.dry_run import PLAN_COLUMNS
from tests.helpers import session_for

PRICED = {"local/echo": {"input": 2.0, "output": 8.0}, "local/slow": {"input": 1.0, "output": 4.0}}


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def reviews() -> pd.DataFrame:
    return pd.DataFrame({"review": ["great", "awful", "fine"]}, index=["a", "b", "c"])


def test_map_dry_run_sends_nothing_and_has_a_row_per_request(local):
    s = session_for(local, prices=PRICED)
    est = s.map(reviews(), template="Classify: {review}", max_tokens=5, dry_run=True)
    assert local.stats.requests == 0 and local.requests_log == []
    assert list(est.columns) == list(PLAN_COLUMNS)
    assert list(est.index) == ["a", "b", "c"]
    assert list(est["prompt"]) == ["Classify: great", "Classify: awful", "Classify: fine"]
    assert set(est["model"]) == {"local/echo"}
    assert (est["max_completion_tokens"] == 5).all() and (est["prompt_tokens"] > 0).all()
    assert not est["cached"].any() and est["refused"].isna().all()
    assert len(s.ledger) == 0


def test_map_dry_run_worst_case_is_what_the_budget_would_reserve(local):
    s = session_for(local, prices=PRICED)
    est = s.map(["one", "two"], max_tokens=5, dry_run=True)
    bodies = [s.caller.call(p, max_tokens=5).body for p in ["one", "two"]]
    worst = [s.meter.bounds.usd(b) for b in bodies]
    assert list(est["worst_cost_usd"]) == pytest.approx(worst)
    assert est.attrs["worst_cost_usd"] == pytest.approx(sum(worst))
    assert est.attrs["requests"] == 2 and est.attrs["to_send"] == 2
    assert "costing at most" in repr(est) and "nothing was sent" in repr(est)


def test_map_dry_run_counts_images(local):
    s = session_for(local, prices=PRICED)
    plain = s.map(["look"], max_tokens=5, dry_run=True)
    with_image = s.map(["look"], images=[png()], max_tokens=5, dry_run=True)
    assert with_image["prompt_tokens"].iloc[0] > plain["prompt_tokens"].iloc[0]
    assert local.stats.requests == 0


def test_map_dry_run_marks_checkpointed_rows_cached_at_no_cost(local, tmp_path):
    s = session_for(local, prices=PRICED)
    checkpoint = tmp_path / "run.sqlite"
    s.map(["one"], max_tokens=5, checkpoint=checkpoint, progress=False)
    sent = local.stats.requests
    est = s.map(["one", "two"], max_tokens=5, checkpoint=checkpoint, dry_run=True)
    assert list(est["cached"]) == [True, False]
    assert est["worst_cost_usd"].iloc[0] == 0.0 and est["worst_cost_usd"].iloc[1] > 0
    assert est.attrs["to_send"] == 1
    assert local.stats.requests == sent


def test_map_dry_run_counts_a_repeated_prompt_once(local):
    s = session_for(local, prices=PRICED)
    est = s.map(["one", "two", "one"], max_tokens=5, dry_run=True)
    assert list(est["cached"]) == [False, False, True]  # the repeat shares the first's answer
    assert est["worst_cost_usd"].iloc[2] == 0.0 and est.attrs["to_send"] == 2
    assert local.stats.requests == 0


def test_map_dry_run_marks_response_cache_hits(local, tmp_path):
    s = session_for(local, prices=PRICED, cache=tmp_path / "cache.sqlite")
    s.chat("one", max_tokens=5)
    est = s.map(["one", "two"], max_tokens=5, dry_run=True)
    assert list(est["cached"]) == [True, False]
    assert s.cache.stats()["hits"] == 0  # looking is not a hit


def test_map_dry_run_says_which_rows_the_budget_would_refuse(local):
    s = session_for(local, prices=PRICED)
    one = s.meter.bounds.usd(s.caller.call("item 1", max_tokens=50).body)
    s.budget_usd = one * 2.5  # two items fit, the third does not
    est = s.map(["item 1", "item 2", "item 3"], max_tokens=50, dry_run=True)
    assert list(est["refused"].isna()) == [True, True, False]
    assert "budget" in est["refused"].iloc[2]
    assert est.attrs["refused"] == 1 and "1 refused" in repr(est)
    assert local.stats.requests == 0


def test_map_dry_run_of_an_unpriced_model_under_a_budget_is_refused(local):
    s = session_for(local, model="mystery-model", budget_usd=1.0)
    est = s.map(["x"], max_tokens=5, dry_run=True)
    assert est["worst_cost_usd"].isna().all()
    assert "no price" in est["refused"].iloc[0]


def test_map_dry_run_without_a_price_has_an_unknown_total(local):
    s = session_for(local, model="mystery-model")
    est = s.map(["x"], max_tokens=5, dry_run=True)
    assert est.attrs["worst_cost_usd"] is None and "unknown" in repr(est)


def test_map_dry_run_of_a_bad_prompt_says_why_on_its_row(local):
    s = session_for(local, prices=PRICED)
    est = s.map(["fine", 42], max_tokens=5, dry_run=True)
    assert pd.isna(est["refused"].iloc[0]) and "TypeError" in est["refused"].iloc[1]
    assert est.attrs["to_send"] == 1


def test_compare_dry_run_has_a_row_per_prompt_and_model(local):
    s = session_for(local, prices=PRICED)
    est = s.compare(["a", "b"], models=["local/echo", "local/slow"], max_tokens=5, dry_run=True)
    assert local.stats.requests == 0
    assert list(est.columns[:3]) == ["prompt_index", "prompt", "model"]
    assert list(est["model"]) == ["local/echo", "local/slow"] * 2
    assert est.attrs["requests"] == 4 and "costing at most" in repr(est)
    echo, slow = est["worst_cost_usd"].iloc[0], est["worst_cost_usd"].iloc[1]
    assert echo > slow  # each at its own model's price


def test_batch_dry_run_is_at_batch_prices_and_uploads_nothing(local, home):
    s = session_for(local, prices=PRICED)
    before = len(local.batches.all())
    est = s.batch(reviews(), template="Classify: {review}", max_tokens=5, dry_run=True)
    assert isinstance(est, pd.DataFrame) and list(est.index) == ["a", "b", "c"]
    assert local.requests_log == [] and len(local.batches.all()) == before
    assert len(s.batches()) == 0
    body = s.caller.call("Classify: great", max_tokens=5).body
    assert est["worst_cost_usd"].iloc[0] == pytest.approx(s.meter.bounds.usd(body, batch=True))
    assert est.attrs["batch"] is True and "as a batch" in repr(est)


def test_batch_dry_run_refuses_the_whole_job_when_it_does_not_fit(local, home):
    s = session_for(local, prices=PRICED)
    one = s.meter.bounds.usd(s.caller.call("Classify: great", max_tokens=50).body, batch=True)
    s.budget_usd = one * 2.5
    est = s.batch(reviews(), template="Classify: {review}", max_tokens=50, dry_run=True)
    assert est["refused"].notna().all() and "whole job" in est["refused"].iloc[0]


def test_dry_run_is_refused_by_chat():
    s = holynb.Session(base_url="http://127.0.0.1:9/v1", model="local/echo")
    with pytest.raises(TypeError, match="dry_run"):
        s.chat("hi", dry_run=True)


def test_map_progress_bar_shows_cost_so_far_and_the_projected_total(local, capsys):
    s = session_for(local, prices=PRICED, concurrency=1)
    s.map([f"item {i}" for i in range(4)], max_tokens=5)
    err = capsys.readouterr().err
    assert "cost=$" in err and "projected=$" in err
