r"""The ``%%llm`` prompt template: a cell's text with the notebook's context filled in.

What the user typed is read once, left to right; what is filled in is never read again, so a
value's own braces, or the words "In[2]" and "Err" inside it, reach the model as they are.

- ``{name}``: the value of a variable (``str(value)``); a name that is not defined is an error
  (a typo is not sent).
- ``{In[n]}``, ``{Out[n]}``: cell n's input or output; ``{In[-1]}`` is the cell before this one,
  ``{Out[-2]}`` the output of the one before that.
- ``{Err}``: the traceback of the last error; ``{Err[n]}`` the traceback of cell n.
- Any other brace text (LaTeX ``$e^{i\pi}$``, C code, JSON) is sent as written.
- ``{{name}}`` is sent as ``{name}``. In a prompt whose every brace is a reference or doubled
  (the template form, e.g. ``Reply {{"temp": 1}} for {city}``) ``{{`` and ``}}`` are literal
  braces; in any other prompt doubled braces are sent as written too.

The bare words ``In[2]`` and ``Err`` are plain text. ``%%llm -n`` sends a cell without any of
this.

>>> filled = build_prompt("Why does {In[-1]} fail? {Err}", get_ipython(), tracebacks)
>>> filled.text, filled.note
('Why does ... fail? ...', '+ In[29] and traceback of In[30]')
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from holynb.errors import PromptError

__all__ = ["FilledPrompt", "build_prompt", "cell_number", "is_reference", "readable_traceback"]

# a doubled pair {{x}}, a doubled brace, a single pair {x}, a lone brace
_PIECE = re.compile(r"\{\{([^{}\n]*)\}\}|\{\{|\}\}|\{([^{}\n]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CELL = re.compile(r"(In|Out|Err)\[\s*(-?\d+)\s*\]\Z")
_BACKTICKS = re.compile(r"`{3,}")
_UNDEFINED_HINT = (
    "Define it, write {{{{{ref}}}}} to send {{{ref}}} as written, or run the cell with -n "
    "(--no-interpolate) to send the whole cell as typed."
)


@dataclass(frozen=True)
class FilledPrompt:
    """A prompt with its references filled in, and what they pulled in.

    ``pulled_in`` names each variable, cell input, output or traceback that went into the
    prompt, e.g. ``("{city}", "In[3]", "traceback of In[30]")``; ``note`` says it in one line
    for a status line.
    """

    text: str
    pulled_in: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """``"+ In[3] and traceback of In[30]"``, or ``""`` when nothing was pulled in."""
        if not self.pulled_in:
            return ""
        items = list(dict.fromkeys(self.pulled_in))
        listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        return f"+ {listed}"


def cell_number(shell: Any) -> int:
    """The number the user sees beside the running cell (``[n]``), which is also its index in
    ``In``/``Out``. IPython 9 counts the next cell in ``shell.execution_count`` while a cell
    runs; the running cell's own number is on its ``ExecutionResult``."""
    running = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    count = getattr(running, "execution_count", None)
    return count if isinstance(count, int) else int(shell.execution_count)


def build_prompt(
    template: str, shell: Any, tracebacks: Mapping[int, str] | None = None
) -> FilledPrompt:
    """Fill ``template`` from the shell's namespace and history in one pass.

    ``tracebacks`` maps cell numbers to the traceback each cell raised (the magics record them
    with ``readable_traceback``); without one, ``{Err}`` falls back to the last error Python
    kept (``sys.last_value``). Raises ``PromptError`` naming the reference and what to write
    instead.
    """
    tracebacks = tracebacks or {}
    current = cell_number(shell)
    pieces = list(_PIECE.finditer(template))
    template_form = all(_in_template_form(piece) for piece in pieces)
    pulled: list[str] = []
    out: list[str] = []
    pos = 0
    for match in pieces:
        out.append(template[pos : match.start()])
        pos = match.end()
        doubled, single = match.group(1), match.group(2)
        if doubled is not None:  # {{x}}: {x}, unless pasted text writes it so
            literal = template_form or is_reference(doubled)
            out.append(f"{{{doubled}}}" if literal else match.group(0))
        elif single is not None and is_reference(single):
            text, source = _fill(single, shell, current, tracebacks)
            out.append(text)
            if source:
                pulled.append(source)
        elif template_form and match.group(0) in ("{{", "}}"):
            out.append(match.group(0)[0])
        else:  # brace text that is not a reference: sent as written
            out.append(match.group(0))
    out.append(template[pos:])
    return FilledPrompt("".join(out), tuple(pulled))


def is_reference(ref: str) -> bool:
    """Whether ``{ref}`` is something holynb fills in: a variable name, ``In[n]``,
    ``Out[n]``, ``Err``, ``Err[n]`` (or ``In``/``Out`` without the number they need)."""
    return bool(_NAME.match(ref) or _CELL.match(ref))


def _in_template_form(piece: re.Match[str]) -> bool:
    # a prompt written entirely in the template language: every brace a reference or doubled
    single = piece.group(2)
    if single is not None:
        return is_reference(single)
    return piece.group(0) not in ("{", "}")


def _fill(
    ref: str, shell: Any, current: int, tracebacks: Mapping[int, str]
) -> tuple[str, str | None]:
    ns = shell.user_ns
    if ref == "Err":
        return _last_error(shell, tracebacks)
    cell = _CELL.match(ref)
    if cell:
        kind, n = cell.group(1), int(cell.group(2))
        number = current + n if n < 0 else n  # -1: the cell before this one
        if kind == "In":
            history = ns.get("In", [])
            if not 0 < number < len(history):
                raise PromptError(f"{{{ref}}} in the prompt: there is no cell {number} yet.")
            return _fenced(history[number], "python"), f"In[{number}]"
        if kind == "Out":
            outputs = ns.get("Out", {})
            if number not in outputs:
                raise PromptError(
                    f"{{{ref}}} in the prompt: cell {number} has no output (only a value on "
                    "a cell's last line is kept in Out)."
                )
            return _fenced(repr(outputs[number])), f"Out[{number}]"
        traceback_text = tracebacks.get(number)
        if traceback_text is None:
            raise PromptError(
                f"{{{ref}}} in the prompt: cell {number} raised no error that holynb saw "
                "(errors are kept from the cell after %load_ext holynb on)."
            )
        return _fenced(traceback_text), f"traceback of In[{number}]"
    if ref in ("In", "Out"):
        raise PromptError(
            f"{{{ref}}} in the prompt needs a cell number: {{{ref}[3]}}, or {{{ref}[-1]}} "
            "for the cell before this one."
        )
    if ref not in ns:
        raise PromptError(
            f"{{{ref}}} in the prompt: no variable {ref!r} is defined. "
            + _UNDEFINED_HINT.format(ref=ref)
        )
    return str(ns[ref]), f"{{{ref}}}"


def _last_error(shell: Any, tracebacks: Mapping[int, str]) -> tuple[str, str]:
    if tracebacks:
        number = max(tracebacks)
        return _fenced(tracebacks[number]), f"traceback of In[{number}]"
    value = getattr(sys, "last_value", None)
    if value is None:
        raise PromptError("{Err} in the prompt: no error has happened in this session yet.")
    return _fenced(readable_traceback(value, shell)), "the last traceback"


def _fenced(text: str, language: str = "") -> str:
    # A fence longer than any run of backticks inside, so the text cannot close it early.
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"\n{fence}{language}\n{text}\n{fence}\n"


def readable_traceback(error: BaseException, shell: Any) -> str:
    """The traceback a person saw: IPython's own frames dropped, cells named ``Cell In[n]``,
    library files shown from ``site-packages/`` on (no machine paths)."""
    frames = []
    for frame in traceback.extract_tb(error.__traceback__):
        filename = frame.filename
        if "/IPython/" in filename or "/ipykernel/" in filename:
            continue
        label = None
        compiler = getattr(shell, "compile", None)
        if compiler is not None and hasattr(compiler, "format_code_name"):
            label = compiler.format_code_name(filename)
        if label:
            where = f"{label[0]} {label[1]}"
        elif "site-packages/" in filename:
            where = filename.split("site-packages/", 1)[1]
        else:
            where = filename
        frames.append(f"  {where}, line {frame.lineno}, in {frame.name}\n    {frame.line or ''}")
    head = "Traceback (most recent call last):\n" if frames else ""
    last = "".join(traceback.format_exception_only(type(error), error)).strip()
    return head + "\n".join(frames) + ("\n" if frames else "") + last
