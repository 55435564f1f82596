"""What a Batch API provider sends is untrusted: its ids are checked before they name a request,
and its texts are redacted of the API key before they are kept or shown.

An id names a URL path (``batches/{id}``, ``files/{id}/content``) and nothing else: local files
are named by holynb. A text is redacted in every spelling JSON allows (the key written as
``\\u`` escapes too), so neither a file kept on disk nor a value read from it holds the key.

>>> checked_id("batch_abc123", "batch id")
'batch_abc123'
>>> scrub_value({"error": {"message": "bad key sk-123"}}, secret)
{'error': {'message': 'bad key ***'}}
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson

from holynb.errors import BatchError

if TYPE_CHECKING:
    from holynb._config import Secret

# Letters, digits and _ - . : (what OpenAI, Anthropic and the relays use), never a path.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}")
_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")


def is_id(value: Any) -> bool:
    """Whether ``value`` can name a provider object: a short string of letters, digits and
    ``_ - . :`` that is no path (no ``/``, no ``..``)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None and ".." not in value


def checked_id(value: Any, what: str) -> str:
    """``value`` when it is an id (see ``is_id``); else BatchError naming ``what`` ("batch
    id", "file id"), before anything is requested or written with it."""
    if is_id(value):
        return str(value)
    shown = repr(value)[:80]
    raise BatchError(
        f"The provider answered a {what} {shown} that is not an id (letters, digits, _ - . : "
        "only): holynb neither requests nor writes anything with it. Check that base_url "
        "points at a Batch API you trust."
    )


def scrub_value(value: Any, secret: Secret | None) -> Any:
    """``value`` (decoded JSON) with the key blotted out of every string in it."""
    if secret is None:
        return value
    if isinstance(value, str):
        return secret.redact(value)
    if isinstance(value, dict):
        return {scrub_value(k, secret): scrub_value(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, secret) for v in value]
    return value


def scrub_lines(data: bytes, secret: Secret | None) -> bytes:
    """A JSONL file from the provider with the key blotted out of every line, however the
    line spells it; lines without the key are kept byte for byte."""
    if secret is None or not data:
        return data
    data = secret.redact_bytes(data)
    if b"\\u" not in data:
        return data  # the key can only hide behind escapes
    return b"".join(_scrub_line(line, secret) for line in data.splitlines(keepends=True))


def _scrub_line(line: bytes, secret: Secret) -> bytes:
    if b"\\u" not in line:
        return line
    end = line[len(line.rstrip(b"\r\n")) :]
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        # An unreadable line: spell its escapes out, and keep it that way if the key was there.
        plain = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)).encode("utf-8", "replace"), line)
        redacted = secret.redact_bytes(plain)
        return redacted if redacted != plain else line
    scrubbed = scrub_value(decoded, secret)
    if scrubbed == decoded:
        return line
    return orjson.dumps(scrubbed) + end
