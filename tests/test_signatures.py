"""Notebook-facing methods spell out their parameters (Shift-Tab shows them), and each sync
method takes exactly what its async twin takes (as simonw/llm's test_async_parity)."""

from __future__ import annotations

import inspect

import pytest

from holynb import Session
from holynb.session import UNCHANGED

PAIRS = [
    ("chat", "achat"),
    ("stream", "astream"),
    ("map", "amap"),
    ("compare", "acompare"),
    ("batch", "abatch"),
    ("models", "amodels"),
]


def _params(name: str) -> list[tuple[str, object, object, object]]:
    sig = inspect.signature(getattr(Session, name))
    return [(p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()]


@pytest.mark.parametrize(("sync", "async_"), PAIRS)
def test_sync_and_async_twins_take_the_same_parameters(sync, async_):
    assert inspect.iscoroutinefunction(getattr(Session, async_)) or async_ == "astream"
    assert _params(sync) == _params(async_)


@pytest.mark.parametrize("name", [n for pair in PAIRS for n in pair])
def test_no_catch_all_keywords_hide_the_parameters(name):
    variadic = [
        p.name
        for p in inspect.signature(getattr(Session, name)).parameters.values()
        if p.kind is inspect.Parameter.VAR_KEYWORD
    ]
    assert variadic in ([], ["params"]), f"{name} hides its parameters behind **{variadic[0]}"


def _session(**kw):
    return Session(
        model="m1", base_url="http://127.0.0.1:9/v1", api_key="sk-test", log_path="", **kw
    )


def test_derive_changes_what_is_given_and_keeps_the_rest():
    s = _session(budget_usd=2.0, rpm=30, prices={"m2": {"input": 1, "output": 2}})
    d = s.derive(model="m2")
    assert (d.model, d.base_url, d.api) == ("m2", s.base_url, s.api)
    assert d.settings.api_key == s.settings.api_key
    assert d.settings.limits == s.settings.limits and d.settings.retry == s.settings.retry
    assert d.prices is s.prices and d.budget_usd == 2.0
    assert s.model == "m1"  # the original is untouched
    assert s.derive(budget_usd=None).budget_usd is None
    assert s.derive(budget_usd=5).budget_usd == 5
    assert s.derive(base_url="http://127.0.0.1:8/v1").base_url == "http://127.0.0.1:8/v1"
    assert repr(UNCHANGED) == "UNCHANGED"
