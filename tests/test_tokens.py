"""Offline token estimates: close to a real tokenizer, with the chat format's overhead."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from holynb.tokens import (
    IMAGE_TOKENS,
    REPLY_PRIMER_TOKENS,
    TOKENS_PER_MESSAGE,
    estimate_messages_tokens,
    estimate_tokens,
)
from tests.helpers import run_without_network

SAMPLES = {
    "english": (
        "The ledger keeps one row per call, failures included, so a notebook can show what a "
        "session cost and where the time went. Prices are data, not code: each one says where it "
        "came from and when it was true, and a model with no known price costs None, never zero."
    ),
    "code": (
        "async def achat(self, prompt: str, *, model: str | None = None) -> ChatResult:\n"
        "    body = self._body(prompt, model)\n"
        "    try:\n"
        "        result = await self._client.complete(body)\n"
        "    except APIError as err:\n"
        '        self._record_failure(body["model"], err)\n'
        "        raise\n"
        "    return self._record(result)\n"
    ),
    "vietnamese": (
        "Trong thời đại AI bùng nổ, việc gọi API LLM (Large Language Model) một cách hiệu quả là "
        "yếu tố then chốt cho mọi ứng dụng. Bài viết này sẽ hướng dẫn bạn xây dựng hệ thống "
        "concurrency request mạnh mẽ với asyncio và aiohttp, đồng thời so sánh chi phí giữa các "
        "nhà cung cấp API hàng đầu."
    ),
    "json": (
        '{"custom_id": "review-0042", "method": "POST", "url": "/v1/chat/completions", '
        '"body": {"model": "gpt-4.1", "messages": [{"role": "user", "content": '
        '"Classify the sentiment of this review."}], "max_tokens": 50}}'
    ),
}
# Counted by a real tokenizer: Mistral's Tekken (tekken_240911.json, shipped offline in the
# PyPI package mistral_common 1.12.0), run with tiktoken 0.14.0. Reproduced by the opt-in test
# at the end of this file.
TEKKEN_COUNTS = {"english": 61, "code": 77, "vietnamese": 75, "json": 75}


def test_empty_text_is_zero_tokens() -> None:
    assert estimate_tokens("") == 0


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_estimate_is_within_15_percent_of_a_real_tokenizer(kind: str) -> None:
    real = TEKKEN_COUNTS[kind]
    assert abs(estimate_tokens(SAMPLES[kind]) - real) <= 0.15 * real


def test_chinese_costs_about_one_token_a_character() -> None:
    text = "人工智能正在改变软件开发的方式"  # 15 characters
    assert 10 <= estimate_tokens(text) <= 15


def test_long_words_count_as_several_tokens() -> None:
    assert estimate_tokens("internationalization") > estimate_tokens("nation")


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_any_text_is_between_one_token_and_one_per_character(text: str) -> None:
    assert 1 <= estimate_tokens(text) <= len(text)


def test_messages_add_the_chat_formats_overhead() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": SAMPLES["english"]},
    ]
    text_tokens = sum(estimate_tokens(m["role"]) + estimate_tokens(m["content"]) for m in messages)
    expected = text_tokens + 2 * TOKENS_PER_MESSAGE + REPLY_PRIMER_TOKENS
    assert estimate_messages_tokens(messages) == expected


def test_a_name_adds_one_token() -> None:
    plain = [{"role": "user", "content": "Hi"}]
    named = [{"role": "user", "content": "Hi", "name": "bob"}]
    assert estimate_messages_tokens(named) == estimate_messages_tokens(plain) + 1 + 1


def test_image_parts_count_a_fixed_number_of_tokens() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 50_000}}
    text = {"type": "text", "text": "What is in this picture?"}
    with_image = [{"role": "user", "content": [text, image]}]
    text_only = [{"role": "user", "content": [text]}]
    assert estimate_messages_tokens(with_image) - estimate_messages_tokens(text_only) == (
        IMAGE_TOKENS
    )


def test_estimating_loads_no_tokenizer_and_uses_no_network() -> None:
    script = """
import sys
from holynb.tokens import estimate_messages_tokens
assert estimate_messages_tokens([{"role": "user", "content": "Xin chào, thế giới"}]) > 0
loaded = {"tiktoken", "tokenizers", "transformers", "sentencepiece"} & set(sys.modules)
assert not loaded, loaded
"""
    run_without_network(script)


def _tekken_file() -> Path | None:
    named = os.environ.get("HOLYNB_TEKKEN_JSON")
    if named:
        return Path(named)
    try:
        import mistral_common  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    return path if path.exists() else None


def test_reference_counts_match_the_tekken_tokenizer() -> None:
    """Opt-in: needs tiktoken and Tekken's file (``pip install mistral_common tiktoken``, or
    HOLYNB_TEKKEN_JSON=path/to/tekken_240911.json); both work offline once installed."""
    tiktoken = pytest.importorskip("tiktoken")
    path = _tekken_file()
    if path is None:
        pytest.skip("Tekken's tokenizer file is not installed (mistral_common)")
    data = json.loads(path.read_text("utf-8"))
    config = data["config"]
    size = config["default_vocab_size"] - config["default_num_special_tokens"]
    ranks = {base64.b64decode(v["token_bytes"]): v["rank"] for v in data["vocab"][:size]}
    tekken = tiktoken.Encoding(
        name="tekken", pat_str=config["pattern"], mergeable_ranks=ranks, special_tokens={}
    )
    assert {k: len(tekken.encode(v)) for k, v in SAMPLES.items()} == TEKKEN_COUNTS
