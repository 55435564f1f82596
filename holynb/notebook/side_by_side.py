"""Several models' answers side by side: the table of a ``compare`` frame, and a live view
that streams several answers at once (``%%llm -m a,b,c``).

>>> cmp = s.compare(["Define entropy", "Define enthalpy"], models=["gpt-4.1", "deepseek-v3.2"])
>>> holynb.side_by_side(cmp)        # one row per prompt; text, cost, latency per model

``side_by_side`` returns a ``SideBySide``: its ``frame`` is the wide DataFrame (columns
``(model, "text"|"cost_usd"|"latency_ms"|"ok"|"error")``); notebooks show it as an HTML table
whose answers are rendered Markdown, sanitised (``holynb.render``); elsewhere it prints as
plain text, prompt by prompt, each answer under its model's name.

The live views follow ``holynb.notebook.display``: ``ColumnsView`` puts one ``StreamView`` per
model in an ``HBox`` (each with its own status line) and, when every answer has ended, leaves static
sanitised HTML in the output; ``PlainColumnsView`` prints each answer under a heading, in the
order the models were given, once all have ended. Both are views: they never call the network.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from holynb.formatting import (
    ERROR_STYLE as _ERROR_STYLE,
    answer_html as _answer_html,
    error_text,
    figures_line,
)
from holynb.notebook.display import (
    MAX_UPDATES_PER_SECOND,
    Progress,
    StreamView,
    display_mode,
    ipython_shell,
)
from holynb.render import escape_text, render_markdown
from holynb.units import money as _usd

if TYPE_CHECKING:
    import pandas as pd

    from holynb.calls.caller import Core
    from holynb.notebook.views import ColumnsLike
    from holynb.prompts import Prompt
    from holynb.results import ChatResult

__all__ = [
    "ColumnsView",
    "PlainColumnsView",
    "SideBySide",
    "make_columns_view",
    "side_by_side",
    "stream_to_view",
]

CostOf = Callable[[int], float | None]
FIELDS = ("text", "cost_usd", "latency_ms", "ok", "error")
_TABLE_STYLE = "border-collapse: collapse; table-layout: fixed; width: 100%"
_CELL_STYLE = (
    "vertical-align: top; text-align: left; padding: 4px 8px; "
    "border: 1px solid var(--jp-border-color2, #e0e0e0)"
)
_FIGURE_STYLE = "white-space: nowrap; color: var(--jp-ui-font-color2, #666)"
_PLAIN_WIDTH = 100


# -- the table of a compare frame ---------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _cost(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "cost unknown"
    return _usd(float(value))


def _latency(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    ms = float(value)
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


class SideBySide:
    """A compare frame pivoted to one row per prompt and one column group per model.

    ``frame`` is the wide DataFrame; in a notebook it shows as a sanitised HTML table, in a
    terminal as plain text.

    >>> view = holynb.side_by_side(cmp)
    >>> view.frame[("gpt-4.1", "text")]
    """

    def __init__(self, frame: pd.DataFrame, prompts: list[Any], models: list[str]) -> None:
        self.frame = frame
        self.prompts = prompts
        self.models = models

    def _cell(self, row: Any, model: str, field: str) -> Any:
        return self.frame.at[row, (model, field)]

    def _repr_html_(self) -> str:
        head = "".join(
            f'<th colspan="2" style="{_CELL_STYLE}">{escape_text(m)}</th>' for m in self.models
        )
        rows = []
        for row, prompt in zip(self.frame.index, self.prompts, strict=True):
            cells = [
                f'<td style="{_CELL_STYLE}"><strong>{escape_text(str(row))}</strong> '
                f"{escape_text(_prompt_text(prompt))}</td>"
            ]
            for model in self.models:
                ok = bool(self._cell(row, model, "ok"))
                text = _text(self._cell(row, model, "text"))
                body = _answer_html(render_markdown(text)) if text else ""
                if not ok:
                    error = _text(self._cell(row, model, "error")) or "failed"
                    name, _, message = error.partition(": ")
                    body += (
                        f'<div class="holynb-error mathjax_ignore" style="{_ERROR_STYLE}">'
                        f"<strong>{escape_text(name)}</strong>: {escape_text(message)}</div>"
                    )
                figures = (
                    f"{_cost(self._cell(row, model, 'cost_usd'))}<br>"
                    f"{_latency(self._cell(row, model, 'latency_ms'))}"
                )
                cells.append(f'<td style="{_CELL_STYLE}">{body}</td>')
                cells.append(f'<td style="{_CELL_STYLE}; {_FIGURE_STYLE}">{figures}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        return (
            '<div class="holynb-side-by-side mathjax_ignore">'
            f'<table style="{_TABLE_STYLE}"><thead><tr>'
            f'<th style="{_CELL_STYLE}">prompt</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )

    def __repr__(self) -> str:
        blocks = []
        for row, prompt in zip(self.frame.index, self.prompts, strict=True):
            lines = [f"[{row}] {_prompt_text(prompt)}"]
            for model in self.models:
                ok = bool(self._cell(row, model, "ok"))
                figures = (
                    f"{_cost(self._cell(row, model, 'cost_usd'))} · "
                    f"{_latency(self._cell(row, model, 'latency_ms'))}"
                )
                lines.append(f"  ── {model} ({figures})")
                text = _text(self._cell(row, model, "text"))
                if not ok:
                    text = (text + "\n" if text else "") + (
                        _text(self._cell(row, model, "error")) or "failed"
                    )
                lines.extend("    " + line for line in (text.strip() or "(no answer)").split("\n"))
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, Sequence):
        users = [m.get("content") for m in prompt if isinstance(m, dict)]
        text = str(users[-1]) if users else ""
    else:
        text = _text(prompt)
    text = " ".join(text.split())
    return text if len(text) <= _PLAIN_WIDTH else text[: _PLAIN_WIDTH - 1] + "…"


def side_by_side(frame: pd.DataFrame) -> SideBySide:
    """One row per prompt, one column group per model (text, cost, latency) from the long
    frame ``Session.compare`` returns; shown as a sanitised HTML table in notebooks.

    >>> cmp = s.compare(prompts, models=["gpt-4.1", "claude-sonnet-4-5"])
    >>> holynb.side_by_side(cmp)
    >>> holynb.side_by_side(cmp).frame      # the wide DataFrame
    """
    import pandas as pd

    needed = {"prompt_index", "prompt", "model", "text", "ok", "error", "cost_usd", "latency_ms"}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise ValueError(
            f"side_by_side needs the long frame of Session.compare (columns prompt_index, "
            f"prompt, model, text, ...); this one lacks {missing}."
        )
    models = list(dict.fromkeys(frame["model"]))
    wide = frame.pivot(index="prompt_index", columns="model", values=list(FIELDS))
    wide = wide.swaplevel(axis=1)
    wide = wide.reindex(columns=pd.MultiIndex.from_product([models, list(FIELDS)]))
    first = frame.drop_duplicates("prompt_index").set_index("prompt_index")["prompt"]
    prompts = [first[i] for i in wide.index]
    return SideBySide(wide, prompts, models)


# -- live views of several streams ------------------------------------------------------------


class ColumnsView:
    """Several answers streaming at once, side by side: one ``StreamView`` per model in an
    ``HBox``, each with its own status line.

    >>> view = ColumnsView(["gpt-4.1", "deepseek-v3.2"]).show()
    >>> view.append(0, "Hello"); view.finish(0, result)
    >>> view.fail(1, error)               # the other columns carry on
    """

    def __init__(
        self, models: Sequence[str], *, cost_of: Callable[[str], CostOf | None] | None = None
    ) -> None:
        import ipywidgets as widgets

        self.models = list(models)
        self.views = [
            StreamView(m, cost_of=cost_of(m) if cost_of is not None else None) for m in self.models
        ]
        for view in self.views:
            view.widget.layout = widgets.Layout(flex="1 1 0", min_width="0", padding="0 6px")
        self._headings = [widgets.HTML(f"<strong>{escape_text(m)}</strong>") for m in self.models]
        columns = [
            widgets.VBox([h, v.widget], layout=widgets.Layout(flex="1 1 0", min_width="0"))
            for h, v in zip(self._headings, self.views, strict=True)
        ]
        self.widget = widgets.HBox(columns, layout=widgets.Layout(width="100%"))
        self.widget.add_class("holynb-columns")
        self._handle: Any = None

    @property
    def states(self) -> list[str]:
        """Each column's state: ``streaming``, ``done``, ``failed`` or ``interrupted``."""
        return [v.state for v in self.views]

    def show(self) -> ColumnsView:
        """Display the columns in the current output; returns the view."""
        from IPython.display import display

        self._handle = display(self, display_id=True)
        return self

    def append(self, i: int, text: str) -> None:
        """Add a text delta to column ``i``."""
        self.views[i].append(text)

    def finish(self, i: int, result: ChatResult) -> None:
        """Column ``i``'s answer is complete."""
        self.views[i].finish(result)
        self._settle()

    def fail(self, i: int, error: BaseException) -> None:
        """Column ``i``'s call failed: its error box; the other columns carry on."""
        self.views[i].fail(error)
        self._settle()

    def interrupted(self, i: int, result: ChatResult | None = None) -> None:
        """Column ``i`` was stopped; what arrived stays."""
        self.views[i].interrupted(result)
        self._settle()

    def static_html(self) -> str:
        """The columns as static sanitised HTML (what a saved notebook keeps)."""
        columns = []
        for model, view in zip(self.models, self.views, strict=True):
            columns.append(
                '<div style="flex: 1 1 0; min-width: 0; padding: 0 6px">'
                f"<strong>{escape_text(model)}</strong>"
                f"{view.answer_html}{view.shown_error_html}{view.status_html}</div>"
            )
        return f'<div class="holynb-columns" style="display: flex">{"".join(columns)}</div>'

    def _settle(self) -> None:
        # Once every column has ended, the output becomes static HTML that looks the same (see
        # StreamView._settle_output: only on the kernel's thread, while its cell runs).
        if "streaming" in self.states or self._handle is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        plain = "\n\n".join(f"── {v.model}\n{v.final_plain or v.text}" for v in self.views)
        self._handle.update({"text/html": self.static_html(), "text/plain": plain}, raw=True)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = f"{', '.join(self.models)}: streaming answers side by side"
        return bundle


class PlainColumnsView:
    """``ColumnsView``'s methods for frontends without widgets: once every answer has ended,
    each is printed under a heading (in the order the models were given) with its figures line
    or error; inside a kernel the columns are then displayed as sanitised HTML.

    >>> view = PlainColumnsView(["gpt-4.1", "deepseek-v3.2"], out=sys.stdout)
    """

    def __init__(
        self,
        models: Sequence[str],
        *,
        cost_of: Callable[[str], CostOf | None] | None = None,
        out: Any = None,
    ) -> None:
        self.models = list(models)
        self._out = out
        self._progress = [
            Progress(m, cost_of(m) if cost_of is not None else None, 1 / MAX_UPDATES_PER_SECOND)
            for m in self.models
        ]
        self._endings: list[tuple[str, str] | None] = [None] * len(self.models)

    @property
    def states(self) -> list[str]:
        """Each column's state: ``streaming``, ``done``, ``failed`` or ``interrupted``."""
        return [p.state for p in self._progress]

    def show(self) -> PlainColumnsView:
        """Nothing to show before the answers end; returns the view."""
        return self

    def append(self, i: int, text: str) -> None:
        """Add a text delta to answer ``i`` (printed when every answer has ended)."""
        self._progress[i].add(text)

    def finish(self, i: int, result: ChatResult) -> None:
        """Answer ``i`` is complete."""
        self._end(i, "done", result.text or self._progress[i].text(), figures_line(result))

    def fail(self, i: int, error: BaseException) -> None:
        """Answer ``i`` failed."""
        self._end(i, "failed", self._progress[i].text(), error_text(error))

    def interrupted(self, i: int, result: ChatResult | None = None) -> None:
        """Answer ``i`` was stopped; what arrived stays."""
        progress = self._progress[i]
        text = result.text if result is not None and result.text else progress.text()
        figures = figures_line(result) if result is not None else progress.status()
        self._end(i, "interrupted", text, f"Interrupted · {figures}")

    def _end(self, i: int, state: str, text: str, figures: str) -> None:
        progress = self._progress[i]
        progress.state = state
        progress.parts[:] = [text]
        self._endings[i] = (text, figures)
        if "streaming" not in self.states:
            self._print()

    def _print(self) -> None:
        import sys

        out = self._out if self._out is not None else sys.stdout
        for model, ending in zip(self.models, self._endings, strict=True):
            text, figures = ending or ("", "")
            body = text if text.endswith("\n") or not text else text + "\n"
            out.write(f"── {model} ──\n{body}{figures}\n\n")
        out.flush()
        if getattr(ipython_shell(), "kernel", None) is not None:
            from IPython.display import display

            html = "".join(
                '<div style="flex: 1 1 0; min-width: 0; padding: 0 6px">'
                f"<strong>{escape_text(m)}</strong>"
                f"{_answer_html(render_markdown(e[0])) if e and e[0] else ''}</div>"
                for m, e in zip(self.models, self._endings, strict=True)
            )
            plain = "\n\n".join(  # each answer with its figures line or error
                f"── {m}\n" + "\n\n".join(part.rstrip("\n") for part in e if part)
                for m, e in zip(self.models, self._endings, strict=True)
                if e is not None
            )
            bundle = {
                "text/html": f'<div class="holynb-columns" style="display: flex">{html}</div>',
                "text/plain": plain,
            }
            display(bundle, raw=True)


def make_columns_view(
    models: Sequence[str],
    *,
    cost_of: Callable[[str], CostOf | None] | None = None,
    mode: str | None = None,
) -> ColumnsView | PlainColumnsView:
    """The right multi-column view for this frontend (see ``display.make_view``)."""
    if display_mode(mode) == "widget":
        return ColumnsView(models, cost_of=cost_of)
    return PlainColumnsView(models, cost_of=cost_of)


# -- one prompt, several models, streamed into a view ------------------------------------------


def _model_row(
    prompt: Any, model: str, result: ChatResult | None, error: str | None
) -> tuple[Any, ...]:
    from holynb.frames import answer_row, failure_row

    if result is None:
        return failure_row(prompt, model, error or "")
    return answer_row(prompt, result, error=error)


def stream_to_view(
    core: Core, prompt: Prompt, models: Sequence[str], view: ColumnsLike, **kwargs: Any
) -> pd.DataFrame:
    """Stream ``prompt`` from every model at once into ``view`` (``ColumnsView`` or
    ``PlainColumnsView``), driving it from the calling thread; returns the long frame, one row
    per model. An interrupt stops every stream: what arrived stays in the view and the ledger,
    and those rows say ``Interrupted``.
    """

    from holynb._loop import default_loop
    from holynb.compare import astream_models, failure_text, long_frame, partial_of
    from holynb.frames import failure_row, result_frame

    rows: list[tuple[Any, ...] | None] = [None] * len(models)
    texts: list[list[str]] = [[] for _ in models]
    try:
        for i, kind, payload in default_loop().iterate(
            astream_models(core, prompt, models, **kwargs)
        ):
            if kind == "text":
                texts[i].append(payload)
                view.append(i, payload)
            elif kind == "done":
                view.finish(i, payload)
                rows[i] = _model_row(prompt, models[i], payload, None)
            else:
                view.fail(i, payload)
                rows[i] = _model_row(prompt, models[i], partial_of(payload), failure_text(payload))
    except KeyboardInterrupt:
        for i, row in enumerate(rows):
            if row is None:
                view.interrupted(i, None)
                stopped, so_far = "Interrupted: stopped by the user", "".join(texts[i])
                rows[i] = failure_row(prompt, models[i], stopped, text=so_far)
    frame = result_frame([r for r in rows if r is not None])
    return long_frame(frame, [0] * len(frame))
