"""Fenced code in answers, highlighted with Pygments the way JupyterLab highlights a cell.

``code_html`` turns a code block into ``<pre class="holynb-code"><code>`` with one ``<span
class="hl-…">`` per token; the few classes (``CLASSES``) stand for what JupyterLab's CodeMirror
theme colours (keyword, string, number, comment, definition, builtin, operator, ...), and
``CODE_CSS`` colours them with JupyterLab's own theme variables
(``--jp-mirror-editor-keyword-color``, ``--jp-cell-editor-background``,
``--jp-code-font-family``), so a block in an answer looks like a code cell in the light and the
dark theme alike.

>>> code_html("def f():\\n    return 1\\n", "python")
'<pre class="holynb-code"><code><span class="hl-k">def</span> <span class="hl-d">f</span>...'

The text is escaped here and the HTML is sanitised afterwards with the rest of the answer
(``holynb.render``, which allows exactly these classes). An unknown language, or a block longer
than ``MAX_HIGHLIGHT_CHARS``, is shown escaped without colours.
"""

from __future__ import annotations

import html
from functools import lru_cache
from typing import Any

__all__ = ["BLOCK_CLASS", "CLASSES", "CODE_CSS", "MAX_HIGHLIGHT_CHARS", "code_html"]

BLOCK_CLASS = "holynb-code"
MAX_HIGHLIGHT_CHARS = 100_000  # longer blocks are shown as plain text: lexing costs per update

# Pygments token type (most specific first) -> class; the class -> JupyterLab's CodeMirror look.
_TOKENS = (
    ("Keyword.Constant", "hl-k"),
    ("Operator.Word", "hl-k"),
    ("Keyword", "hl-k"),
    ("Name.Builtin.Pseudo", "hl-v"),
    ("Name.Builtin", "hl-b"),
    ("Name.Function", "hl-d"),
    ("Name.Class", "hl-d"),
    ("Name.Decorator", "hl-mt"),
    ("Name.Tag", "hl-tg"),
    ("Name.Attribute", "hl-at"),
    ("Literal.String", "hl-s"),
    ("Literal.Number", "hl-m"),
    ("Comment", "hl-c"),
    ("Operator", "hl-o"),
    ("Generic.Heading", "hl-h"),
    ("Generic.Subheading", "hl-h"),
)
_LOOKS = {
    "hl-k": "color: var(--jp-mirror-editor-keyword-color); font-weight: bold",
    "hl-v": "color: var(--jp-mirror-editor-variable-2-color)",
    "hl-b": "color: var(--jp-mirror-editor-builtin-color)",
    "hl-d": "color: var(--jp-mirror-editor-def-color)",
    "hl-mt": "color: var(--jp-mirror-editor-meta-color)",
    "hl-tg": "color: var(--jp-mirror-editor-tag-color)",
    "hl-at": "color: var(--jp-mirror-editor-attribute-color)",
    "hl-s": "color: var(--jp-mirror-editor-string-color)",
    "hl-m": "color: var(--jp-mirror-editor-number-color)",
    "hl-c": "color: var(--jp-mirror-editor-comment-color); font-style: italic",
    "hl-o": "color: var(--jp-mirror-editor-operator-color); font-weight: bold",
    "hl-h": "color: var(--jp-mirror-editor-header-color); font-weight: bold",
}
CLASSES = frozenset(_LOOKS)

_BLOCK = (
    "background: var(--jp-cell-editor-background, rgba(127, 127, 127, 0.1)); "
    "border: var(--jp-border-width, 1px) solid var(--jp-cell-editor-border-color, "
    "rgba(127, 127, 127, 0.3)); border-radius: var(--jp-border-radius, 2px); "
    "padding: 6px 8px; overflow-x: auto; color: var(--jp-content-font-color1, inherit); "
    "font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, "
    "13px); line-height: var(--jp-code-line-height, 1.3077)"
)
CODE_CSS = " ".join(
    [
        f".holynb-answer pre.{BLOCK_CLASS} {{ {_BLOCK} }}",
        f".holynb-answer pre.{BLOCK_CLASS} code {{ background: none; padding: 0; "
        "font: inherit; color: inherit; white-space: pre }",
        *(
            f".holynb-answer pre.{BLOCK_CLASS} .{name} {{ {look} }}"
            for name, look in _LOOKS.items()
        ),
    ]
)


def code_html(code: str, language: str = "") -> str:
    """A code block as escaped HTML with highlighting classes (none for an unknown language).

    >>> code_html("x = 1\\n", "py")
    '<pre class="holynb-code"><code>x <span class="hl-o">=</span> <span class="hl-m">1</span>...'
    """
    lexer = _lexer(language.strip().lower()) if len(code) <= MAX_HIGHLIGHT_CHARS else None
    body = html.escape(code, quote=False) if lexer is None else _spans(lexer, code)
    return f'<pre class="{BLOCK_CLASS}"><code>{body}</code></pre>\n'


def _spans(lexer: Any, code: str) -> str:
    parts: list[str] = []
    run: list[str] = []  # the text of consecutive tokens of one class: one span
    current: str | None = None

    def close() -> None:
        text = html.escape("".join(run), quote=False)
        parts.append(f'<span class="{current}">{text}</span>' if current else text)
        run.clear()

    for kind, text in lexer.get_tokens(code):
        name = None if text == "." else _class_of(kind)  # CodeMirror leaves "a.b" plain
        if name != current and run:
            close()
        current = name
        run.append(text)
    if run:
        close()
    return "".join(parts)


@lru_cache(maxsize=256)
def _class_of(kind: Any) -> str | None:
    dotted = str(kind).removeprefix("Token.")
    for prefix, name in _TOKENS:
        if dotted == prefix or dotted.startswith(prefix + "."):
            return name
    return None


@lru_cache(maxsize=64)
def _lexer(language: str) -> Any:
    if not language:
        return None
    try:
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound
    except ImportError:  # shown without colours, never lost
        return None
    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None
