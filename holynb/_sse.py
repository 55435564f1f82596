"""Server-sent events: turn a byte stream into the ``data`` payloads of its events.

Lines ``data: ...`` accumulate until a blank line ends the event; ``:`` lines are comments
(keep-alives); ``event:``, ``id:`` and ``retry:`` fields are ignored (OpenAI-style streams put
everything in ``data``). The decoder is a plain object fed chunk by chunk, so the hot loop has no
generator layers of its own.

Buffering is linear: a line cut across chunks is collected in a bytearray and only the new chunk
is searched for its end, so a long line costs time in proportion to its length (joining the
buffer again on every chunk made a 40 MB line take 40 s). An event larger than
``max_event_bytes`` raises StreamError instead of growing without bound.
"""

from __future__ import annotations

from holynb._config import MAX_EVENT_BYTES
from holynb.errors import StreamError


class SSEDecoder:
    """Incremental SSE decoder.

    >>> d = SSEDecoder()
    >>> d.feed(b'data: {"a": 1}\\n\\ndata: [DO')
    [b'{"a": 1}']
    >>> d.feed(b'NE]\\n\\n')
    [b'[DONE]']
    """

    __slots__ = ("_buffer", "_data", "_data_size", "max_event_bytes")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()  # the start of a line whose end has not arrived yet
        self._data: list[bytes] = []  # the data lines of the event being read
        self._data_size = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of the events completed by this chunk, in order."""
        buffer = self._buffer
        if buffer:
            end = chunk.find(b"\n")
            if end < 0:
                buffer += chunk
                if len(buffer) > self.max_event_bytes:
                    raise self._too_large()
                return []
            buffer += chunk[:end]
            lines = [bytes(buffer), *chunk[end + 1 :].split(b"\n")]
            buffer.clear()
        else:
            lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            buffer += rest
            if len(buffer) > self.max_event_bytes:
                raise self._too_large()
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
                    self._data_size = 0
            elif line[:5] == b"data:":
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
                self._data_size += len(value)
                if self._data_size > self.max_event_bytes:
                    raise self._too_large()
            # comments (":"), "event:", "id:" and "retry:" lines carry nothing we use
        return out

    def flush(self) -> list[bytes]:
        """Whatever event was still open when the stream ended without a blank line."""
        out = self.feed(b"\n\n") if self._buffer or self._data else []
        self._buffer.clear()
        return out

    def _too_large(self) -> StreamError:
        self._buffer = bytearray()
        self._data.clear()
        self._data_size = 0
        limit = self.max_event_bytes / (1024 * 1024)
        return StreamError(
            f"The server sent a stream event larger than {limit:g} MB; holynb stopped reading "
            "it rather than hold it all in memory.",
            hint=(
                "Check that the base URL is an OpenAI-compatible endpoint; if events this large "
                "are expected, raise holynb.Limits(max_event_bytes=...) in the session's settings."
            ),
        )
