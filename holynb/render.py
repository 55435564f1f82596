"""Model answers as safe HTML: Markdown rendered with raw HTML off, then sanitised.

A model's answer is untrusted: JupyterLab does not sanitise outputs produced in the running
session, so ``<img src=x onerror=...>`` in an answer would run if shown as HTML or Markdown.
Everything shown goes through ``render_markdown`` (or ``escape_text``):

>>> render_markdown("**hi** <img src=x onerror=alert(1)>")
'<p><strong>hi</strong> &lt;img src=x onerror=alert(1)&gt;</p>\\n'

Two layers: markdown-it-py (CommonMark, tables, strikethrough; raw HTML disabled; links only
``http``, ``https``, ``mailto`` and ``#anchors``; images become links, so an answer cannot make
the browser fetch a URL by itself; code blocks highlighted by ``holynb.highlight``) and nh3, an
allow-list sanitiser (no scripts, styles, frames, event handlers or ``javascript:`` URLs; links
get ``rel="noopener noreferrer"``; classes only holynb's own). When either library is missing or
fails, or the Markdown nests deeper than ``MAX_NESTING`` (markdown-it would skip the rest), the
text is escaped and shown as it is: an answer never loses text on screen.

``MarkdownStream`` renders a growing answer cheaply: blocks that can no longer change are
rendered once; only the open tail is rendered again on each update.
"""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Callable
from typing import Any

from holynb.highlight import BLOCK_CLASS, CLASSES, code_html

__all__ = ["IGNORE_MATHS", "MarkdownStream", "escape_text", "plain_html", "render_markdown"]

_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
    "span",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}, "span": set(),
}  # fmt: skip
IGNORE_MATHS = "mathjax_ignore"  # JupyterLab's MathJax does not typeset inside this class
_CLASSES = {"span": {IGNORE_MATHS, *CLASSES}, "pre": {BLOCK_CLASS}}
_DOLLAR = f'<span class="{IGNORE_MATHS}">$</span>'

_URL_SCHEMES = {"http", "https", "mailto"}
_LINK = re.compile(r"(?:https?:|mailto:|#)", re.IGNORECASE)

# How deep Markdown may nest (a list item in a list counts two) and still render as Markdown;
# deeper answers are shown as escaped text, whole. markdown-it's default of 20 cut answers with
# lists 10 deep.
MAX_NESTING = 100

_render: Callable[[str], str] | None = None
_unavailable = False


def escape_text(text: str) -> str:
    """``text`` with ``& < > " '`` escaped, safe inside HTML elements and attributes.

    >>> escape_text('<b title="x">')
    '&lt;b title=&quot;x&quot;&gt;'
    """
    return html.escape(text, quote=True)


def plain_html(text: str) -> str:
    """``text`` escaped and shown as it is (line breaks kept): the fallback rendering.

    >>> plain_html("a <b>\\nc")
    '<div class="mathjax_ignore" style="white-space: pre-wrap">a &lt;b&gt;\\nc</div>'
    """
    return f'<div class="{IGNORE_MATHS}" style="white-space: pre-wrap">{escape_text(text)}</div>'


def render_markdown(text: str) -> str:
    """Markdown to sanitised HTML, safe to show in a trusted output (or escaped text if the
    Markdown libraries are missing).

    >>> render_markdown("# Title\\n\\n[ok](https://example.com) [bad](javascript:alert(1))")
    '<h1>Title</h1>\\n<p><a href="https://example.com" rel="noopener noreferrer">ok</a> ...'
    """
    render = _renderer()
    if render is None:
        return plain_html(text)
    try:
        return render(text)
    except Exception:  # a parser bug must not hide the answer; escaping is always safe
        return plain_html(text)


def _renderer() -> Callable[[str], str] | None:
    global _render, _unavailable
    if _render is None and not _unavailable:
        try:
            _render = _build_renderer()
        except ImportError as exc:
            _unavailable = True
            warnings.warn(
                f"Answers are shown as plain text: {exc.name or 'a library'} is missing "
                "(pip install markdown-it-py nh3 renders them as Markdown).",
                stacklevel=3,
            )
    return _render


def _build_renderer() -> Callable[[str], str]:
    import nh3
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.texmath import texmath_plugin

    options = {"html": False, "linkify": False, "typographer": False, "maxNesting": MAX_NESTING}
    md = MarkdownIt("commonmark", options)
    md.enable(["table", "strikethrough"])
    # Maths as pandoc's tex_math_dollars reads it: "$x$" (no space inside the dollars, no digit
    # after the closing one), "$$...$$", "\\(...\\)" and "\\[...\\]"; every other "$" is money.
    md.use(dollarmath_plugin, allow_labels=False, allow_space=False, allow_digits=False,
           double_inline=True)  # fmt: skip
    md.use(texmath_plugin, delimiters="brackets")
    md.add_render_rule("math_inline", _maths_inline)
    md.add_render_rule("math_inline_double", _maths_block)
    md.add_render_rule("math_block", _maths_block)
    md.add_render_rule("math_block_eqno", _maths_block)
    md.add_render_rule("text", _text_without_maths)
    md.validateLink = lambda url: bool(_LINK.match(url.strip()))  # type: ignore[method-assign]
    md.add_render_rule("image", _image_as_link)
    md.add_render_rule("fence", _code_block)
    md.add_render_rule("code_block", _code_block)
    cleaner = nh3.Cleaner(
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer",
        allowed_classes=_CLASSES,
        strip_comments=True,
        filter_style_properties={"text-align"},
    )

    def render(text: str) -> str:
        env: dict[str, Any] = {}
        tokens = md.parse(text, env)
        if _too_deep(tokens):  # markdown-it skips what lies deeper than maxNesting: show it all
            return plain_html(text)
        return cleaner.clean(md.renderer.render(tokens, md.options, env))

    return render


def _too_deep(tokens: list[Any]) -> bool:
    # markdown-it stops parsing (and drops the rest of the text) once a block or an inline
    # span opens at MAX_NESTING; a token that deep means some text may not have been parsed.
    for token in tokens:
        if token.level >= MAX_NESTING - 1:
            return True
        if token.children and _too_deep(token.children):
            return True
    return False


def _maths_inline(self: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    # Written with \\( \\): MathJax typesets it, and a "$" inside cannot pair with money.
    return f"\\({escape_text(tokens[idx].content)}\\)"


def _maths_block(self: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    maths = f"\\[{escape_text(tokens[idx].content.strip())}\\]"
    return maths if tokens[idx].type == "math_inline_double" else f"<p>{maths}</p>\n"


def _text_without_maths(self: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    # A "$" that is not maths (money) is wrapped so JupyterLab's MathJax leaves it as text.
    return escape_text(tokens[idx].content).replace("$", _DOLLAR)


def _code_block(self: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    # Highlighted by the fence's language (``holynb.highlight``), sanitised with the rest.
    token = tokens[idx]
    info = token.info.strip().split(maxsplit=1) if token.type == "fence" else []
    return code_html(token.content, info[0] if info else "")


def _image_as_link(self: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    # An <img> would fetch its URL as soon as it is shown: an answer could leak data that way.
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    src = escape_text(token.attrGet("src") or "")
    return f'<a href="{src}">[image: {escape_text(alt)}]</a>'


# -- rendering a growing answer ----------------------------------------------------------------

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"(?:[-*+]|\d{1,9}[.)])(?:\s|$)")


class MarkdownStream:
    """Renders an answer that grows: settled blocks once, the open tail on every update.

    A block is settled once a blank line outside a code fence is followed by a new top-level
    block (a line that is not indented and not a list item, so loose lists stay whole). Settled
    text is rendered in chunks of at least ``min_chunk`` characters. The pieces can differ from
    one full render in rare cases (reference links defined later, lists split by text), so show
    ``render_markdown(text)`` once the answer is complete.

    >>> stream = MarkdownStream()
    >>> settled, tail = stream.update("# Title\\n\\nFirst para")
    >>> settled, tail = stream.update("# Title\\n\\nFirst paragraph.\\n\\nSecond")
    """

    def __init__(self, min_chunk: int = 2048) -> None:
        self.min_chunk = min_chunk
        self.settled_html: list[str] = []
        self._settled_end = 0  # characters of the text rendered into settled_html
        self._scan = 0  # start of the first line not scanned yet
        self._fence: str | None = None  # the opening fence while inside a code block
        self._after_blank = False
        self._split = 0  # the latest position where the text can be cut

    @property
    def settled_chars(self) -> int:
        """How many characters of the text are rendered for good."""
        return self._settled_end

    def update(self, text: str) -> tuple[list[str], str]:
        """The HTML chunks newly settled by ``text`` (the whole answer so far), and the HTML of
        the tail after them."""
        self._scan_lines(text)
        new: list[str] = []
        if self._split - self._settled_end >= self.min_chunk:
            new.append(render_markdown(text[self._settled_end : self._split]))
            self._settled_end = self._split
            self.settled_html.extend(new)
        tail = text[self._settled_end :]
        return new, render_markdown(tail) if tail else ""

    def _scan_lines(self, text: str) -> None:
        end = text.rfind("\n") + 1  # only complete lines
        pos = self._scan
        while pos < end:
            nl = text.index("\n", pos)
            line = text[pos:nl]
            stripped = line.strip()
            if self._fence is not None:
                if stripped.startswith(self._fence) and not stripped.strip(self._fence[0]):
                    self._fence = None
            elif not stripped:
                self._after_blank = True
            else:
                if self._after_blank and not line[0].isspace() and not _LIST_ITEM.match(line):
                    self._split = pos
                self._after_blank = False
                fence = _FENCE.match(line)
                if fence:
                    self._fence = fence.group(1)
            pos = nl + 1
        self._scan = pos
