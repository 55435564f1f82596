"""Server-sent events: turn a byte stream into the ``data`` payloads of its events.

Lines ``data: ...`` accumulate until a blank line ends the event; ``:`` lines are comments
(keep-alives); ``event:``, ``id:`` and ``retry:`` fields are ignored (OpenAI-style streams put
everything in ``data``). The decoder is a plain object fed chunk by chunk, so the hot loop has no
generator layers of its own.
"""

from __future__ import annotations


class SSEDecoder:
    """Incremental SSE decoder.

    >>> d = SSEDecoder()
    >>> d.feed(b'data: {"a": 1}\\n\\ndata: [DO')
    [b'{"a": 1}']
    >>> d.feed(b'NE]\\n\\n')
    [b'[DONE]']
    """

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of the events completed by this chunk, in order."""
        if self._buffer:
            chunk = self._buffer + chunk
        lines = chunk.split(b"\n")
        self._buffer = lines.pop()
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line[:5] == b"data:":
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            # comments (":"), "event:", "id:" and "retry:" lines carry nothing we use
        return out

    def flush(self) -> list[bytes]:
        """Whatever event was still open when the stream ended without a blank line."""
        out = self.feed(b"\n\n") if self._buffer or self._data else []
        self._buffer = b""
        return out
