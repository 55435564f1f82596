"""extract_json against what models really send back instead of "ONLY a JSON object"."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from holynb.errors import HolynbError
from holynb.jsonx import JSONExtraction, JSONExtractionError, extract_json, extract_json_detailed

RESULT = {"success": True, "output": "Hello, world!\n", "error": None, "execution_time_ms": 12}
COMPACT = json.dumps(RESULT)
PRETTY = json.dumps(RESULT, indent=2)
KEYS = {"success", "output", "error", "execution_time_ms"}
OK = {"success": True, "output": "ok\n", "error": None}


def _case(reply: str, expected: Any, repaired: bool, *, keys: set[str] | None = None) -> Any:
    return (reply, expected, repaired, keys)


# (reply, expected value, repaired?, expect_keys)
GOOD: dict[str, Any] = {
    # --- what the prompt asked for, more or less
    "plain compact": _case(COMPACT, RESULT, False),
    "plain pretty": _case(PRETTY, RESULT, False),
    "surrounding whitespace": _case(f"\n\n   {COMPACT}  \n", RESULT, False),
    "byte order mark": _case("\ufeff" + COMPACT, RESULT, False),
    "windows newlines": _case(PRETTY.replace("\n", "\r\n"), RESULT, False),
    "empty object is fine when it really is one": _case("{}", {}, False),
    "array reply in a fence": _case(
        '```json\n[{"cell": 1, "output": "a"}, {"cell": 2, "output": "b"}]\n```',
        [{"cell": 1, "output": "a"}, {"cell": 2, "output": "b"}],
        False,
    ),
    # --- fences
    "gpt json fence": _case(f"```json\n{PRETTY}\n```", RESULT, False),
    "fence with upper-case tag": _case(f"```JSON\n{COMPACT}\n```", RESULT, False),
    "fence without tag": _case(f"```\n{PRETTY}\n```", RESULT, False),
    "tilde fence": _case(f"~~~json\n{PRETTY}\n~~~", RESULT, False),
    "fence with windows newlines": _case(f"```json\r\n{COMPACT}\r\n```\r\n", RESULT, False),
    "fence after a byte order mark": _case(f"\ufeff```json\n{COMPACT}\n```", RESULT, False),
    "one-line fence": _case(f"```json {COMPACT} ```", RESULT, False),
    "empty fence, then the object": _case(f"```\n```\n{COMPACT}", RESULT, False),
    "python fence echoing the code, then the json fence": _case(
        f"Running it:\n```python\nd = {{'a': 1}}\nprint(d)\n```\nResult:\n```json\n{COMPACT}\n```",
        RESULT,
        False,
        keys=KEYS,
    ),
    # --- prose around the object
    "claude prose and fence": _case(
        "I'll trace through this code step by step.\n\nThe function builds the greeting and "
        f"prints it, so the result is:\n\n```json\n{PRETTY}\n```\n\nThe code ran without errors.",
        RESULT,
        False,
    ),
    "gemini trailing commentary with braces": _case(
        f"{PRETTY}\n\n**Explanation:** `print` writes the text and a newline (a set literal "
        "like {1, 2} is not involved).",
        RESULT,
        False,
    ),
    "markdown label before": _case(f"**Result:**\n{COMPACT}", RESULT, False),
    "citation-like brackets before the object": _case(
        'As shown in [1], the result is {"success": true, "output": "ok\\n", "error": null}',
        OK,
        False,
    ),
    # --- reasoning blocks with decoy JSON
    "deepseek think with decoy": _case(
        '<think>\nThe user wants JSON like {"success": false, "output": "", "error": '
        '"NameError"}. Wait, x is defined on line 1, so it succeeds.\n</think>\n\n' + COMPACT,
        RESULT,
        False,
    ),
    "think with a fenced decoy": _case(
        '<think>I could answer ```json\n{"success": false}\n``` but no.</think>\n'
        f"```json\n{COMPACT}\n```",
        RESULT,
        False,
    ),
    "think with a truncated decoy": _case(
        '<think>\nMaybe {"success": tr... no, wait.\n</think>\n' + COMPACT, RESULT, False
    ),
    "closing think tag only (template sent the opening one)": _case(
        'the answer is {"success": false, "output": "draft"}\n</think>\n\n' + COMPACT,
        RESULT,
        False,
    ),
    "reasoning tag": _case(
        '<reasoning>Output would be {"output": "wrong"}</reasoning>\n' + COMPACT, RESULT, False
    ),
    # --- Python instead of JSON
    "python dict repr": _case(repr(RESULT), RESULT, True),
    "python literals in json": _case(
        '{"success": True, "output": "Hello, world!\\n", "error": None, "execution_time_ms": 12}',
        RESULT,
        True,
    ),
    "single quotes with an apostrophe inside double quotes": _case(
        "{'success': True, 'output': \"It's done\\n\", 'error': None}",
        {"success": True, "output": "It's done\n", "error": None},
        True,
    ),
    "python repr with a tuple": _case(
        "{'success': True, 'output': (1, 2), 'error': None}",
        {"success": True, "output": [1, 2], "error": None},
        True,
    ),
    # --- almost-JSON
    "smart quotes": _case(
        "{“success”: true, “output”: “Hello”, “error”: null}",
        {"success": True, "output": "Hello", "error": None},
        True,
    ),
    "trailing commas": _case(PRETTY.replace("12\n", "12,\n"), RESULT, True),
    "trailing comma in an array": _case(
        '{"success": true, "output": [1, 2, 3,], "error": null}',
        {"success": True, "output": [1, 2, 3], "error": None},
        True,
    ),
    "line comments": _case(
        '{\n  "success": true, // ran fine\n  "output": "ok\\n",\n  "error": null // none\n}',
        OK,
        True,
    ),
    "block comment": _case(
        '{"success": true, /* simulated */ "output": "ok\\n", "error": null}', OK, True
    ),
    "missing commas": _case('{"success": true "output": "ok\\n" "error": null}', OK, True),
    "unquoted keys": _case('{success: true, output: "ok\\n", error: null}', {**OK}, True),
    "unescaped newlines in a string": _case(
        '{"success": true, "output": "line 1\nline 2\n", "error": null}',
        {"success": True, "output": "line 1\nline 2\n", "error": None},
        True,
    ),
    "unescaped windows newlines in a string": _case(
        '{"success": true, "output": "a\r\nb", "error": null}',
        {"success": True, "output": "a\nb", "error": None},
        True,
    ),
    "unescaped inner quotes": _case(
        '{"success": true, "output": "He said "hi" to me", "error": null}',
        {"success": True, "output": 'He said "hi" to me', "error": None},
        True,
    ),
    "nested object and a trailing comma: the outer one wins": _case(
        '{"success": true, "output": "ok", "meta": {"lines": 1}, }',
        {"success": True, "output": "ok", "meta": {"lines": 1}},
        True,
    ),
    # --- cut off at max_tokens
    "truncated mid-string": _case(
        '{"success": true, "output": "0\\n1\\n2\\n3',
        {"success": True, "output": "0\n1\n2\n3"},
        True,
    ),
    "truncated after a comma": _case(
        '{"success": true, "output": "done\\n", ',
        {"success": True, "output": "done\n"},
        True,
    ),
    "truncated inside a fence, brackets in the string": _case(
        '```json\n{\n  "success": true,\n  "output": "[1, 4, 9, 16',
        {"success": True, "output": "[1, 4, 9, 16"},
        True,
    ),
    "truncated nested arrays": _case(
        '{"success": true, "output": {"rows": [[1, 2], [3, 4',
        {"success": True, "output": {"rows": [[1, 2], [3, 4]]}},
        True,
    ),
    # --- JSON encoded as a JSON string
    "string-encoded": _case(json.dumps(COMPACT), RESULT, False),
    "string-encoded without the outer quotes": _case(json.dumps(COMPACT)[1:-1], RESULT, False),
    "string-encoded inside prose": _case(f"Result: {json.dumps(COMPACT)} (encoded)", RESULT, False),
    "string-encoded fenced reply": _case(json.dumps(f"```json\n{COMPACT}\n```"), RESULT, False),
    # --- tricky content in the output field
    "braces in the output": _case(
        json.dumps({"success": True, "output": "{'a': 1}\n{}\n", "error": None}),
        {"success": True, "output": "{'a': 1}\n{}\n", "error": None},
        False,
    ),
    "unbalanced brackets in the output, prose around": _case(
        "Here: " + json.dumps({"output": "}}]{{[", "success": True}) + " That's all.",
        {"output": "}}]{{[", "success": True},
        False,
    ),
    "json text in the output": _case(
        "```json\n" + json.dumps({"success": True, "output": '{"x": [1, 2]}\n'}) + "\n```",
        {"success": True, "output": '{"x": [1, 2]}\n'},
        False,
    ),
    "html in the output is not an error page": _case(
        json.dumps({"success": True, "output": "<html><body>hi</body></html>\n"}),
        {"success": True, "output": "<html><body>hi</body></html>\n"},
        False,
    ),
    "unicode output": _case(
        "Output:\n" + json.dumps({"output": "héllo ✓ 你好\n"}, ensure_ascii=False),
        {"output": "héllo ✓ 你好\n"},
        False,
    ),
    # --- several objects
    "several objects: expected keys pick the result": _case(
        '{"language": "python", "version": "3.11"}\n\nExecution result:\n'
        '{"success": true, "output": "42\\n", "error": null}',
        {"success": True, "output": "42\n", "error": None},
        False,
        keys={"success", "output", "error"},
    ),
    "several objects: without expected keys the first wins": _case(
        '{"language": "python"}\n{"success": true, "output": "42\\n", "error": null}',
        {"language": "python"},
        False,
    ),
    "several objects: best overlap wins": _case(
        '{"success": true}\n{"success": true, "output": "x", "error": null}\n{"output": "y"}',
        {"success": True, "output": "x", "error": None},
        False,
        keys={"success", "output", "error"},
    ),
    "valid decoy without the keys, broken answer with them": _case(
        'Input was {"n": 3}. Result: {"success": True, "output": "9\\n", "error": None}',
        {"success": True, "output": "9\n", "error": None},
        True,
        keys={"success", "output", "error"},
    ),
}


@pytest.mark.parametrize(("reply", "expected", "repaired", "keys"), GOOD.values(), ids=GOOD)
def test_recovers_the_object(reply: str, expected: Any, repaired: bool, keys: Any) -> None:
    found = extract_json_detailed(reply, expect_keys=keys)
    assert found.value == expected
    assert found.repaired is repaired


def test_the_table_is_big_enough() -> None:
    assert len(GOOD) >= 40


def test_source_names_the_strategy() -> None:
    assert extract_json_detailed(COMPACT).source == "plain"
    assert extract_json_detailed(f"```json\n{COMPACT}\n```").source == "fence"
    assert extract_json_detailed(f"Result: {COMPACT}.").source == "span"
    assert extract_json_detailed(json.dumps(COMPACT)).source == "string-encoded"
    assert extract_json_detailed(repr(RESULT)).source == "python-literal"
    assert extract_json_detailed('{"a": 1,}').source == "repair"


def test_detailed_result_is_frozen() -> None:
    found = extract_json_detailed(COMPACT)
    assert isinstance(found, JSONExtraction)
    with pytest.raises(AttributeError):
        found.value = {}  # type: ignore[misc]


def test_accepts_bytes() -> None:
    assert extract_json(COMPACT.encode()) == RESULT


def test_repair_keeps_trailing_newlines_in_strings() -> None:
    # json-repair strips a trailing "\n" from strings unless stream_stable is set.
    assert extract_json('{"output": "a\\n\\n", "b": 1,}') == {"output": "a\n\n", "b": 1}


HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
HTML_CLOUDFLARE = (
    "<!DOCTYPE html>\n<html lang='en'><head><title>api.example.com | 524: A timeout occurred"
    "</title><style>body { color: red; } .x { margin: 0 }</style>"
    '<script>var cfg = {"ray": "8a1b"};</script></head><body>Error 524</body></html>'
)

# (reply, words the message must contain)
BAD: dict[str, Any] = {
    "empty": ("", "empty"),
    "whitespace only": ("   \n\t ", "empty"),
    "none (tool call reply)": (None, "empty"),
    "prose only": (
        "I'm sorry, but I can't execute code. The output would be Hello, world!",
        "no JSON",
    ),
    "prose with set braces": ("Use {curly braces} for sets in Python.", "could not be"),
    "prose brackets": ("The result is shown below [see output].", "could not be"),
    "nginx 502 page": (HTML_502, "502 Bad Gateway"),
    "cloudflare page with css and json in a script": (HTML_CLOUDFLARE, "HTML page"),
    "bare number": ("42", "bare JSON number"),
    "bare string": ('"Hello, world!"', "bare JSON string"),
    "bare true": ("true", "bare JSON boolean"),
    "bare null": ("null", "bare JSON null"),
    "empty json fence": ("```json\n```", "empty code fence"),
    "empty fence with blank lines": ("Here you go:\n```\n\n```", "empty code fence"),
    "cut inside the reasoning block": (
        '<think>\nThe code prints {"success": true, "output": "Hel',
        "reasoning block",
    ),
    "only an opening brace": ("{", "cut off"),
    "truncated right after the first key": ('{"success"', "cut off"),
    "nothing after the closing think tag": ("Let me see </think>", "no JSON"),
}


@pytest.mark.parametrize(("reply", "words"), BAD.values(), ids=BAD)
def test_refuses_what_holds_no_json(reply: str | None, words: str) -> None:
    with pytest.raises(JSONExtractionError) as info:
        extract_json(reply)
    assert words in str(info.value)
    assert info.value.raw == (reply or "")


def test_error_is_a_value_error_that_says_what_to_do() -> None:
    with pytest.raises(JSONExtractionError) as info:
        extract_json("no json here")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, HolynbError)
    assert "response_format" in str(info.value)


def test_allow_repair_false_accepts_only_valid_json() -> None:
    assert extract_json(f"Sure: {COMPACT}", allow_repair=False) == RESULT
    with pytest.raises(JSONExtractionError, match="allow_repair=False"):
        extract_json(repr(RESULT), allow_repair=False)


# --- properties ------------------------------------------------------------------------------

tricky_text = st.text(alphabet=st.sampled_from("{}[]\"'\\/:,` \n\tab€"), max_size=12) | st.text(
    max_size=12
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=15,
)
json_objects = st.dictionaries(tricky_text, json_values, max_size=5)
noise = st.text(alphabet=st.characters(blacklist_characters="{[", codec="utf-8"), max_size=60)
encodings = st.sampled_from(
    [{}, {"indent": 2}, {"ensure_ascii": False}, {"separators": (",", ":")}]
)
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(obj=json_objects, before=noise, after=noise, how=encodings)
def test_any_object_in_prose_is_recovered_exactly(
    obj: dict[str, Any], before: str, after: str, how: dict[str, Any]
) -> None:
    found = extract_json_detailed(before + json.dumps(obj, **how) + after)
    assert found.value == obj
    assert found.repaired is False


@fast
@given(obj=json_objects, before=noise, after=noise, tag=st.sampled_from(["json", "JSON", ""]))
def test_any_fenced_object_is_recovered_exactly(
    obj: dict[str, Any], before: str, after: str, tag: str
) -> None:
    reply = f"{before}\n```{tag}\n{json.dumps(obj, indent=2)}\n```\n{after}"
    found = extract_json_detailed(reply)
    assert found.value == obj
    assert found.repaired is False


@settings(max_examples=100, deadline=None)
@given(obj=json_objects, data=st.data())
def test_a_truncated_object_never_crashes(obj: dict[str, Any], data: st.DataObject) -> None:
    text = json.dumps(obj)
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    try:
        value = extract_json(text[:cut])
    except JSONExtractionError:
        return
    assert isinstance(value, dict | list)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("{}[]\"'\\:,tTfnN0 a\n`<>/*"), max_size=40))
def test_garbage_gives_a_value_or_our_error(text: str) -> None:
    try:
        value = extract_json(text)
    except JSONExtractionError:
        return
    assert isinstance(value, dict | list)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "reply",
    ["{" * 50_000, "{" * 50_000 + "]" * 50_000, "[" * 5_000 + "]" * 5_000, '"' + "{" * 5_000],
    ids=["deep open", "mismatched", "too deep to parse", "open string"],
)
def test_hostile_nesting_is_refused_quickly(reply: str) -> None:
    with pytest.raises(JSONExtractionError):
        extract_json(reply)


def test_many_objects_do_not_slow_the_search() -> None:
    assert extract_json('{"a": 1} ' * 20_000) == {"a": 1}


def test_prose_brace_before_a_truncated_object() -> None:
    reply = 'I used a { brace. Result: {"success": true, "output": "abc'
    assert extract_json(reply) == {"success": True, "output": "abc"}


def test_prose_array_ranks_after_a_repaired_object() -> None:
    assert extract_json("See [1]. {'success': True}") == {"success": True}


# -- replies cut at max_tokens: nothing made up --------------------------------------------------

CUT = {
    "key cut before its value": ('{"a": 1, "b":', {"a": 1}),
    "key cut before its value, a space after": ('{"a": 1, "b": ', {"a": 1}),
    "key cut before its colon": ('{"a": 1, "b"', {"a": 1}),
    "nested key cut before its value": ('{"a": {"b": 1, "c":', {"a": {"b": 1}}),
    "key cut in an object in an array": ('{"a": [1, {"k":', {"a": [1]}),
    "cut true": ('{"a": 1, "b": tr', {"a": 1}),
    "cut false in Python style": ("{'a': 1, 'b': Fal", {"a": 1}),
    "cut null in an array": ("[1, 2, nu", [1, 2]),
    "cut exponent": ('{"a": 1, "b": 1.5e', {"a": 1}),
    "escape cut after \\u00": ('{"a": 1, "s": "caf\\u00', {"a": 1, "s": "caf"}),
    "escape cut after the backslash": ('{"a": 1, "s": "x\\', {"a": 1, "s": "x"}),
    "escape cut in an array": ('["a", "b\\u0', ["a", "b"]),
    "escaped form feed and slash": ('{"s": "a\\fb\\/c\\\\f", "b":', {"s": "a\fb/c\\f"}),
    "surrogate pair cut after its first half": ('["ok \\ud83d', ["ok "]),
    "surrogate pair cut in half": ('{"a": 1, "s": "ok \\ud83d\\ude', {"a": 1, "s": "ok "}),
    "complete values are kept": (
        '{"a": true, "b": None, "c": 1.5',
        {"a": True, "b": None, "c": 1.5},
    ),
    "an escaped backslash is no escape": ('{"s": "a\\\\', {"s": "a\\"}),
    "a complete escape is kept": ('{"s": "caf\\u00e9 x', {"s": "café x"}),
    "an escaped surrogate pair is one character": (
        '{"s": "\\ud83d\\ude00", "b":',
        {"s": "\U0001f600"},
    ),
}


@pytest.mark.parametrize(("reply", "expected"), CUT.values(), ids=CUT)
def test_a_cut_reply_loses_its_half_written_end(reply: str, expected: Any) -> None:
    found = extract_json_detailed(reply)
    assert found.value == expected
    assert found.repaired


def test_an_object_whose_only_key_was_cut_is_refused() -> None:
    with pytest.raises(JSONExtractionError, match="cut off"):
        extract_json('{"success":')


# -- size limit on repair ---------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_huge_cut_string_fails_fast_with_a_size_error() -> None:
    reply = '{"success": true, "output": "' + "line of output\\n" * 70_000  # ~1 MB
    start = time.perf_counter()
    with pytest.raises(JSONExtractionError) as info:
        extract_json(reply)
    assert time.perf_counter() - start < 3
    message = str(info.value)
    assert "too large to repair" in message and "max_repair_chars" in message
    assert "raise max_tokens" in message and "shorter answer" in message
    assert info.value.raw == reply


def test_a_huge_valid_reply_still_parses() -> None:
    obj = {"success": True, "output": "line of output\n" * 70_000}
    assert extract_json(json.dumps(obj)) == obj
    assert extract_json(f"Here it is:\n```json\n{json.dumps(obj)}\n```") == obj


def test_the_repair_size_limit_can_be_raised() -> None:
    reply = '{"success": true, "output": "' + "x" * 5_000
    with pytest.raises(JSONExtractionError, match="too large to repair"):
        extract_json(reply, max_repair_chars=1_000)
    assert extract_json(reply, max_repair_chars=10_000) == {"success": True, "output": "x" * 5_000}


flat_objects = st.dictionaries(
    st.text(alphabet="abcxyz_", min_size=1, max_size=5),
    st.one_of(st.booleans(), st.none(), st.integers(-999, 999), st.text(max_size=8)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(obj=flat_objects, data=st.data())
def test_a_cut_reply_never_gets_a_made_up_value(obj: dict[str, Any], data: st.DataObject) -> None:
    text = json.dumps(obj, ensure_ascii=data.draw(st.booleans()))
    cut = data.draw(st.integers(min_value=1, max_value=len(text) - 1))
    try:
        value = extract_json(text[:cut])
    except JSONExtractionError:
        return
    assert isinstance(value, dict) and set(value) <= set(obj)
    last = list(value)[-1] if value else None
    for key, got in value.items():
        want = obj[key]
        if key == last and isinstance(want, str) and isinstance(got, str):
            assert want.startswith(got)  # the string the reply was cut in
        elif key == last and isinstance(want, int) and not isinstance(want, bool):
            assert str(want).startswith(str(got))  # the number it was cut in
        else:
            assert got == want


def test_a_cut_reply_with_nothing_in_it_says_cut_off_not_install() -> None:
    with pytest.raises(JSONExtractionError) as info:
        extract_json('[[{"a":')
    assert "cut off" in str(info.value) and "install" not in str(info.value)
