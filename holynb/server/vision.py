"""The local server's ``local/vision`` model: it describes the images it received, so the whole
image path can be tested offline.

Each image is answered on its own line from its decoded bytes, deterministically:

    image 1: PNG 640x480, mean colour #7f7f7f

``describe_images`` takes the decoded bytes of each image, so every wire format (OpenAI's
``image_url`` data URLs here, Anthropic's base64 ``image`` blocks) can share it. An image that
cannot be decoded is answered as such (``image 2: unreadable (...)``); a URL that is not a
``data:`` URL is never fetched (``image 3: URL not fetched``). Reading images needs Pillow.

Image parts are counted as prompt tokens by the rule of the request's wire format (OpenAI's
tiles, or Anthropic's ``width * height / 750``; see ``holynb.image_tokens``) from the image's
header, so usage matches what the client estimates.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from holynb.image_tokens import image_dimensions, image_tokens


def describe_images(images: list[bytes | None]) -> str:
    """One line per image: ``image N: FORMAT WxH, mean colour #rrggbb`` (None: a URL that was
    not fetched)."""
    if not images:
        return "No image received."
    return "\n".join(f"image {i}: {_describe(data)}" for i, data in enumerate(images, 1))


def _describe(data: bytes | None) -> str:
    if data is None:
        return "URL not fetched"
    try:
        from PIL import Image, ImageStat
    except ImportError:
        return 'unreadable (the server needs Pillow: pip install "holynb[images]")'
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            width, height = im.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and width * height > limit:  # a decompression bomb: not decoded
                return f"{fmt} {width}x{height}, too many pixels to decode"
            rgb = im.convert("RGB")
    except Exception as err:
        return f"unreadable ({type(err).__name__})"
    mean = ImageStat.Stat(rgb).mean
    colour = "".join(f"{round(c):02x}" for c in mean)
    return f"{fmt} {width}x{height}, mean colour #{colour}"


def openai_images(messages: list[dict[str, Any]]) -> list[bytes | None]:
    """The decoded bytes of every ``image_url`` part of the last user message (in order)."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    content = last.get("content") if last is not None else None
    if not isinstance(content, list):
        return []
    images: list[bytes | None] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "image_url":
            continue
        url = (part.get("image_url") or {}).get("url", "")
        images.append(decode_data_url(url))
    return images


def anthropic_images(messages: list[dict[str, Any]]) -> list[bytes | None]:
    """The decoded bytes of every ``image`` block of the last user message of an Anthropic
    Messages request (a ``url`` source is None: never fetched)."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    content = last.get("content") if last is not None else None
    if not isinstance(content, list):
        return []
    images: list[bytes | None] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "image":
            continue
        source = part.get("source") or {}
        if source.get("type") != "base64":
            images.append(None)
            continue
        try:
            images.append(base64.b64decode(source.get("data", ""), validate=True))
        except (binascii.Error, ValueError):
            images.append(b"not base64")
    return images


def decode_data_url(url: str) -> bytes | None:
    """The bytes of a base64 ``data:`` URL; None for any other URL (never fetched)."""
    head, _, payload = url.partition(",")
    if not (head.startswith("data:") and head.endswith(";base64")):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return b"not base64"


def vision(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """``local/vision`` for OpenAI-format requests: ``describe_images`` of the last user
    message's images."""
    return describe_images(openai_images(messages))


def image_part_tokens(part: dict[str, Any], api: str = "openai") -> int | None:
    """The tokens of an ``image_url`` part with a readable data URL by the rule of the wire
    format ``api`` (``holynb.image_tokens``), else None."""
    image = part.get("image_url")
    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
        return None
    size = image_dimensions(image["url"])
    if size is None:
        return None
    detail = image.get("detail")
    if not isinstance(detail, str):
        detail = "auto"
    return image_tokens(size[0], size[1], detail, api)
