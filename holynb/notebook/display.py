"""Showing a streamed answer: a live widget in rich frontends, plain text everywhere else.

The views receive text and figures; they never call the network. ``make_view`` picks one:

>>> view = make_view("gpt-4.1", cost_of=lambda tokens: tokens * 8e-6)
>>> view.show()
>>> stream = session.stream("Tell me about otters")
>>> for text in stream:
...     view.append(text)
>>> view.finish(stream.result)

``StreamView`` (ipywidgets) shows the answer as sanitised Markdown while it arrives, with a status
line (model, tokens, tokens/s, elapsed, cost so far) and, when ``set_stop`` gave it a callback, a
Stop button. Re-rendering is coalesced to at most ``MAX_UPDATES_PER_SECOND``, whatever the token
rate, and settled Markdown blocks are sent to the browser once (``render.MarkdownStream``). When
the call ends (in the foreground or, for ``--bg``, on another thread), the widget is replaced via
its display id by ``final_bundle``: static sanitised HTML that looks the same plus a text/plain
copy of the answer, so saved notebooks keep the answer (widget state is not saved by default).
With ``snapshots=True`` (``--bg`` calls, which stream after their cell has ended) a static copy
of the answer so far sits under the widget too, hidden while the widget lives and refreshed every
``SNAPSHOT_EVERY_S``: a notebook saved mid-answer and reopened without its kernel shows that.

``PlainView`` has the same methods for frontends without widgets (terminal IPython, nbclient and
nbval runs, ``jupyter console``). Inside a kernel it shows ``final_bundle`` once the answer ends,
so every frontend stores the same single output and nbval compares what JupyterLab saved;
elsewhere the text goes to stdout as it arrives, then a figures line. Every model-provided string
is escaped or sanitised before it is shown; figures and money come from ``holynb.formatting``.
"""

from __future__ import annotations

import contextlib
import html as _html
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from holynb.errors import ConfigurationError, ImageError
from holynb.formatting import (
    ERROR_STYLE,
    answer_html as _answer_html,
    error_html,
    error_text,
    figures_line,
    status_html as _status_html,
)
from holynb.render import MarkdownStream, render_markdown
from holynb.units import money as _usd

if TYPE_CHECKING:
    from holynb.images import PreparedImage
    from holynb.results import ChatResult

__all__ = [
    "MAX_UPDATES_PER_SECOND",
    "SNAPSHOT_EVERY_S",
    "PlainView",
    "StreamView",
    "answer_card_html",
    "display_mode",
    "final_bundle",
    "images_html",
    "make_view",
    "rich_frontend",
]

MAX_UPDATES_PER_SECOND = 16
SNAPSHOT_EVERY_S = 1.0  # how often a --bg answer's static copy (what a save keeps) is refreshed
# Rendering may take at most this share of the time: a slow render stretches the interval.
_RENDER_SHARE = 0.2
_MEASURABLE_MS = 100.0  # shorter generation times give meaningless rates: use the latency
_TICK_S = 0.5  # how often a live status line's clock moves while no text arrives
_TICK_FOR_S = 600.0  # a view nobody ends (a bug in the caller): no tick after this long quiet

CostOf = Callable[[int], float | None]
Mode = Literal["widget", "text"]

_ERROR_STYLE = ERROR_STYLE  # for the side-by-side view


def answer_card_html(text: str, figures: str | None = None) -> str:
    """A finished answer as sanitised HTML (maths rendered, currency kept as text), with an
    optional figures line under it.

    >>> answer_card_html("**Done.**", figures_line(result))
    '<div class="jp-RenderedHTMLCommon holynb-answer"><p><strong>Done.</strong></p>...'
    """
    card = _answer_html(render_markdown(text))
    return card + _status_html(figures) if figures else card


_THUMB_STYLE = (
    "max-width: 96px; max-height: 96px; border: 1px solid var(--jp-border-color2, #ddd); "
    "border-radius: 2px"
)
_LABEL_STYLE = "color: var(--jp-ui-font-color2, #666); font-size: 0.85em"


def images_html(images: Sequence[PreparedImage]) -> str:
    """A row of small thumbnails of the images sent with a prompt (PNG ``data:`` URLs made here,
    at most 96 px), each titled with its label; a URL image is named, never loaded, and so is an
    image that cannot be previewed (too many pixels to decode safely: the reason is its title)."""
    if not images:
        return ""
    items = []
    for image in images:
        label = _html.escape(image.label(), quote=True)
        try:
            thumb = image.thumbnail_url()
        except ImageError as err:  # that image only: the others, and the call, go on
            why = _html.escape(str(err), quote=True)
            items.append(f'<span style="{_LABEL_STYLE}" title="{why}">{label}</span>')
            continue
        if thumb is not None and thumb.startswith("data:image/png;base64,"):
            items.append(
                f'<img src="{thumb}" alt="{label}" title="{label}" style="{_THUMB_STYLE}">'
            )
        else:
            items.append(f'<span style="{_LABEL_STYLE}">{label}</span>')
    row = "display: flex; flex-wrap: wrap; gap: 4px; align-items: center; margin: 2px 0"
    return f'<div class="holynb-images" style="{row}">{"".join(items)}</div>'


def final_bundle(
    text: str,
    status: str,
    state: str = "done",
    error: BaseException | None = None,
    images: Sequence[PreparedImage] = (),
) -> dict[str, str]:
    """What a finished (or interrupted, or failed) answer leaves in the notebook, the same in
    every frontend: the answer as sanitised HTML with its status line (and the error box), and a
    text/plain copy of the answer with the same lines.

    >>> final_bundle("**Hi**", "gpt-4.1 · 3 prompt + 1 completion tokens · 12 ms · $0.00003")
    {'text/html': '<div class="jp-RenderedHTMLCommon holynb-answer">...', 'text/plain': ...}
    """
    answer = _answer_html(render_markdown(text)) if text else ""
    box = error_html(error) if error is not None else ""
    html = images_html(images) + answer + box + _status_html(status, state)
    plain = ["".join(image.label() + "\n" for image in images).rstrip("\n")] if images else []
    if text:
        plain.append(text.rstrip("\n"))
    if error is not None:
        plain.append(error_text(error))
    plain.append(status)
    return {"text/html": html, "text/plain": "\n\n".join(plain)}


def _publish(
    bundle: dict[str, str], handle: Any = None, parent: Any = None, *, alone: bool = False
) -> None:
    # Shows (or, with a handle, replaces) an output; ``alone``: in place of the cell's outputs.
    # From another thread (a --bg call), the output goes to the cell that started the call:
    # ``parent`` is its request's header.
    from IPython.display import clear_output, display

    publisher = getattr(ipython_shell(), "display_pub", None)
    token = None
    if parent and threading.current_thread() is not threading.main_thread():
        with contextlib.suppress(Exception):  # an older ipykernel: the current cell gets it
            token = publisher.set_thread_parent(parent)  # type: ignore[union-attr]
    try:
        if alone:
            clear_output(wait=True)
        if handle is not None:
            handle.update(bundle, raw=True)
        else:
            display(bundle, raw=True)
    finally:
        if token is not None:
            publisher.reset_thread_parent(token)  # type: ignore[union-attr]


def _parent_header() -> Any:
    kernel = getattr(ipython_shell(), "kernel", None)
    try:
        return kernel.get_parent() if kernel is not None else None
    except Exception:
        return None


# -- choosing a view ---------------------------------------------------------------------------


def ipython_shell() -> Any:
    """The running IPython shell, or None outside IPython (never imports IPython)."""
    module = sys.modules.get("IPython")
    return module.get_ipython() if module is not None else None


def rich_frontend(shell: Any = None) -> bool:
    """Whether the running cell came from a frontend that shows widgets.

    JupyterLab, Notebook 7 and VS Code put a ``cellId`` in the metadata of their execute
    requests; nbclient (nbval, nbconvert, papermill) and ``jupyter console`` do not, and
    terminal IPython or plain Python have no kernel at all.
    """
    shell = ipython_shell() if shell is None else shell
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return False
    try:
        parent = kernel.get_parent()
    except Exception:
        parent = getattr(kernel, "_parent_header", None)
    metadata = parent.get("metadata") if isinstance(parent, dict) else None
    return isinstance(metadata, dict) and bool(metadata.get("cellId"))


def _widgets_available() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def display_mode(mode: str | None = None, *, shell: Any = None) -> Mode:
    """``"widget"`` or ``"text"``: the ``mode`` argument, else ``HOLYNB_DISPLAY``, else ``auto``
    (a widget only when ``rich_frontend()`` says the frontend shows them).

    >>> display_mode("text")
    'text'
    """
    source = "mode" if mode is not None else "HOLYNB_DISPLAY"
    choice = mode if mode is not None else os.environ.get("HOLYNB_DISPLAY") or "auto"
    choice = choice.strip().lower()
    if choice not in ("widget", "text", "auto"):
        raise ConfigurationError(
            f"{source} must be 'widget', 'text' or 'auto', got {choice!r}: e.g. "
            "HOLYNB_DISPLAY=text for plain-text output."
        )
    if choice == "text" or not _widgets_available():
        return "text"
    if choice == "widget":
        return "widget"
    return "widget" if rich_frontend(shell) else "text"


def make_view(
    model: str,
    *,
    cost_of: CostOf | None = None,
    mode: str | None = None,
    note: str = "",
    images: Sequence[PreparedImage] = (),
    snapshots: bool = False,
) -> StreamView | PlainView:
    """The right view for this frontend: ``StreamView`` where widgets show, else ``PlainView``.

    ``mode`` (``"widget"``, ``"text"``, ``"auto"``) overrides the ``HOLYNB_DISPLAY`` variable;
    ``note`` ends the status and figures lines (e.g. what the prompt pulled in:
    ``"+ traceback of In[30]"``); ``images`` (sent with the prompt) are shown as thumbnails, or
    as one line each in text; ``snapshots`` (for an answer that streams after its cell ended)
    keeps a static copy of the answer so far in the notebook (see ``StreamView``).

    >>> view = make_view("gpt-4.1")
    >>> view.show(); view.append("Hello"); view.finish(result)
    """
    if display_mode(mode) == "widget":
        return StreamView(model, cost_of=cost_of, note=note, images=images, snapshots=snapshots)
    return PlainView(model, cost_of=cost_of, note=note, images=images)


# -- the shared bookkeeping --------------------------------------------------------------------


class Progress:
    """Text received, deltas counted, timing, and when the next refresh is due."""

    def __init__(
        self, model: str, cost_of: CostOf | None, min_interval: float, note: str = ""
    ) -> None:
        self.model = model
        self.note = note  # said at the end of every status and figures line
        self.cost_of = cost_of
        self.min_interval = min_interval
        self.parts: list[str] = []
        self.deltas = 0
        self.started = time.monotonic()
        self.first_at: float | None = None
        self.due = 0.0  # monotonic time of the next allowed refresh
        self.state = "streaming"
        self.retry = ""  # what the last retry said ("429, retrying 1/2 in 0.5 s")

    def add(self, text: str) -> bool:
        """Record a delta; True when a refresh is due."""
        self.parts.append(text)
        self.deltas += 1
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        return now >= self.due

    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def refreshed(self, cost_s: float) -> None:
        self.due = time.monotonic() + max(self.min_interval, cost_s / _RENDER_SHARE)

    def cost(self) -> float | None:
        if self.cost_of is None:
            return None
        try:
            return self.cost_of(self.deltas)
        except Exception:  # a pricing problem must not break the display
            return None

    def status(self) -> str:
        now = time.monotonic()
        parts = [self.model]
        if self.first_at is None:
            waiting = "waiting for the first token" if self.state == "streaming" else "no answer"
            parts.append(self.retry or waiting)
        else:
            parts.append(f"{self.deltas:,} token{'' if self.deltas == 1 else 's'}")
            if self.deltas > 1 and now - self.first_at >= _MEASURABLE_MS / 1000:
                parts.append(f"{(self.deltas - 1) / (now - self.first_at):,.1f} tok/s")
        parts.append(f"{now - self.started:.1f} s")
        if self.cost_of is not None and (self.state == "streaming" or self.deltas):
            cost = self.cost()  # a call that ended with nothing shows no cost at all
            so_far = " so far" if self.state == "streaming" else ""
            parts.append("cost unknown" if cost is None else f"{_usd(cost)}{so_far}")
        return self.noted(" · ".join(parts))

    def noted(self, line: str) -> str:
        return f"{line} · {self.note}" if self.note else line


class _View:
    """What both views share: the progress of one answer and what it says about it."""

    _progress: Progress

    @property
    def model(self) -> str:
        """The model named in the status or figures line."""
        return self._progress.model

    @property
    def text(self) -> str:
        """The answer received so far."""
        return self._progress.text()

    @property
    def state(self) -> str:
        """``streaming``, ``done``, ``failed`` or ``interrupted``."""
        return self._progress.state

    @property
    def note(self) -> str:
        """What ends the status and figures lines (``""`` for nothing)."""
        return self._progress.note

    def finish(self, result: ChatResult) -> None:
        """The answer is complete: show all of it and the final figures."""
        self._end("done", result.text or self.text, self._figures(result))

    def interrupted(self, result: ChatResult | None = None) -> None:
        """The call was stopped: keep the partial answer, say so, with its figures."""
        text = result.text if result is not None and result.text else self.text
        self._progress.state = "interrupted"
        figures = self._figures(result)
        self._end("interrupted", text, f"Interrupted · {figures}")

    def _end(self, state: str, text: str, figures: str) -> None:
        raise NotImplementedError  # each view shows the end its own way

    def _figures(self, result: ChatResult | None) -> str:
        if result is None:
            return self._progress.status()  # already noted
        return self._progress.noted(figures_line(result))

    def _retry_words(self, error: Exception, retry: int, most: int, wait: float) -> str:
        status = getattr(error, "status", None)
        what = str(status) if isinstance(status, int) else type(error).__name__
        self._progress.retry = f"{what}, retrying {retry}/{most} in {wait:.1f} s"
        return self._progress.retry


# -- the widget --------------------------------------------------------------------------------


class StreamView(_View):
    """A live view of a streamed answer (ipywidgets): the answer as sanitised Markdown, a status
    line, and a Stop button when ``set_stop`` is given a callback.

    >>> view = StreamView("gpt-4.1", cost_of=lambda tokens: tokens * 8e-6)
    >>> view.show()
    >>> stream = session.stream("Tell me about otters")
    >>> for text in stream:
    ...     view.append(text)
    >>> view.finish(stream.result)

    ``append`` is cheap: the view re-renders at most ``MAX_UPDATES_PER_SECOND`` times a second
    (less when rendering gets slow), and ``finish``, ``fail`` and ``interrupted`` show everything.
    ``widget`` is the ipywidgets box, for placing the view inside other widgets.

    ``snapshots=True``: ``show`` also displays a static copy of the answer so far (sanitised
    HTML and text/plain, "Still streaming when saved"), refreshed at most every
    ``SNAPSHOT_EVERY_S``; the live widget hides it, and on a reopened notebook it hides the dead
    widget's placeholder. When the call ends both make way for the one final output.
    """

    def __init__(
        self,
        model: str,
        *,
        cost_of: CostOf | None = None,
        min_interval: float = 1.0 / MAX_UPDATES_PER_SECOND,
        note: str = "",
        images: Sequence[PreparedImage] = (),
        snapshots: bool = False,
    ) -> None:
        import ipywidgets as widgets

        self._widgets = widgets
        self._progress = Progress(model, cost_of, min_interval, note)
        self._markdown = MarkdownStream()
        self._chunks: list[Any] = []  # one HTML widget per settled chunk, each sent once
        self._tail = widgets.HTML(layout=widgets.Layout(width="100%"))
        self._answer = widgets.VBox([self._tail], layout=widgets.Layout(width="100%"))
        self._error = widgets.HTML(layout=widgets.Layout(display="none"))
        self._status = widgets.HTML(_status_html(self._progress.status()))
        self._stop = widgets.Button(
            description="Stop",
            icon="stop",
            button_style="warning",
            tooltip="Cancel this call; what arrived so far is kept",
            layout=widgets.Layout(display="none", width="auto"),
        )
        self._stop_callback: Callable[[], Any] | None = None
        self._stop.on_click(self._on_stop)
        footer = widgets.HBox(
            [self._status, self._stop], layout=widgets.Layout(align_items="center")
        )
        self._images = list(images)
        self.images_html = images_html(images)  # thumbnails of the images sent, if any
        thumbs = [widgets.HTML(self.images_html)] if self.images_html else []
        self._snapshots = snapshots
        self._snapshot: Any = None  # the DisplayHandle of the static copy, while it streams
        self._snapshot_due = 0.0
        self._snapshot_class = f"holynb-saved-{uuid.uuid4().hex[:12]}"
        hide = [widgets.HTML(_hidden_while_live(self._snapshot_class))] if snapshots else []
        self.widget = widgets.VBox([*thumbs, self._answer, self._error, footer, *hide])
        self.widget.add_class("holynb-stream")
        self.renders = 0  # how many times the answer was re-rendered (for tests and benches)
        self._pending = False  # text arrived since the last refresh
        self._timer: Any = None  # an asyncio.TimerHandle while a refresh is scheduled
        self._handle: Any = None  # the DisplayHandle of show()
        self._parent: Any = None  # the header of the request whose cell showed the view
        self._failure: BaseException | None = None
        self.final_plain: str | None = None  # once ended: the text/plain it leaves (figures too)
        self._lock = threading.Lock()  # the status line is written by the ticker thread too
        self._ended = threading.Event()

    # -- what callers use ----------------------------------------------------------------------

    @property
    def answer_html(self) -> str:
        """The HTML shown for the answer now (settled chunks and tail)."""
        return "".join(w.value for w in (*self._chunks, self._tail))

    @property
    def status_html(self) -> str:
        """The HTML of the status line now."""
        return self._status.value

    @property
    def shown_error_html(self) -> str:
        """The HTML of the error box when one is shown, else ``""``."""
        return self._error.value if self._error.layout.display is None else ""

    def show(self) -> StreamView:
        """Display the view in the current output; returns the view."""
        from IPython.display import display

        self._parent = _parent_header()
        self._handle = display(self, display_id=True)
        if self._snapshots:
            self._snapshot = display(self._snapshot_bundle(), raw=True, display_id=True)
            self._snapshot_due = time.monotonic() + SNAPSHOT_EVERY_S
        threading.Thread(target=self._tick, name="holynb-status-clock", daemon=True).start()
        return self

    def retrying(self, error: Exception, retry: int, most: int, wait: float) -> None:
        """Say a retry is coming (``ChatStream.on_retry``): "429, retrying 1/2 in 0.5 s"."""
        self._retry_words(error, retry, most, wait)
        self._refresh_status()

    def append(self, text: str) -> None:
        """Add a text delta; the view refreshes if the last refresh is old enough."""
        if not text:
            return
        if self._progress.add(text):
            self.flush()
        else:
            self._pending = True
            if self._timer is None:
                self._schedule_flush()

    def flush(self) -> None:
        """Show everything received so far now."""
        self._pending = False
        started = time.perf_counter()
        new, tail = self._markdown.update(self._progress.text())
        if new:
            self._chunks.extend(self._widgets.HTML(_answer_html(h)) for h in new)
            self._answer.children = (*self._chunks, self._tail)
        self._tail.value = _answer_html(tail) if tail else ""
        self._status.value = _status_html(self._progress.status())
        self.renders += 1
        self._progress.refreshed(time.perf_counter() - started)
        if self._snapshot is not None and time.monotonic() >= self._snapshot_due:
            self._snapshot_due = time.monotonic() + SNAPSHOT_EVERY_S
            _publish(self._snapshot_bundle(), self._snapshot, self._parent)

    def _snapshot_bundle(self) -> dict[str, str]:
        # What a notebook saved now keeps: the answer so far, said to be unfinished.
        status = f"Still streaming when saved · {self._progress.status()}"
        bundle = final_bundle(self.text, status, "interrupted", images=self._images)
        name = self._snapshot_class
        bundle["text/html"] = (
            f'<div class="{name}">{_hides_dead_widget(name)}{bundle["text/html"]}</div>'
        )
        return bundle

    def _refresh_status(self) -> None:
        with self._lock:
            if self.state == "streaming":
                self._status.value = _status_html(self._progress.status())

    def _tick(self) -> None:
        # The clock in the status line moves while no text arrives (waiting for the first
        # token, a pause, a retry's wait); a thread, since a foreground cell blocks the kernel.
        while not self._ended.wait(_TICK_S):
            quiet = time.monotonic() - max(self._progress.due, self._progress.started)
            if self.state != "streaming" or quiet > _TICK_FOR_S:
                return
            if time.monotonic() - self._progress.due >= _TICK_S - self._progress.min_interval:
                self._refresh_status()

    def set_stop(self, callback: Callable[[], Any]) -> None:
        """Show a Stop button that calls ``callback()`` when clicked (e.g. to cancel a task)."""
        self._stop_callback = callback
        self._stop.disabled = False
        self._stop.description = "Stop"
        self._stop.layout.display = None if self.state == "streaming" else "none"

    def fail(self, error: BaseException) -> None:
        """The call failed: keep what arrived, show a short error box with the hint."""
        from holynb.results import ChatResult

        partial = getattr(error, "partial", None)
        if not isinstance(partial, ChatResult):
            partial = None
        text = self.text
        if partial is not None and len(partial.text) > len(text):
            text = partial.text
        self._error.value = error_html(error)
        self._error.layout.display = None
        self._failure = error
        self._progress.state = "failed"
        figures = self._figures(partial) if getattr(error, "sent", True) else "not sent"
        self._end("failed", text, f"Failed · {figures}")

    # -- internals -----------------------------------------------------------------------------

    def _end(self, state: str, text: str, status: str) -> None:
        self._ended.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        settled = self._progress.text()[: self._markdown.settled_chars]
        with self._lock:
            self._progress.state = state
        self._progress.parts[:] = [text]
        full = render_markdown(text) if text else ""
        rest = text[len(settled) :]
        rest_html = full if rest == text else render_markdown(rest) if rest else ""
        if text.startswith(settled) and "".join(self._markdown.settled_html) + rest_html == full:
            self._tail.value = _answer_html(rest_html) if rest_html else ""
        else:  # the pieces differ from one full render (e.g. a list split by text): replace
            old, self._chunks = self._chunks, []
            self._answer.children = (self._tail,)
            self._tail.value = _answer_html(full) if full else ""
            for widget in old:
                widget.close()
        with self._lock:
            self._status.value = _status_html(status, state)
        self._stop.layout.display = "none"
        self.renders += 1
        bundle = final_bundle(text, status, state, self._failure, self._images)
        self.final_plain = bundle["text/plain"]
        if self._handle is not None:
            # The live widget is replaced by static sanitised HTML that looks the same (the
            # output PlainView leaves), so a saved notebook shows the answer anywhere: a widget
            # without saved state shows "model not found". A --bg call, finishing on another
            # thread, replaces the output of the cell that started it.
            if self._snapshot is not None:  # the widget and the static copy make way for it
                self._snapshot = None
                _publish(bundle, parent=self._parent, alone=True)
            else:
                _publish(bundle, self._handle, self._parent)

    def _schedule_flush(self) -> None:
        # Inside an event loop (a --bg task), text held back by coalescing is shown when the
        # next refresh is due even if the stream pauses. A blocked loop (a foreground cell)
        # runs the timer after the view has ended, when it does nothing.
        asyncio = sys.modules.get("asyncio")  # not imported: no loop can be running
        if asyncio is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, self._progress.due - time.monotonic())
        self._timer = loop.call_later(delay, self._trailing_flush)

    def _trailing_flush(self) -> None:
        self._timer = None
        if self._pending and self.state == "streaming":
            self.flush()

    def _on_stop(self, _button: Any) -> None:
        self._stop.disabled = True
        self._stop.description = "Stopping…"
        if self._stop_callback is not None:
            self._stop_callback()

    def _plain(self) -> str:
        if self._snapshots:  # the static copy under the widget carries the text
            return ""
        return self.text or f"{self.model}: …"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = self._plain()  # never the raw widget repr
        return bundle

    def __repr__(self) -> str:
        tokens = self._progress.deltas
        return f"StreamView(model={self.model!r}, state={self.state!r}, tokens={tokens})"


def _hidden_while_live(name: str) -> str:
    # In the live widget: its static copy (the output holding class ``name``) is not shown.
    return (
        f"<style>.{name}, .jp-OutputArea-child:has(.{name}) {{ display: none !important }}</style>"
    )


def _hides_dead_widget(name: str) -> str:
    # In the static copy: a reopened notebook's widget output just before it (no live stream
    # inside: "Error displaying widget: model not found") is not shown.
    return (
        f"<style>.jp-OutputArea-child:has(+ .jp-OutputArea-child .{name})"
        ":not(:has(.holynb-stream)) { display: none }</style>"
    )


# -- plain text --------------------------------------------------------------------------------


class PlainView(_View):
    """The ``StreamView`` methods for frontends without widgets.

    >>> view = PlainView("gpt-4.1")
    >>> stream = session.stream("Tell me about otters")
    >>> for text in stream:
    ...     view.append(text)
    >>> view.finish(stream.result)

    Inside a kernel (nbclient, nbval, papermill, ``jupyter console``) the answer is shown once,
    when it ends, as the output a widget leaves behind (``final_bundle``: sanitised HTML and a
    text/plain copy, with the figures line), so a notebook run here stores what a run in
    JupyterLab stores and nbval compares the same thing. Elsewhere (terminal IPython, plain
    Python, or when ``out`` is given) the text goes to stdout as it arrives, then the figures
    line; errors go to stderr.
    """

    def __init__(
        self,
        model: str,
        *,
        cost_of: CostOf | None = None,
        min_interval: float = 1.0 / MAX_UPDATES_PER_SECOND,
        out: Any = None,
        err: Any = None,
        note: str = "",
        images: Sequence[PreparedImage] = (),
    ) -> None:
        self._progress = Progress(model, cost_of, min_interval, note)
        self._images = list(images)
        self._out = out
        self._err = err
        self._ended_with_newline = True
        self.renders = 0  # how many times stdout was flushed (for tests and benches)
        in_kernel = getattr(ipython_shell(), "kernel", None) is not None
        self._in_kernel = in_kernel and out is None and err is None
        self._parent: Any = None  # the header of the request whose cell showed the view

    def _stdout(self) -> Any:
        return self._out if self._out is not None else sys.stdout

    def show(self) -> PlainView:
        """Outside a kernel, print one line per image sent (``[image: name, WxH, format,
        size]``); returns the view."""
        self._parent = _parent_header()
        if self._images and not self._in_kernel:
            out = self._stdout()
            out.write("".join(image.label() + "\n" for image in self._images))
            out.flush()
        return self

    def append(self, text: str) -> None:
        """Write a text delta to stdout (not in a kernel: there the answer shows when it ends);
        flushed at most ``MAX_UPDATES_PER_SECOND`` times a second."""
        if not text:
            return
        due = self._progress.add(text)
        if self._in_kernel:
            return
        out = self._stdout()
        out.write(text)
        self._ended_with_newline = text.endswith("\n")
        if due:
            self.flush()

    def flush(self) -> None:
        """Flush what was written."""
        if not self._in_kernel:
            self._stdout().flush()
        self.renders += 1
        self._progress.refreshed(0.0)

    def set_stop(self, callback: Callable[[], Any]) -> None:
        """No button without widgets: the kernel's Interrupt stops the call."""

    def retrying(self, error: Exception, retry: int, most: int, wait: float) -> None:
        """Say a retry is coming, on stderr (in a kernel, the final status line counts them)."""
        words = self._retry_words(error, retry, most, wait)
        if not self._in_kernel:
            err = self._err if self._err is not None else sys.stderr
            err.write(f"holynb: {words}\n")
            err.flush()

    def fail(self, error: BaseException) -> None:
        """Show a short account of the error, with its hint (outside a kernel: on stderr)."""
        from holynb.results import ChatResult

        if self._in_kernel:
            partial = getattr(error, "partial", None)
            partial = partial if isinstance(partial, ChatResult) else None
            text = self.text
            if partial is not None and len(partial.text) > len(text):
                text = partial.text
            self._progress.state = "failed"
            figures = self._figures(partial) if getattr(error, "sent", True) else "not sent"
            status = f"Failed · {figures}"
            bundle = final_bundle(text, status, "failed", error, self._images)
            _publish(bundle, parent=self._parent)
            return
        self._newline()
        self._progress.state = "failed"
        err = self._err if self._err is not None else sys.stderr
        err.write(error_text(error) + "\n")
        err.flush()

    def _newline(self) -> None:
        out = self._stdout()
        if not self._ended_with_newline:
            out.write("\n")
            self._ended_with_newline = True
        out.flush()

    def _end(self, state: str, text: str, figures: str) -> None:
        self._progress.state = state
        if self._in_kernel:
            self._progress.parts[:] = [text]
            _publish(final_bundle(text, figures, state, images=self._images), parent=self._parent)
            return
        if not self._progress.deltas and text:  # nothing was streamed: print the answer now
            self._stdout().write(text)
            self._ended_with_newline = text.endswith("\n")
        self._progress.parts[:] = [text]
        self._newline()
        out = self._stdout()
        out.write(figures + "\n")
        out.flush()

    def __repr__(self) -> str:
        tokens = self._progress.deltas
        return f"PlainView(model={self.model!r}, state={self.state!r}, tokens={tokens})"
