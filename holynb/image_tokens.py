"""How many prompt tokens an image costs, by each provider's published rule.

- **OpenAI** (chat completions): 85 tokens at ``detail="low"``; otherwise the image is fitted in
  2048x2048, its short side shrunk to 768, and it costs 170 per 512-px tile plus 85.
- **Anthropic** (Messages): the image is shrunk (aspect kept) until its long side is at most
  1568 px and it is at most about 1,600 tokens, then it costs ``width * height / 750``. (Newer
  Claude models read up to 2576 px; this rule is the documented one for the others.)

An image whose size is unknown (a URL holynb does not fetch, or an unreadable one) counts the
most an image can cost, so budgets stay on the safe side.

>>> openai_image_tokens(1024, 1024), anthropic_image_tokens(1024, 1024)
(765, 1399)
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "anthropic_image_tokens",
    "image_dimensions",
    "image_tokens",
    "messages_image_tokens",
    "openai_image_tokens",
]

OPENAI_LOW_TOKENS = 85
OPENAI_TILE_TOKENS = 170
OPENAI_BASE_TOKENS = 85
OPENAI_MAX_TOKENS = 1445  # the most at high detail, e.g. 2048x800: 4x2 tiles after the resize
ANTHROPIC_PIXELS_PER_TOKEN = 750
ANTHROPIC_MAX_SIDE = 1568
ANTHROPIC_MAX_TOKENS = 1600
_HEADER_CHARS = 256 * 1024  # base64 characters decoded first to find an image's size


def openai_image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """OpenAI's count for one image (``detail`` ``"auto"`` is counted as ``"high"``).

    >>> openai_image_tokens(2048, 4096)
    1105
    """
    if detail == "low":
        return OPENAI_LOW_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return OPENAI_TILE_TOKENS * tiles + OPENAI_BASE_TOKENS


def anthropic_image_tokens(width: int, height: int) -> int:
    """Anthropic's count for one image, after its resize.

    >>> anthropic_image_tokens(1000, 1000)
    1334
    """
    scale = min(1.0, ANTHROPIC_MAX_SIDE / max(width, height, 1))
    area = min(width * height * scale * scale, ANTHROPIC_MAX_TOKENS * ANTHROPIC_PIXELS_PER_TOKEN)
    return max(1, math.ceil(area / ANTHROPIC_PIXELS_PER_TOKEN))


def image_tokens(
    width: int | None, height: int | None, detail: str = "auto", api: str = "openai"
) -> int:
    """The count for one image in the wire format ``api`` (``"openai"`` or ``"anthropic"``);
    an unknown size counts the most an image can cost."""
    if api == "anthropic":
        if width is None or height is None:
            return ANTHROPIC_MAX_TOKENS
        return anthropic_image_tokens(width, height)
    if width is None or height is None:
        return OPENAI_LOW_TOKENS if detail == "low" else OPENAI_MAX_TOKENS
    return openai_image_tokens(width, height, detail)


def image_dimensions(url: str) -> tuple[int, int] | None:
    """Width and height of the image in a base64 ``data:`` URL, read from its header (no
    Pillow; the start of the payload is decoded first); None when it cannot be read."""
    import imagesize

    head, _, payload = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        return None
    for chars in (_HEADER_CHARS, len(payload)):
        try:
            data = base64.b64decode(payload[: chars - chars % 4], validate=False)
            width, height = imagesize.get(io.BytesIO(data))
        except Exception:
            continue
        if width > 0 and height > 0:
            return width, height
        if chars >= len(payload):
            break
    return None


def part_tokens(part: Mapping[str, Any], api: str = "openai") -> int:
    """The count for one ``image_url`` content block, its size read from its data URL."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    detail = image.get("detail", "auto") if isinstance(image, Mapping) else "auto"
    size = image_dimensions(url) if isinstance(url, str) else None
    width, height = size if size is not None else (None, None)
    return image_tokens(width, height, detail if isinstance(detail, str) else "auto", api)


def messages_image_tokens(
    messages: Iterable[Mapping[str, Any]], api: str = "openai"
) -> tuple[int, int]:
    """How many ``image_url`` blocks chat ``messages`` hold, and their count by ``api``'s rule."""
    count = total = 0
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "image_url":
                count += 1
                total += part_tokens(part, api)
    return count, total
