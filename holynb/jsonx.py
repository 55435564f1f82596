"""Find and parse the JSON object in a model's reply, repairing it when it is broken.

Models asked for "ONLY a JSON object" still wrap it in prose or code fences, think aloud in
``<think>`` blocks full of decoy JSON, write Python reprs, leave trailing commas, or get cut off
at ``max_tokens``. :func:`extract_json` recovers the object, or raises
:class:`JSONExtractionError` with the raw text; it never returns ``{}`` or ``""`` for garbage.

Strategy, cheapest first:

1. the whole reply as strict JSON (the fast path);
2. drop reasoning blocks (``<think>``, ``<thinking>``, ``<reasoning>``, ...);
3. candidates: the remaining text, fenced blocks (```` ``` ````, ``~~~``, any tag), then balanced
   ``{...}``/``[...]`` spans found by a string-aware scan (quotes, escapes, comments);
4. strict-parse every candidate before repairing any (a JSON object encoded as a JSON string
   is decoded); only objects and arrays count;
5. repair the candidates that failed: Python literals with :func:`ast.literal_eval`, the rest
   with json-repair (imported only now), refusing the empty or bare-string results it returns
   for garbage;
6. objects nested inside a span that could not be parsed or repaired come last.

With ``expect_keys`` the candidate whose keys overlap most wins (ties: the first one); an array
found in prose ("see [1]") ranks after any object. Limits keep hostile input cheap: at most 400
spans per reply, nesting deeper than 2 is not searched, and json-repair is not run on text nested
deeper than 64 levels, nor on more than ``max_repair_chars`` characters per reply (valid JSON of
any size is still parsed). A reply cut at ``max_tokens`` loses its half-written end before the
repair (a key without its value, a cut ``tr``, a broken ``\\u00`` escape, an object just
opened), so no value is made up for it; what is left is closed exactly when it is valid JSON, and
handed to json-repair only when it is not.

:func:`answer_json` is the stricter reading ``schema=`` answers get: the whole reply (less
whitespace, reasoning blocks, and one code fence with or without a sentence around it) must be
one JSON value. An object inside prose ("I refuse. Example: {...}") is not an answer, two
fenced JSON blocks are ambiguous, and a duplicate key or a non-finite number (``NaN``,
``Infinity``, ``1e999``) is refused rather than read as last-wins or as a float no JSON allows.
Broken JSON that is the whole reply is still repaired (a trailing comma, a cut end).
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib.util import find_spec
from typing import Any

from holynb.errors import JSONExtractionError

__all__ = [
    "MAX_REPAIR_CHARS",
    "JSONExtraction",
    "JSONExtractionError",
    "answer_json",
    "extract_json",
    "extract_json_detailed",
]

_HINT = (
    "Ask the model for JSON mode (response_format={'type': 'json_object'}, or a json_schema), "
    "or send the request again; the full reply is in err.raw."
)


def _error(message: str, *, raw: str = "") -> JSONExtractionError:
    return JSONExtractionError(f"{message}\nHint: {_HINT}", raw=raw)


@dataclass(frozen=True, slots=True)
class JSONExtraction:
    """What :func:`extract_json_detailed` found.

    ``source`` names the strategy: "plain" (the whole reply), "fence", "span",
    "string-encoded", "python-literal" or "repair". ``repaired`` is True when the text was not
    valid JSON as written.
    """

    value: dict[str, Any] | list[Any]
    repaired: bool
    source: str


def extract_json(
    text: str | bytes | None,
    *,
    expect_keys: Iterable[str] | None = None,
    allow_repair: bool = True,
    max_repair_chars: int | None = None,
) -> dict[str, Any] | list[Any]:
    """Return the JSON object (or array) in a model's reply.

    >>> extract_json('Sure! ```json {"success": true, "output": "4",} ``` Hope it helps!')
    {'success': True, 'output': '4'}
    >>> extract_json('{"a": 1} {"success": true}', expect_keys={"success"})
    {'success': True}

    ``expect_keys`` picks among several objects (most keys in common wins); with
    ``allow_repair=False`` only valid JSON is accepted. Valid JSON of any size is parsed, but
    broken JSON is repaired only up to ``max_repair_chars`` characters in all (default
    :data:`MAX_REPAIR_CHARS`, 64,000: repairing a long string cut at ``max_tokens`` takes
    seconds, and the time grows with the square of its length). Raises
    :class:`JSONExtractionError`.
    """
    found = extract_json_detailed(
        text, expect_keys=expect_keys, allow_repair=allow_repair, max_repair_chars=max_repair_chars
    )
    return found.value


def extract_json_detailed(
    text: str | bytes | None,
    *,
    expect_keys: Iterable[str] | None = None,
    allow_repair: bool = True,
    max_repair_chars: int | None = None,
) -> JSONExtraction:
    """Like :func:`extract_json`, but also say how the value was found.

    >>> extract_json_detailed("{'a': True}")
    JSONExtraction(value={'a': True}, repaired=True, source='python-literal')
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    raw = text or ""
    expect = frozenset(expect_keys) if expect_keys is not None else None
    body = raw.lstrip("\ufeff")
    if not body.strip():
        raise _error("The reply is empty: there is no JSON in it.", raw=raw)

    value = _loads(body)  # fast path: the whole reply is JSON
    if isinstance(value, dict | list):
        return JSONExtraction(value, False, "plain")
    if isinstance(value, str) and value.strip():  # the reply was JSON-encoded as a string
        try:
            inner = extract_json_detailed(
                value,
                expect_keys=expect,
                allow_repair=allow_repair,
                max_repair_chars=max_repair_chars,
            )
        except JSONExtractionError:
            pass
        else:
            return JSONExtraction(inner.value, inner.repaired, "string-encoded")
    if value is not _FAIL:
        kind = _SCALAR_NAMES.get(type(value), "value")
        raise _error(
            f"The reply is a bare JSON {kind} ({_excerpt(body)}), not an object or array.",
            raw=raw,
        )

    body = body.replace("\r\n", "\n")
    if title := _html_title(body):
        raise _error(
            f"The reply is an HTML page ({title}), not a model answer: probably a proxy or "
            "gateway error page. Try the request again later.",
            raw=raw,
        )
    body, cut_in_reasoning = _strip_reasoning(body)
    budget = MAX_REPAIR_CHARS if max_repair_chars is None else max_repair_chars
    return _Search(body, raw, expect, allow_repair, cut_in_reasoning, budget).run()


# ---------------------------------------------------------------------------------------------
# strict parsing

_FAIL: Any = object()
_SCALAR_NAMES = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(text: str) -> Any:
    """Strict JSON (no NaN/Infinity), exact big integers; ``_FAIL`` when invalid."""
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError):
        return _FAIL


# ---------------------------------------------------------------------------------------------
# reasoning blocks, HTML pages

_TAGS = "think|thinking|reasoning|reflection|thought"
# A block whose opening tag starts a line: inside valid JSON a tag cannot start a line, since
# JSON strings hold no raw newlines.
_BLOCK_RE = re.compile(rf"^[ \t]*<({_TAGS})\b[^>\n]*>.*?</\1\s*>", re.S | re.I | re.M)
_OPEN_TAG_RE = re.compile(rf"^[ \t]*<({_TAGS})\b[^>\n]*>", re.I | re.M)
_CLOSE_TAG_RE = re.compile(rf"</({_TAGS})\s*>", re.I)
_HTML_RE = re.compile(r"\s*(?:<!--.*?-->\s*)?<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)
_TITLE_RE = re.compile(r"<(title|h1)[^>]*>(.*?)</\1>", re.I | re.S)


def _strip_reasoning(text: str) -> tuple[str, bool]:
    """Drop reasoning blocks; say whether the reply was cut inside one."""
    text = _BLOCK_RE.sub("", text)
    if m := _OPEN_TAG_RE.search(text):  # opened, never closed: cut off while thinking
        return text[: m.start()], True
    if m := _CLOSE_TAG_RE.search(text):
        # Closing tag alone (the chat template sent the opening one): drop what precedes it,
        # as long as something JSON-like follows.
        rest = text[m.end() :]
        if "{" in rest or "[" in rest:
            return rest, False
    return text, False


def _html_title(text: str) -> str | None:
    if not _HTML_RE.match(text):
        return None
    m = _TITLE_RE.search(text)
    title = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", m.group(2))).strip() if m else ""
    return repr(title[:80]) if title else "no title"


# ---------------------------------------------------------------------------------------------
# candidates: fenced blocks and balanced spans


@dataclass(frozen=True, slots=True)
class _Candidate:
    start: int
    end: int
    kind: str  # "plain", "fence" or "span"
    closed: bool = True
    depth: int = 0  # spans: 0 when not inside another span
    bracketed: bool = False  # exactly one balanced (or truncated) span: worth repairing


_FENCE_OPEN_RE = re.compile(r"^[ \t]{0,3}(?:(`{3,})[^`\n]*|(~{3,})[^\n]*)$", re.M)


def _fences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each fenced block's body; an unclosed fence runs to the end."""
    out: list[tuple[int, int]] = []
    pos = 0
    while m := _FENCE_OPEN_RE.search(text, pos):
        fence = m.group(1) or m.group(2)
        start = min(m.end() + 1, len(text))
        close = re.compile(rf"^[ \t]{{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.M)
        if c := close.search(text, start):
            out.append((start, max(start, c.start() - 1)))
            pos = c.end()
        else:
            out.append((start, len(text)))
            break
    return out


_START_RE = re.compile(r"[{\[]")
_TOKEN_RE = re.compile(r"[{}\[\]\"'“/\\]")
_STRING_END = {'"': re.compile(r'[\\"]'), "'": re.compile(r"[\\']"), "“": re.compile(r"[”“\"]")}
_PAIRS = {"}": "{", "]": "["}
_MAX_DEPTH = 2  # spans nested deeper than this are not candidates of their own
_MAX_SPANS = 400  # per reply; a reply with more JSON than that is not an answer


def _spans(text: str) -> list[_Candidate]:
    """Balanced {...}/[...] spans (nested up to _MAX_DEPTH), skipping brackets in strings.

    Strings are double-quoted, single-quoted or smart-quoted (the last two only where a value
    starts, so apostrophes in prose do not count), or escaped (``\\"...\\"``) as in a JSON
    object that was itself JSON-encoded; // and /* */ comments are skipped. Spans still open
    at the end (a truncated reply) are returned with ``closed=False``.
    """
    out: list[_Candidate] = []
    n = len(text)
    pos = 0
    while len(out) < _MAX_SPANS and (m := _START_RE.search(text, pos)):
        stack = [(m.group(), m.start())]
        count = {"{": 0, "[": 0, m.group(): 1}
        pos = m.end()
        while stack and pos < n:
            t = _TOKEN_RE.search(text, pos)
            if t is None:
                pos = n
                break
            c, at, pos = t.group(), t.start(), t.end()
            if c in "{[":
                stack.append((c, at))
                count[c] += 1
            elif c in "}]":
                if not count[_PAIRS[c]]:
                    continue  # a stray closer
                k = len(stack) - 1
                while stack[k][0] != _PAIRS[c]:
                    k -= 1
                if k <= _MAX_DEPTH:
                    out.append(_Candidate(stack[k][1], pos, "span", True, k))
                for opener, _ in stack[k:]:
                    count[opener] -= 1
                del stack[k:]
            elif c == '"' or (c in "'“" and _at_value_start(text, at)):
                pos = _skip_string(text, pos, c)
            elif c == "/" and pos < n and text[pos] in "/*":
                end = text.find("\n" if text[pos] == "/" else "*/", pos + 1)
                pos = n if end < 0 else end + (2 if text[pos] == "*" else 1)
            elif c == "\\" and pos < n and text[pos] == '"':
                pos = _skip_escaped_string(text, pos + 1)
        if stack:  # truncated: each opener still open is a candidate, outermost first
            out.extend(
                _Candidate(s, n, "span", False, k)
                for k, (_, s) in enumerate(stack[: _MAX_DEPTH + 1])
            )
            break
    out.sort(key=lambda c: (c.start, -c.end))
    return out[:_MAX_SPANS]


def _at_value_start(text: str, at: int) -> bool:
    i = at - 1
    while i >= 0 and text[i] in " \t\n\r":
        i -= 1
    return i < 0 or text[i] in "{[,:"


def _skip_string(text: str, pos: int, quote: str) -> int:
    pattern = _STRING_END[quote]
    while m := pattern.search(text, pos):
        if m.group() == "\\":
            pos = m.end() + 1
        else:
            return m.end()
    return len(text)


def _skip_escaped_string(text: str, pos: int) -> int:
    # In a JSON-encoded JSON text a closing \" has 1 backslash, an escaped quote inside the
    # value \\\" has 3, an escaped backslash before the close \\\\\" has 5: close when n % 4 == 1.
    while (q := text.find('"', pos)) >= 0:
        k = q
        while k > 0 and text[k - 1] == "\\":
            k -= 1
        if (q - k) % 4 == 1:
            return q + 1
        pos = q + 1
    return len(text)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# ---------------------------------------------------------------------------------------------
# repair

_PY_HINT_RE = re.compile(r"'|\b(?:True|False|None)\b")
_PROSE_LIST_RE = re.compile(r"\[\s*(?!(?:true|false|null|True|False|None)\b)[^\W\d]")
_EMPTY_RE = re.compile(r"(?://[^\n]*|/\*.*?\*/|[\s,])+", re.S)
# An object starts with a quoted key, an identifier key (JavaScript style), a comment or "}".
_OBJECT_START_RE = re.compile(r"\{\s*(?:[\"'“}]|/[/*]|[^\W\d][\w$-]*\s*:)")
_BRACKETS_RE = re.compile(r"[{}\[\]]")
MAX_REPAIR_CHARS = 64_000  # json-repair is quadratic on a long cut string: ~0.4 s here
_MAX_REPAIR_DEPTH = 64
_repair_json: Any = None


def _python_literal(text: str) -> Any:
    """A Python dict/list repr, exactly (json-repair mangles some escapes)."""
    if not _PY_HINT_RE.search(text) or len(text) > 1_000_000:
        return _FAIL
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in the text
            value = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _FAIL
    return _as_json(value)


def _as_json(value: Any) -> Any:
    """``value`` with tuples as lists, or ``_FAIL`` if it holds anything JSON cannot."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        items = [_as_json(v) for v in value]
        return _FAIL if any(v is _FAIL for v in items) else items
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return _FAIL
        out = {k: _as_json(v) for k, v in value.items()}
        return _FAIL if any(v is _FAIL for v in out.values()) else out
    return _FAIL


def _json_repair(text: str) -> Any:
    global _repair_json
    if _repair_json is None:
        try:
            from json_repair import repair_json
        except ImportError:
            return _FAIL
        _repair_json = repair_json
    # stream_stable keeps trailing newlines in strings: json-repair strips them otherwise, and
    # code output nearly always ends with "\n". Older json-repair lacks the option.
    options = {"return_objects": True, "skip_json_loads": True, "stream_stable": True}
    try:
        return _repair_json(text, **options)
    except TypeError as exc:
        if "stream_stable" not in str(exc):
            return _FAIL
        del options["stream_stable"]
    except Exception:  # a bug in the repair engine must not escape as anything but a refusal
        return _FAIL
    try:
        return _repair_json(text, **options)
    except Exception:
        return _FAIL


def _repair(text: str) -> tuple[Any, str]:
    """Repair one span; ``(_FAIL, "")`` when nothing believable comes out."""
    if _nesting(text) > _MAX_REPAIR_DEPTH:
        return _FAIL, ""  # json-repair is pure Python and recursive
    original = text
    text, closers = _drop_cut_tail(text)
    if not text.strip():
        return _FAIL, ""
    if closers:  # cut at max_tokens: valid JSON up to the cut is closed exactly
        text += closers
        value = _loads(text)
        if isinstance(value, dict | list) and value:
            return value, "repair"
    opener = text.lstrip()[:1]
    value = _python_literal(text)
    source = "python-literal"
    if value is _FAIL:
        value, source = _json_repair(_ESCAPES_RE.sub(_plain_escape, text)), "repair"
        if value is not _FAIL and _SURROGATE_RE.search(text):
            value = _join_surrogates(value)
    if opener == "{" and isinstance(value, list):  # json-repair found several values
        value = next((v for v in value if isinstance(v, dict)), _FAIL)
    if not isinstance(value, dict if opener == "{" else list):
        return _FAIL, ""
    if not value:  # json-repair's answer for garbage, unless the text really was empty
        return (value, source) if _EMPTY_RE.sub("", original) in ("{}", "[]") else (_FAIL, "")
    if isinstance(value, dict) and not _OBJECT_START_RE.match(text):
        return _FAIL, ""  # "{ brace. Result: ..." is prose, not a key
    if isinstance(value, list) and _PROSE_LIST_RE.match(text):
        return _FAIL, ""  # "[see below]", "[Note: ...]" are prose, not lists of strings
    return value, source


# What a reply cut at max_tokens may end with, after the last complete value. json-repair would
# turn each into a value nobody wrote ("b": "" for a key cut before its value, "tr" for a cut
# true), so these are dropped before repairing.
_PARTIAL = (  # a proper prefix of true/false/null/True/False/None, or a number cut mid-way
    r"(?:[tT](?:ru?)?|[fF](?:a(?:ls?)?)?|[nN](?:ul?)?|No?n?"
    r"|-|-?\d+\.|-?\d+(?:\.\d*)?[eE][+-]?)"
)
_KEY = r"(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\W\d][\w$]*)"
_CUT_MEMBER_RE = re.compile(rf"(?:,|(?<=\{{))\s*{_KEY}\s*(?::\s*{_PARTIAL}?)?\s*$")
_CUT_ITEM_RE = re.compile(rf"(?:,|(?<=\[))\s*{_PARTIAL}\s*$")
_CUT_ESCAPE_RE = re.compile(r"(?<!\\)(?:\\\\)*(\\(?:u[0-9a-fA-F]{0,3})?)$")
_HIGH_SURROGATE_RE = re.compile(r"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})$")
_TRAILING_COMMA_RE = re.compile(r",\s*$")
_CUT_TOKEN_RE = re.compile(r"[{}\[\]\"']")


def _drop_cut_tail(text: str) -> tuple[str, str]:
    """``text`` without the half-written end of a reply cut off mid-value, and what closes it
    (a quote and brackets; "" when nothing is open).

    >>> _drop_cut_tail('{"a": [1, {"b": 2, "c":')
    ('{"a": [1, {"b": 2', '}]}')
    >>> _drop_cut_tail('{"s": "caf\\u00')
    ('{"s": "caf"', '}')
    """
    stack: list[str] = []
    pos = 0
    while m := _CUT_TOKEN_RE.search(text, pos):
        c, pos = m.group(), m.end()
        if c in "{[":
            stack.append(c)
        elif c in "}]":
            if stack:
                stack.pop()
        elif c == '"' or _at_value_start(text, m.start()):
            end = _string_end(text, pos, c)
            if end < 0:  # cut inside this string: end it before a broken escape
                if cut := _CUT_ESCAPE_RE.search(text, pos):
                    text = text[: cut.start(1)]
                if high := _HIGH_SURROGATE_RE.search(text, pos):
                    text = text[: high.start(1)]  # the first half of a surrogate pair
                text += c
                break
            pos = end
    while stack:
        cut_re = _CUT_MEMBER_RE if stack[-1] == "{" else _CUT_ITEM_RE
        if m := cut_re.search(text, max(0, len(text) - 1000)):
            text = text[: m.start()]
        text = _TRAILING_COMMA_RE.sub("", text).rstrip()
        if not text.endswith(stack[-1]):
            break
        text = text[:-1]  # opened at the cut, nothing inside: as if never begun
        stack.pop()
    return text, "".join("}" if c == "{" else "]" for c in reversed(stack))


def _string_end(text: str, pos: int, quote: str) -> int:
    """Where the string opened before ``pos`` ends, or -1 when the text ends inside it."""
    pattern = _STRING_END[quote]
    while m := pattern.search(text, pos):
        if m.group() == "\\":
            pos = m.end() + 1
        else:
            return m.end()
    return -1


# json-repair keeps the backslash of \f and \/ ("x\\f" becomes 'x\\\\f'): spell them out first.
_ESCAPES_RE = re.compile(r"(?<!\\)((?:\\\\)*)\\([f/])")


def _plain_escape(m: re.Match[str]) -> str:
    return m.group(1) + ("/" if m.group(2) == "/" else "\\u000c")


_SURROGATE_RE = re.compile(r"\\u[dD][89abAB]")
_LONE_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _join_surrogates(value: Any) -> Any:
    """``value`` with each ``\\ud83d\\ude00`` pair as one character: json-repair leaves the
    two halves apart."""
    if isinstance(value, str):
        if not _LONE_SURROGATE_RE.search(value):
            return value
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [_join_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_join_surrogates(k): _join_surrogates(v) for k, v in value.items()}
    return value


def _nesting(text: str) -> int:
    depth = deepest = 0
    for c in _BRACKETS_RE.findall(text):
        depth = depth + 1 if c in "{[" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


# ---------------------------------------------------------------------------------------------
# the search


@dataclass(slots=True)
class _Found:
    value: dict[str, Any] | list[Any]
    repaired: bool
    source: str
    start: int
    end: int
    phase: int
    prose_array: bool  # "see [1]": ranks after any object
    rank: tuple[int, bool, int, int]  # (-overlap, prose array, phase, order): smallest wins


class _Search:
    """One extraction over a reply whose fast path failed.

    Phases: 0 strict top-level candidates, 1 repair them, 2 strict spans nested in the ones
    that failed, 3 repair those. Each phase runs only if the ones before found nothing good
    enough (any object; with expect_keys, one holding all of them).
    """

    def __init__(
        self,
        body: str,
        raw: str,
        expect: frozenset[str] | None,
        repair: bool,
        cut: bool,
        repair_budget: int,
    ) -> None:
        self.body, self.raw, self.expect, self.allow_repair = body, raw, expect, repair
        self.cut_in_reasoning = cut
        self.max_repair_chars = self.repair_budget = repair_budget
        self.too_large = 0  # size of the largest span not repaired for lack of budget
        self.found: list[_Found] = []
        self.empty_fence = False
        self.truncated = False
        self.tried_repair = False

    def run(self) -> JSONExtraction:
        top, nested = self._candidates()
        failed = self._strict(top, phase=0)
        if not self._good_enough() and self.allow_repair:
            self._repair(failed, phase=1)
        if not self._good_enough() and nested:
            failed = self._strict(nested, phase=2)
            if not self._good_enough() and self.allow_repair:
                self._repair(failed, phase=3)
        if not self.found:
            raise _error(self._why(bool(top)), raw=self.raw)
        best = min(self.found, key=lambda f: f.rank)
        return JSONExtraction(best.value, best.repaired, best.source)

    def _candidates(self) -> tuple[list[_Candidate], list[_Candidate]]:
        body = self.body
        cands = [_Candidate(0, len(body), "plain")]
        for start, end in _fences(body):
            if body[start:end].strip():
                cands.append(_Candidate(start, end, "fence"))
            else:
                self.empty_fence = True
        spans = _spans(body)
        self.truncated = any(not s.closed for s in spans)
        span_keys = {_trim(body, s.start, s.end) for s in spans}
        seen: set[tuple[int, int]] = set()
        top: list[_Candidate] = []
        nested: list[_Candidate] = []
        for c in cands + spans:
            key = _trim(body, c.start, c.end)
            if key[0] == key[1] or key in seen:
                continue
            seen.add(key)
            c = replace(c, start=key[0], end=key[1], bracketed=key in span_keys)
            (nested if c.depth else top).append(c)
        return top[:_MAX_SPANS], nested[:_MAX_SPANS]

    def _score(self, value: Any) -> int:
        if self.expect is None or not isinstance(value, dict):
            return 0
        return len(self.expect.intersection(value))

    def _good_enough(self) -> bool:
        if self.expect is None:
            return any(not f.prose_array for f in self.found)
        return any(self._score(f.value) == len(self.expect) for f in self.found)

    def _covered(self, c: _Candidate, phase: int) -> bool:
        # Inside valid JSON, or inside a repair made in this phase: part of that answer. A
        # repair from an earlier phase is only a guess and does not hide what is inside it.
        return any(
            f.start <= c.start and c.end <= f.end and (not f.repaired or f.phase == phase)
            for f in self.found
        )

    def _add(self, c: _Candidate, value: Any, repaired: bool, source: str, phase: int) -> None:
        prose_array = c.kind == "span" and isinstance(value, list)
        rank = (-self._score(value), prose_array, phase, len(self.found))
        found = _Found(value, repaired, source, c.start, c.end, phase, prose_array, rank)
        self.found.append(found)

    def _strict(self, cands: list[_Candidate], phase: int) -> list[_Candidate]:
        failed: list[_Candidate] = []
        for c in cands:
            if self._covered(c, phase):
                continue
            text = self.body[c.start : c.end]
            value = _loads(text)
            if value is _FAIL and '\\"' in text:  # encoded, but the outer quotes are missing
                value = _loads(f'"{text}"')
            if isinstance(value, str):
                value, kind = _loads(value), "string-encoded"
            else:
                kind = c.kind
            if isinstance(value, dict | list):
                self._add(c, value, False, kind, phase)
                if self._good_enough():
                    return failed
            else:
                failed.append(c)
        return failed

    def _repair(self, cands: list[_Candidate], phase: int) -> None:
        for c in cands:
            if not c.bracketed or self._covered(c, phase):
                continue
            if c.end - c.start > self.repair_budget:
                self.too_large = max(self.too_large, c.end - c.start)
                continue
            self.repair_budget -= c.end - c.start
            self.tried_repair = True
            value, source = _repair(self.body[c.start : c.end])
            if value is _FAIL:
                continue
            self._add(c, value, True, source, phase)
            if self._good_enough():
                return

    def _why(self, had_candidates: bool) -> str:
        if self.cut_in_reasoning:
            return (
                "The reply ended inside a reasoning block (<think>...) before any answer: "
                "raise max_tokens or ask for a shorter answer."
            )
        if not had_candidates or not _START_RE.search(self.body):
            what = "an empty code fence and no" if self.empty_fence else "no"
            return f"The reply has {what} JSON object or array in it ({_excerpt(self.body)})."
        if not self.allow_repair:
            why = "is not valid JSON, and allow_repair=False"
        elif self.too_large and not self.tried_repair:
            return self._too_large()
        elif self.tried_repair and _repair_json is None and not find_spec("json_repair"):
            why = "is not valid JSON; install json-repair (pip install json-repair) to repair it"
        else:
            why = "could not be parsed or repaired"
        msg = f"The JSON-like text in the reply {why} ({_excerpt(self.body)})."
        if self.truncated:
            msg += " It looks cut off (brackets left open): raise max_tokens."
        return msg

    def _too_large(self) -> str:
        msg = (
            f"The JSON in the reply is not valid, and at {self.too_large:,} characters it is too "
            f"large to repair (max_repair_chars={self.max_repair_chars:,}: repairing it could "
            "take seconds)."
        )
        if self.truncated:
            return msg + (
                " It looks cut off: raise max_tokens so the reply is not cut, or ask for a "
                "shorter answer."
            )
        return msg + " Ask for a shorter answer, or pass a larger max_repair_chars to try anyway."


def _excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return f"it starts with {text[:limit]!r}" if len(text) > limit else repr(text)


# ---------------------------------------------------------------------------------------------
# answers: the whole reply is the JSON


class _NotAnAnswer(Exception):
    """Valid-looking JSON that no answer may hold (a duplicate key, a non-finite number)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotAnAnswer(_duplicate_message(key))
            seen.add(key)
    return obj


def _constant_refused(name: str) -> Any:
    raise _NotAnAnswer(_non_finite_message(name))


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: valid JSON syntax, but no finite number
        raise _NotAnAnswer(_non_finite_message(text))
    return value


def _duplicate_message(key: str) -> str:
    return f"duplicate key {key!r} (each key may appear once in an object)"


def _non_finite_message(token: str) -> str:
    return f"{token} is not a finite JSON number (write a number, or null where it is allowed)"


_ANSWER_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_pairs, parse_constant=_constant_refused, parse_float=_finite_float
)
# Outside double-quoted strings: a bare NaN/Infinity/inf (json-repair turns them into strings
# that pydantic reads back as floats) and each object's keys (json-repair keeps the last).
_BARE_CONSTANT_RE = re.compile(
    r'"(?:[^"\\]|\\.)*"|(?<![\w.])(-?(?:NaN|nan|Infinity|inf(?:inity)?))(?![\w.])', re.I
)
_KEY_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[{}\[\]]')


def _answer_loads(text: str) -> Any:
    """Strict JSON that refuses duplicate keys and non-finite numbers (``_NotAnAnswer``);
    ``_FAIL`` when it is not valid JSON."""
    try:
        return _ANSWER_DECODER.decode(text)
    except (ValueError, RecursionError):
        return _FAIL


def _refuse_broken(text: str) -> None:
    """Raise ``_NotAnAnswer`` for what json-repair would hide in broken JSON: a bare non-finite
    constant, or a key given twice in one object."""
    for m in _BARE_CONSTANT_RE.finditer(text):
        if m.group(1):
            raise _NotAnAnswer(_non_finite_message(m.group(1)))
    stack: list[set[str] | None] = []
    for m in _KEY_TOKEN_RE.finditer(text):
        token = m.group()
        if token[0] == '"':
            keys = stack[-1] if stack else None
            if m.group(1) and keys is not None:
                key = token[: token.rindex('"') + 1]
                name = _loads(key)
                name = name if isinstance(name, str) else key[1:-1]
                if name in keys:
                    raise _NotAnAnswer(_duplicate_message(name))
                keys.add(name)
        elif token in "{[":
            stack.append(set() if token == "{" else None)
        elif stack:
            stack.pop()


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def answer_json(text: str | bytes | None) -> Any:
    """The JSON value a reply gives as its whole answer, the reading ``schema=`` uses.

    >>> answer_json('```json\\n{"label": "positive",}\\n```')
    {'label': 'positive'}
    >>> answer_json('I refuse. Example: {"label": "positive"}')
    Traceback (most recent call last):
    holynb.errors.JSONExtractionError: the reply is not JSON: it has a JSON value inside prose ...

    The reply, less whitespace and reasoning blocks (``<think>``...), must be one JSON value,
    or hold exactly one fenced JSON block (a sentence around it is allowed, as chat models
    write it) whose content is one value. Invalid JSON in that place is repaired as by
    :func:`extract_json`; a value inside prose, two JSON blocks, a duplicate key or a
    non-finite number (NaN, Infinity, 1e999) raise :class:`JSONExtractionError` with the
    reason (``str(err)``, no hint) and the reply in ``err.raw``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    raw = text or ""
    try:
        return _answer(raw)
    except _NotAnAnswer as err:
        raise JSONExtractionError(str(err), raw=raw) from None


def _answer(raw: str) -> Any:
    body = raw.lstrip("\ufeff").strip()
    if not body:
        raise JSONExtractionError("the reply is empty: answer with the JSON alone", raw=raw)
    value = _answer_loads(body)  # the fast path: the reply is JSON
    if value is not _FAIL:
        return _unwrapped(value)
    body = body.replace("\r\n", "\n")
    if title := _html_title(body):
        raise JSONExtractionError(
            f"the reply is an HTML page ({title}), not an answer: probably a proxy's error page",
            raw=raw,
        )
    body, cut_in_reasoning = _strip_reasoning(body)
    body = body.strip()
    if cut_in_reasoning and not body:
        raise JSONExtractionError(
            "the reply ended inside a reasoning block (<think>...) before any answer: raise "
            "max_tokens",
            raw=raw,
        )
    value = _whole_value(body)
    if value is not _FAIL:
        return value
    blocks = [body[a:b] for a, b in _fences(body) if body[a:b].strip()[:1] in ("{", "[")]
    if len(blocks) > 1:
        raise JSONExtractionError(
            f"the reply has {len(blocks)} JSON blocks, so which one answers is unclear: answer "
            "with one JSON value alone",
            raw=raw,
        )
    if blocks:
        value = _whole_value(blocks[0].strip())
        if value is not _FAIL:
            return value
        raise JSONExtractionError(
            f"the JSON block in the reply is not valid JSON and could not be repaired "
            f"({_excerpt(blocks[0])})",
            raw=raw,
        )
    if any(
        isinstance(_loads(body[s.start : s.end]), dict | list)
        for s in _spans(body)
        if s.depth == 0 and s.closed
    ):
        raise JSONExtractionError(
            f"the reply is not JSON: it has a JSON value inside prose ({_excerpt(body)}); a "
            "value inside prose is not an answer, answer with the JSON alone",
            raw=raw,
        )
    raise JSONExtractionError(
        f"the reply is not JSON ({_excerpt(body)}): answer with the JSON alone", raw=raw
    )


def _unwrapped(value: Any) -> Any:
    """A reply JSON-encoded as a string (``"{\\"a\\": 1}"``) is the value inside it."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        inner = _answer_loads(value.strip())
        if isinstance(inner, dict | list):
            return inner
    return value


def _whole_value(text: str) -> Any:
    """``text`` as one JSON value, repaired if need be; ``_FAIL`` when it is not one value
    (prose, or a value with prose after it)."""
    if not text:
        return _FAIL
    value = _answer_loads(text)
    if value is not _FAIL:
        return _unwrapped(value)
    first = next((s for s in _spans(text) if s.depth == 0), None)
    if first is None or first.start != 0 or (first.closed and first.end != len(text)):
        return _FAIL
    if len(text) > MAX_REPAIR_CHARS:
        raise _NotAnAnswer(
            f"the JSON in the reply is not valid, and at {len(text):,} characters too large to "
            "repair: ask for a shorter answer"
        )
    _refuse_broken(text)
    value, _ = _repair(text)
    if value is _FAIL:
        return _FAIL
    if _has_non_finite(value):
        raise _NotAnAnswer(_non_finite_message("a number too large for a float"))
    return value
