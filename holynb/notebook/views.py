"""What the code that drives an answer's display needs from a view, as Protocols.

``display.StreamView`` / ``display.PlainView`` (one answer) and ``sidebyside.ColumnsView`` /
``sidebyside.PlainColumnsView`` (one column per model) implement them; the magics and
``side_by_side.stream_to_view`` are written against these, not against one class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from holynb.results import ChatResult

__all__ = ["AnswerView", "ColumnsLike"]


class AnswerView(Protocol):
    """One answer shown as it streams in."""

    def show(self) -> object: ...
    def append(self, text: str) -> None: ...
    def set_stop(self, callback: Callable[[], Any]) -> None: ...
    def finish(self, result: ChatResult) -> None: ...
    def interrupted(self, result: ChatResult | None = None) -> None: ...
    def fail(self, error: BaseException) -> None: ...
    def retrying(self, error: Exception, retry: int, most: int, wait: float) -> None: ...


class ColumnsLike(Protocol):
    """Several answers side by side, column ``i`` for the i-th model."""

    def append(self, i: int, text: str) -> None: ...
    def finish(self, i: int, result: ChatResult) -> None: ...
    def fail(self, i: int, error: BaseException) -> None: ...
    def interrupted(self, i: int, result: ChatResult | None = None) -> None: ...
