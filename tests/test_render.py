"""Rendering answers: Markdown becomes HTML, and nothing a model writes can run in the page."""

from __future__ import annotations

import re

import pytest

from holynb import render
from holynb.render import MarkdownStream, escape_text, plain_html, render_markdown

ATTACKS = [
    "<img src=x onerror=alert(1)>",
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=2</script>",
    "<iframe src=https://example.com></iframe>",
    "<svg onload=alert(1)></svg>",
    '<a href="javascript:alert(1)">x</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click]( javascript:alert(1) )",
    "[click](&#106;avascript:alert(1))",
    "[click](java\tscript:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[vb](vbscript:msgbox(1))",
    "<javascript:alert(1)>",
    '![x](https://example.com/a.png "onerror=alert(1)")',
    '![x" onerror="alert(1)](https://example.com/a.png)',
    "![x](javascript:alert(1))",
    "&lt;img src=x onerror=alert(1)&gt;",
    "&#60;script&#62;alert(1)&#60;/script&#62;",
    "<div>\n<script>alert(1)</script>\n</div>",
    "<style>body{display:none}</style>",
    "<!-- <img src=x onerror=alert(1)> -->",
    "<details open ontoggle=alert(1)>",
    "| a |\n|---|\n| <img src=x onerror=alert(1)> |",
    "```html\n<script>alert(1)</script>\n```",
    "`<img src=x onerror=alert(1)>`",
    "> <iframe srcdoc='<script>alert(1)</script>'>",
]

_TAG = re.compile(r"<\s*([a-zA-Z][a-zA-Z0-9]*)([^>]*)>")
_ALLOWED = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
# holynb's own classes: <span> only with a highlighting class (or mathjax_ignore), nothing else
_SPAN = re.compile(r'\s+class="(?:hl-[a-z]+|mathjax_ignore)"')


def assert_inert(html: str) -> None:
    """No tag outside the allow-list, no event handler or script URL in any real tag; a span
    carries one of holynb's classes and nothing else."""
    for name, attrs in _TAG.findall(html):
        if name.lower() == "span":
            assert _SPAN.fullmatch(attrs), (attrs, html)
            continue
        assert name.lower() in _ALLOWED, (name, html)
        assert not re.search(r"\bon\w+\s*=", attrs, re.IGNORECASE), html
        assert "javascript:" not in attrs.lower(), html
        assert "data:" not in attrs.lower(), html
        assert "style=" not in attrs or name in ("th", "td"), html
    assert "<img" not in html and "<script" not in html and "<iframe" not in html


@pytest.mark.parametrize("payload", ATTACKS)
def test_attack_is_neutralised(payload):
    assert_inert(render_markdown(payload))


@pytest.mark.parametrize("payload", ATTACKS)
def test_attack_inside_markdown_context_is_neutralised(payload):
    text = f"# Answer\n\n- item {payload}\n\n> quote {payload}\n\n{payload}\n"
    assert_inert(render_markdown(text))


def test_raw_html_is_shown_as_text():
    html = render_markdown("<img src=x onerror=alert(1)> and <script>alert(2)</script>")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html


def test_script_url_link_stays_text():
    html = render_markdown("[bad](javascript:alert(1))")
    assert "<a" not in html
    assert "[bad](javascript:alert(1))" in html


def test_links_get_rel_noopener():
    html = render_markdown("[ok](https://example.com/a?b=1&c=2)")
    assert html == (
        '<p><a href="https://example.com/a?b=1&amp;c=2" rel="noopener noreferrer">ok</a></p>\n'
    )


def test_mailto_and_anchor_links_are_kept():
    html = render_markdown("[mail](mailto:a@example.com) [here](#section)")
    assert 'href="mailto:a@example.com"' in html
    assert 'href="#section"' in html


def test_relative_links_stay_text():
    # A relative URL would point into the Jupyter server itself.
    assert "<a" not in render_markdown("[files](/api/contents) [up](../secret)")


def test_image_becomes_a_link_and_is_never_fetched():
    html = render_markdown('![a chart](https://example.com/c.png "t")')
    assert "<img" not in html
    assert '<a href="https://example.com/c.png" rel="noopener noreferrer">[image: a chart]</a>' in (
        html
    )


def test_entities_stay_entities():
    html = render_markdown("5 &lt; 6 &amp; 7 > 3 &#60;b&#62;")
    assert "<b>" not in html
    assert "5 &lt; 6 &amp; 7 &gt; 3 &lt;b&gt;" in html


def test_headings_lists_and_emphasis():
    html = render_markdown("# Title\n\n## Sub\n\n- one\n- **two**\n\n1. a\n2. *b*\n\n~~gone~~")
    assert "<h1>Title</h1>" in html and "<h2>Sub</h2>" in html
    assert "<ul>\n<li>one</li>\n<li><strong>two</strong></li>\n</ul>" in html
    assert "<ol>\n<li>a</li>\n<li><em>b</em></li>\n</ol>" in html
    assert "<s>gone</s>" in html


def test_code_fence_keeps_its_text_escaped():
    html = render_markdown("```python\nif a < b:\n    print('<b>')\n```")
    text = re.sub(r"</?span[^>]*>", "", html)  # the highlighting's spans
    assert (
        "<pre class=\"holynb-code\"><code>if a &lt; b:\n    print('&lt;b&gt;')\n</code></pre>"
        in text
    )


def test_table_with_alignment():
    html = render_markdown("| a | b |\n|--:|---|\n| 1 | 2 |")
    assert "<table>" in html and '<th style="text-align:right">a</th>' in html
    assert "<td>2</td>" in html


def test_table_style_allows_only_alignment():
    html = render_markdown("| a |\n|:-:|\n| x |")
    assert 'style="text-align:center"' in html


def test_escape_text_escapes_quotes():
    assert escape_text('<a href="x">\'') == "&lt;a href=&quot;x&quot;&gt;&#x27;"


def test_fallback_escapes_everything(monkeypatch):
    monkeypatch.setattr(render, "_render", None)
    monkeypatch.setattr(render, "_unavailable", True)
    html = render_markdown("**b** <img src=x onerror=alert(1)>")
    assert html == plain_html("**b** <img src=x onerror=alert(1)>")
    assert "<img" not in html


def test_renderer_error_falls_back_to_escaped_text(monkeypatch):
    def broken(text: str) -> str:
        raise RecursionError("too deep")

    monkeypatch.setattr(render, "_render", broken)
    assert render_markdown("<b>x</b>") == plain_html("<b>x</b>")


def test_missing_library_warns_and_escapes(monkeypatch):
    def missing() -> None:
        raise ModuleNotFoundError("No module named 'nh3'", name="nh3")

    monkeypatch.setattr(render, "_render", None)
    monkeypatch.setattr(render, "_unavailable", False)
    monkeypatch.setattr(render, "_build_renderer", missing)
    with pytest.warns(UserWarning, match="nh3"):
        assert render_markdown("<i>x</i>") == plain_html("<i>x</i>")


def test_deeply_nested_markdown_renders_without_error():
    # deeper than markdown-it parses: shown whole as escaped text, never dropped, never raising
    text = ">" * 5000 + " deep <img src=x onerror=alert(1)>\n\n" + "[" * 5000 + "x" + "]" * 5000
    html = render_markdown(text)
    assert html == plain_html(text)  # escaped: no tag of the answer's survives


# -- a growing answer --------------------------------------------------------------------------


def grow(text: str, step: int = 7, min_chunk: int = 64) -> tuple[MarkdownStream, str]:
    stream = MarkdownStream(min_chunk=min_chunk)
    tail = ""
    for end in range(step, len(text) + step, step):
        _, tail = stream.update(text[:end])
    return stream, "".join(stream.settled_html) + tail


def test_stream_of_paragraphs_equals_one_full_render():
    text = "\n\n".join(f"Paragraph {i} with **bold** and `code`." for i in range(60))
    stream, html = grow(text)
    assert len(stream.settled_html) > 5
    assert html == render_markdown(text)


def test_stream_never_splits_a_code_fence():
    code = "\n".join(f"line {i}\n" for i in range(40))  # blank lines inside the fence
    text = f"Intro.\n\n```\n{code}```\n\nAfter the code.\n\n" + "More text. " * 30
    _, html = grow(text)
    assert html == render_markdown(text)
    assert html.count('<pre class="holynb-code">') == 1


def test_stream_keeps_a_loose_list_whole():
    text = "Intro.\n\n" + "\n\n".join(f"- item {i} " + "word " * 10 for i in range(30))
    _, html = grow(text)
    assert html == render_markdown(text)


def test_stream_keeps_indented_continuations_with_their_item():
    text = "1. first\n\n    continued with four spaces\n\n" * 20
    _, html = grow(text)
    assert html == render_markdown(text)


def test_stream_settles_a_block_once_the_next_one_has_a_complete_line():
    stream = MarkdownStream(min_chunk=1)
    assert stream.update("First paragraph.\n\nSecond par") == (
        [],
        ("<p>First paragraph.</p>\n<p>Second par</p>\n"),
    )
    settled, tail = stream.update("First paragraph.\n\nSecond paragraph.\nMore")
    assert settled == ["<p>First paragraph.</p>\n"]
    assert tail == "<p>Second paragraph.\nMore</p>\n"
    assert stream.settled_chars == len("First paragraph.\n\n")


def _nested_list(depth):
    lines = ["  " * i + f"- item{i}" for i in range(depth)]
    return "\n".join(lines) + "\n\nThe end of the answer.\n"


def _nested_quotes(depth):
    return "> " * depth + "deepest\n\nThe end of the answer.\n"


def _all_text_shown(html, words):
    return all(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", html) for word in words)


@pytest.mark.parametrize("depth", [10, 12, 100])
def test_deeply_nested_lists_lose_no_text(depth):
    html = render_markdown(_nested_list(depth))
    assert _all_text_shown(html, [f"item{i}" for i in range(depth)] + ["The end of the answer."])


@pytest.mark.parametrize("depth", [12, 100, 1000])
def test_deeply_nested_blockquotes_lose_no_text(depth):
    html = render_markdown(_nested_quotes(depth))
    assert "deepest" in html and "The end of the answer." in html


def test_twelve_levels_still_render_as_markdown():
    html = render_markdown(_nested_list(12))
    assert html.count("<ul>") == 12


def test_deeper_than_the_limit_is_shown_escaped_and_whole():
    text = _nested_list(render.MAX_NESTING) + "<b>not bold</b>"
    html = render_markdown(text)
    assert "<ul>" not in html and "&lt;b&gt;not bold&lt;/b&gt;" in html
    assert "The end of the answer." in html


def test_a_streamed_deep_answer_loses_no_text():
    text = _nested_list(12) + "\n\nMore after.\n\n" + _nested_quotes(30)
    stream = MarkdownStream(min_chunk=16)
    settled, tail = [], ""
    for end in range(0, len(text) + 1, 37):
        new, tail = stream.update(text[:end])
        settled.extend(new)
    new, tail = stream.update(text)
    html = "".join([*settled, *new, tail])
    assert _all_text_shown(html, ["item11", "More after.", "deepest", "The end of the answer."])


# -- code blocks: highlighted like JupyterLab's cells, still sanitised -------------------------

PY_FENCE = (
    '```python\n@cache\ndef area(r):  # circle\n    return 3.14 * r ** 2 if r else "none"\n```'
)


def test_fenced_code_is_highlighted_with_jupyterlab_classes():
    out = render_markdown(PY_FENCE)
    assert out.startswith('<pre class="holynb-code"><code>')
    for token, name in (("def", "hl-k"), ("area", "hl-d"), ("# circle", "hl-c"),
                        ("3.14", "hl-m"), ('"none"', "hl-s"), ("@cache", "hl-mt")):  # fmt: skip
        assert f'<span class="{name}">{token}</span>' in out, (token, out)
    assert "style=" not in out  # colours come from the style sheet, by class


def test_highlighted_code_loses_no_text():
    import html as html_module

    code = render_markdown(PY_FENCE).split("<code>", 1)[1].split("</code>", 1)[0]
    assert html_module.unescape(re.sub(r"<[^>]+>", "", code)) == PY_FENCE.split("\n", 1)[1][:-3]


def test_code_of_an_unknown_language_is_a_plain_block():
    out = render_markdown("```nosuchlanguage\n<b>x</b> = 1\n```")
    assert out == '<pre class="holynb-code"><code>&lt;b&gt;x&lt;/b&gt; = 1\n</code></pre>\n'


def test_code_cannot_close_its_block_or_bring_classes():
    out = render_markdown('```html\n</code></pre><script>x()</script><span class="hl-k">k\n```')
    assert "<script" not in out and out.count("</pre>") == 1
    assert '<span class="hl-k">k' not in out  # the model's span is text, not a span


def test_answer_html_carries_the_code_style_sheet_only_with_code():
    from holynb.formatting import answer_html
    from holynb.highlight import CODE_CSS

    with_code = answer_html(render_markdown(PY_FENCE))
    assert f"<style>{CODE_CSS}</style>" in with_code
    assert "var(--jp-cell-editor-background" in CODE_CSS
    assert "var(--jp-code-font-family" in CODE_CSS
    assert "var(--jp-mirror-editor-keyword-color)" in CODE_CSS
    assert "<style>" not in answer_html(render_markdown("no code, `inline` only"))


def test_a_very_long_block_is_shown_without_colours():
    from holynb.highlight import MAX_HIGHLIGHT_CHARS

    code = "x = 1\n" * (MAX_HIGHLIGHT_CHARS // 6 + 1)
    out = render_markdown(f"```python\n{code}```")
    assert "<span" not in out and out.count("x = 1") == code.count("x = 1")
