"""Progress bars (tqdm) that a saved notebook remembers as they ended.

``tqdm.auto`` shows an ipywidgets bar in a notebook. A widget output also stores a text/plain
fallback, which is what a reopened notebook without widget state, nbviewer, GitHub and
``nbconvert --to markdown`` show; tqdm writes it once, when the bar first appears (``0/5``). The
bar made here displays itself with a display id and updates that display when it closes, so the
saved text says where the work ended (``5/5 ... done=5 cost=...``, or where an interrupt stopped
it). Outside a notebook it is tqdm's own console bar.
"""

from __future__ import annotations

from functools import cache
from typing import Any


def progress_bar(**options: Any) -> Any:
    """A tqdm bar (``total=``, ``desc=``, ``unit=``, ``disable=`` ... as tqdm takes them) whose
    notebook widget keeps its final state in the saved text/plain fallback; close it on every
    path (``with`` or ``close()``)."""
    from tqdm.auto import tqdm

    if not any(base.__name__ == "tqdm_notebook" for base in tqdm.__mro__):
        return tqdm(**options)  # a console, a script, or ipywidgets missing
    return _notebook_bar_class(tqdm)(**options)


@cache
def _notebook_bar_class(auto: type) -> type:
    from IPython import get_ipython
    from IPython.display import display

    class NotebookBar(auto):
        """tqdm's notebook bar, displayed with a display id that ``close`` refreshes."""

        def __init__(self, **options: Any) -> None:
            super().__init__(display=False, **options)
            self._handle = None
            if not self.disable:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self) -> None:
            closed = self.disable
            super().close()
            if not closed and self._handle is not None:
                self.dynamic_ncols, self.ncols = False, None  # the saved text whole, not cut
                # tqdm.auto picked this class inside a kernel, so there is a shell
                bundle, _ = get_ipython().display_formatter.format(self.container)
                # ipywidgets cuts text/plain at 110 characters: the whole line, pretty
                bundle["text/plain"] = self.container.__repr__(True)
                self._handle.update(bundle, raw=True)  # the text/plain of the final frame
                self._handle = None

    return NotebookBar
