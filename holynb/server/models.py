"""The local server's offline models and how it counts tokens.

Token counting is a documented heuristic, not a real tokenizer: a token is a run of word
characters (``\\w+``) or one other non-space character, with the whitespace before it attached.
Trailing whitespace is one more token, so the tokens of a text always join back into it:

>>> tokenize("Hello, world!")
['Hello', ',', ' world', '!']

A prompt costs ``sum(tokens(content) + 4 for each message) + 2``; a text part of a content list
counts its text, an image whose data URL can be read counts by the wire format's rule (see
``holynb.image_tokens``), any other part (audio, a file, ...) counts ``NON_TEXT_PART_TOKENS``. A
completion costs one token per streamed content chunk, and the server streams one chunk per
token, so streamed and non-streamed answers report the same usage.

Models are plain functions ``respond(messages, params) -> str`` (or async ones, awaited on the
server's loop) kept in a ``ModelRegistry``; one may raise ``wire.RequestError`` to refuse a
request with that status, as an API does:

>>> models = default_models()   # holynb.server.catalog
>>> models.register("local/upper", lambda messages, params: messages[-1]["content"].upper())
"""

from __future__ import annotations

import hashlib
import inspect
import random
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from holynb.server.wire import RequestError, max_tokens

Respond = Callable[[list[dict[str, Any]], dict[str, Any]], str | Awaitable[str]]

NON_TEXT_PART_TOKENS = 85
TOKENS_PER_MESSAGE = 4
TOKENS_PER_PROMPT = 2

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def tokenize(text: str) -> list[str]:
    """The pieces of ``text``, one per token; they join back into ``text``."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens ``text`` is (see the module docstring for the rule)."""
    return len(_TOKEN.findall(text))


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def content_tokens(content: Any, api: str = "openai") -> int:
    """Tokens of a message's content: text counted, every non-text part a fixed amount."""
    if isinstance(content, str):
        return count_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            total += count_tokens(part["text"])
        elif isinstance(part, dict) and part.get("type") == "image_url":
            from holynb.server.vision import image_part_tokens

            tokens = image_part_tokens(part, api)
            total += NON_TEXT_PART_TOKENS if tokens is None else tokens
        else:
            total += NON_TEXT_PART_TOKENS
    return total


def prompt_tokens(messages: list[dict[str, Any]], api: str = "openai") -> int:
    """Tokens of a whole prompt: each message's content plus 4, plus 2 for the reply's priming."""
    per_message = sum(content_tokens(m.get("content"), api) for m in messages)
    return per_message + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_PROMPT


# -- models ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """One model the server answers for.

    ``latency_ms`` is added to the server's own latency before the first byte;
    ``tokens_per_second`` paces its streams (None: the server's setting). ``runs_code`` marks a
    model that executes what the request sends (``local/python``): the server refuses it unless
    started with ``python=True`` (``holynb serve --enable-python``).
    """

    name: str
    respond: Respond
    latency_ms: float = 0.0
    tokens_per_second: float | None = None
    owned_by: str = "holynb"
    runs_code: bool = False


class ModelRegistry:
    """The models a server knows, by name; safe to extend while the server runs.

    >>> registry = ModelRegistry()
    >>> registry.register("local/json", lambda messages, params: '{"ok": true}')
    Model(name='local/json', ...)
    """

    def __init__(self, models: list[Model] | None = None) -> None:
        self._models: dict[str, Model] = {m.name: m for m in models or ()}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        respond: Respond,
        *,
        latency_ms: float = 0.0,
        tokens_per_second: float | None = None,
        runs_code: bool | None = None,
    ) -> Model:
        """Add (or replace) the model ``name``, answering with ``respond(messages, params)``.

        ``runs_code`` (default: the ``runs_code`` attribute of ``respond``, else False) marks a
        model that executes code from the request; the server serves it only when enabled."""
        if not name or not isinstance(name, str):
            raise ValueError("A model needs a non-empty string name, e.g. 'local/mine'.")
        if not callable(respond):
            raise TypeError("respond must be a function (messages, params) -> str.")
        if runs_code is None:
            runs_code = bool(getattr(respond, "runs_code", False))
        model = Model(name, respond, latency_ms, tokens_per_second, runs_code=runs_code)
        with self._lock:
            self._models = {**self._models, name: model}  # copy-on-write: readers never lock
        return model

    def get(self, name: str) -> Model | None:
        """The model called ``name``, or None."""
        return self._models.get(name)

    def names(self) -> list[str]:
        """All model names, in registration order."""
        return list(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[Model]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)


# -- the echo model ----------------------------------------------------------------------------

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


def _closer(n: int) -> str:
    if n in _CLOSERS:
        return _CLOSERS[n]
    return f"{_closer(n - 5)} The cap is reached."  # 5 tokens more


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
    closing = f" {_closer(left)}" if left else ""
    rest = "".join(units[len(kept) :])
    return "".join(kept) + closing + rest


def prose(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """A weak model's answer: a deterministic passage chosen by the prompt, never repeating it,
    so never the JSON or the code it was asked for."""
    return f"Here is what I think. {passage(_prompt_seed(messages, params))}"


async def generate(
    model: Model, messages: list[dict[str, Any]], body: dict[str, Any]
) -> tuple[list[str], str]:
    """Run ``model`` on a request: its answer's tokens, cut at the request's max_tokens, and the
    finish reason (``"stop"`` or ``"length"``). A model that refuses raises RequestError (as an
    API does, e.g. local/json-noformat); any other failure is a 500."""
    try:
        text = model.respond(messages, body)
        if inspect.isawaitable(text):  # async models (e.g. local/python) keep the loop free
            text = await text
        if not isinstance(text, str):
            raise TypeError(f"it returned {type(text).__name__}, not str")
    except RequestError:
        raise
    except Exception as exc:
        raise RequestError(
            500, f"The model {model.name!r} failed: {exc}", type="server_error"
        ) from None
    pieces = tokenize(text)
    limit = max_tokens(body)
    if limit is not None and len(pieces) > limit:
        return pieces[:limit], "length"
    return pieces, "stop"
