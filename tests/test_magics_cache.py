"""%llm cache, %%llm --no-cache and --refresh in a plain InteractiveShell."""

from __future__ import annotations

import pytest

from holynb.notebook import magics
from tests.helpers import magic_shell, run_cell as run, session_for


@pytest.fixture
def shell(local, tmp_path):
    yield from magic_shell(session_for(local, cache=tmp_path / "cache.sqlite"))


def test_a_rerun_cell_streams_from_the_cache_and_sends_nothing(shell, local, capsys):
    run(shell, "%%llm\nhello cache")
    first = shell.user_ns["_llm"]
    run(shell, "%%llm\nhello cache")
    assert shell.user_ns["_llm"] == first and local.stats.requests == 1
    assert "You said: hello cache" in capsys.readouterr().out
    assert magics.get_default_session().ledger["cache_hit"].tolist() == [False, True]


def test_no_cache_and_refresh_send_again(shell, local):
    run(shell, "%%llm\nhello cache")
    run(shell, "%%llm --no-cache\nhello cache")
    run(shell, "%%llm --refresh --no-stream\nhello cache")
    assert local.stats.requests == 3
    hits = magics.get_default_session().ledger["cache_hit"]
    assert not hits.any()


def test_cache_line_magic_shows_stats_and_clears(shell, capsys):
    run(shell, "%llm hi")
    run(shell, "%llm hi")
    capsys.readouterr()
    run(shell, "%llm cache")
    out = capsys.readouterr().out
    assert "entries: 1" in out and "hits: 1, misses: 1 (this session)" in out
    run(shell, "%llm cache clear")
    assert "Forgot 1 cached answers." in capsys.readouterr().out
    assert len(magics.get_default_session().cache) == 0


def test_cache_can_be_turned_on_and_off(shell, tmp_path, capsys):
    run(shell, "%llm cache off")
    assert magics.get_default_session().cache is None
    run(shell, "%llm cache")
    assert "No response cache" in capsys.readouterr().out
    run(shell, f"%llm cache on {tmp_path / 'other.sqlite'}")
    assert magics.get_default_session().cache.path == tmp_path / "other.sqlite"
    run(shell, "%llm config model=local/echo")
    s = magics.get_default_session()
    assert s.cache.path == tmp_path / "other.sqlite" and s.cache.base_url == s.base_url


MODELS = "local/echo,local/vision"


def test_several_models_rerun_from_the_cache(shell, local):
    run(shell, f"%%llm -m {MODELS}\nhello columns")
    run(shell, f"%%llm -m {MODELS}\nhello columns")
    assert local.stats.requests == 2
    assert magics.get_default_session().ledger["cache_hit"].tolist() == [False] * 2 + [True] * 2


@pytest.mark.parametrize("flag", ["--refresh", "--no-cache"])
def test_several_models_obey_refresh_and_no_cache(shell, local, flag):
    run(shell, f"%%llm -m {MODELS}\nhello columns")
    run(shell, f"%%llm -m {MODELS} {flag}\nhello columns")
    assert local.stats.requests == 4  # every column asked again
    assert not magics.get_default_session().ledger["cache_hit"].any()


def test_several_models_with_no_cache_store_nothing(shell, local):
    run(shell, f"%%llm -m {MODELS} --no-cache\nhello columns")
    run(shell, f"%%llm -m {MODELS}\nhello columns")
    assert local.stats.requests == 4 and len(magics.get_default_session().cache) == 2
