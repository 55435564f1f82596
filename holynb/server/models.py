"""The local server's offline text models: ``echo`` (``local/echo``, ``local/slow``) and ``prose``.

``echo`` answers ``"You said: <last user message>."`` and a deterministic passage seeded by the
whole prompt; ``prose`` (a user's own endpoint stand-in) only the passage. Both fit their answer
to the request's ``max_tokens`` so that it ends on a sentence (``fit_sentences``). Tokens are
counted by ``holynb.server.tokens``; the registry is ``holynb.server.registry``.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache
from typing import Any

import orjson

from holynb.server.tokens import content_text, count_tokens

__all__ = ["closing_sentence", "echo", "fit_sentences", "passage", "prose"]

_OPENERS = (
    "Streaming", "A local model", "The notebook", "Every token", "This demo", "The server",
    "A patient client", "The ledger", "Each chunk", "The widget", "A retry", "The kernel",
)  # fmt: skip
_VERBS = (
    "arrives", "travels", "waits", "counts", "keeps going", "records the call", "shows up",
    "measures time", "repeats itself", "settles down",
)  # fmt: skip
_TAILS = (
    "one piece at a time", "over the loopback interface", "without touching the network",
    "exactly as the last run did", "before the next cell runs", "so the cost stays visible",
    "while the progress bar moves", "in the same order every time",
    "with a request id attached", "until the stream says done",
)  # fmt: skip
_LIST_ITEMS = (
    "tokens are counted", "latency is measured", "costs are recorded", "errors are kept",
    "retries are bounded", "answers are repeatable",
)  # fmt: skip


@lru_cache(maxsize=4096)
def passage(seed: bytes) -> str:
    """A deterministic passage of 60 to 120 tokens, chosen by ``seed``."""
    rng = random.Random(seed)
    target = rng.randint(60, 99)  # the last sentence and a list may add up to 21 more
    paragraphs: list[str] = []
    sentences: list[str] = []
    used = 0
    while used < target:
        sentence = f"{rng.choice(_OPENERS)} {rng.choice(_VERBS)} {rng.choice(_TAILS)}."
        sentences.append(sentence)
        used += count_tokens(sentence)
        if len(sentences) == 4:
            paragraphs.append(" ".join(sentences))
            sentences = []
            if rng.random() < 0.3:
                items = rng.sample(_LIST_ITEMS, 2)
                paragraphs.append("\n".join(f"- {item}" for item in items))
                used += sum(count_tokens(f"\n- {item}") for item in items)
    if sentences:
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def _prompt_seed(messages: list[dict[str, Any]], params: dict[str, Any]) -> bytes:
    data = orjson.dumps([messages, params.get("seed")], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=16).digest()


def echo(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """``"You said: <last user message>."`` and a passage seeded by the whole prompt."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last is None:
        said = "You said nothing."
    else:
        text = " ".join(content_text(last.get("content")).split())
        content = last.get("content")
        images = (
            sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
            if isinstance(content, list)
            else 0
        )
        if images:
            text = f"{text} [{images} image{'s' if images > 1 else ''}]".lstrip()
        if not text:
            said = "You said nothing."
        else:
            said = f"You said: {text}" + ("" if text[-1:] in (".", "!", "?") else ".")
    answer = f"{said} {passage(_prompt_seed(messages, params))}"
    return fit_sentences(answer, _cap(params), keep=count_tokens(said))


def _cap(params: dict[str, Any]) -> int | None:
    value = params.get("max_completion_tokens")
    value = value if value is not None else params.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else None


# a closing sentence of exactly n tokens, to fill an answer up to its cap
_CLOSERS = {
    2: "Enough.",
    3: "Nothing more.",
    4: "That is all.",
    5: "That is enough now.",
    6: "That is all for now.",
    7: "And that is all for now.",
    8: "And that is all there is now.",
}


def closing_sentence(n: int) -> str:
    """A closing sentence of exactly ``n`` tokens (``n`` >= 2), to fill an answer to its cap."""
    if n in _CLOSERS:
        return _CLOSERS[n]
    return f"{closing_sentence(n - 5)} The cap is reached."  # 5 tokens more


def _units(text: str) -> list[str]:
    """``text`` as sentences and list items, each with the whitespace before it."""
    return re.findall(r"\s*(?:- [^\n]*|[^.!?\n]*[.!?])|\s+\S[^\n]*", text)


def fit_sentences(text: str, cap: int | None, *, keep: int = 0) -> str:
    """``text`` arranged so that its first ``cap`` tokens end on a sentence: whole sentences
    (or list items) that fit, then a closing sentence of exactly the tokens left, then the
    rest. The server cuts an answer at ``max_tokens`` as a real API does (``finish_reason``
    "length"), so an offline answer asked for few tokens ends on a sentence, not mid-word.
    Unchanged when it fits whole, or when its first ``keep`` tokens do not fit."""
    if cap is None or count_tokens(text) <= cap:
        return text
    units = _units(text)
    if "".join(units) != text or keep > cap:
        return text
    kept: list[str] = []
    used = 0
    for unit in units:
        n = count_tokens(unit)
        if used + n > cap:
            break
        kept.append(unit)
        used += n
    if used < keep:
        return text
    left = cap - used
    if left == 1 and len(kept) > 1 and used - count_tokens(kept[-1]) >= keep:
        left += count_tokens(kept.pop())  # no one-token sentence: close with a longer one
    if left == 1:
        return text
    closing = f" {closing_sentence(left)}" if left else ""
    rest = "".join(units[len(kept) :])
    return "".join(kept) + closing + rest


def prose(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """A weak model's answer: a deterministic passage chosen by the prompt, never repeating it,
    so never the JSON or the code it was asked for."""
    return f"Here is what I think. {passage(_prompt_seed(messages, params))}"
