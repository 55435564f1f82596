"""Images for prompts: read, check, convert and count them before a request is built.

>>> img = prepare_image("photo.heic", preset="medium")   # a path, bytes, a PIL image, a URL,
>>> img.block()                                           # a matplotlib figure, a NumPy array
{'type': 'image_url', 'image_url': {'url': 'data:image/jpeg;base64,...', 'detail': 'auto'}}
>>> img.tokens("openai"), img.tokens("anthropic")

What is sent (OpenAI-style ``image_url`` blocks; another wire format converts them):

- http(s) URLs go as they are: holynb never fetches them (their size is unknown, so they are
  counted at the most an image can cost). ``data:`` URLs are decoded and treated as bytes.
- PNG, JPEG, GIF and WebP files or bytes within the size limit, with no preset, go untouched
  (their format is read from their first bytes; Pillow is not needed for them).
- Everything else is re-encoded with Pillow (``pip install "holynb[images]"``): other formats
  (BMP, TIFF, HEIC/HEIF when ``pillow-heif`` is installed, ...), PIL images, NumPy arrays, and
  any image when a preset is asked. Re-encoding applies the EXIF orientation, shrinks the long
  side to the preset's ``max_side``, and picks the format by one rule: an image with alpha
  becomes PNG; a lossy source (JPEG, HEIC/HEIF, AVIF) becomes JPEG; anything else stays lossless
  (PNG) unless a preset is asked and the image looks photographic (more than 4,096 colours),
  then JPEG. A PNG over the size limit falls back to JPEG, its alpha flattened onto white.
  JPEG quality is the preset's, or 90 without one. Matplotlib figures are rendered to PNG.
- An image over the size limit (20 MB by default) is refused before anything is sent, with the
  preset that would bring it under the limit. The limit holds for every image however it was
  made: a ``PreparedImage`` made for a larger limit is refused too.
- holynb never decodes an image with more pixels than Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``
  (about 89 megapixels; a small file can hold a "decompression bomb" of many more): the count
  is read from the file's header first. Such an image can still be sent as it is (PNG, JPEG,
  GIF, WebP without a preset); converting it, or its thumbnail in the widget, is refused as an
  ``ImageError`` on that image only.

Token estimates follow each provider's published rule (``holynb.image_tokens``).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from holynb.errors import ImageError
from holynb.image_tokens import image_tokens

__all__ = [
    "ANTHROPIC_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_IMAGE_BYTES",
    "PRESETS",
    "ImagePreset",
    "PreparedImage",
    "attach_images",
    "default_max_image_bytes",
    "max_decoded_pixels",
    "open_image",
    "prepare_image",
    "prepare_images",
    "sniff_format",
    "within_limit",
]

DEFAULT_MAX_IMAGE_BYTES = 20 * 2**20  # OpenAI's limit per image
ANTHROPIC_MAX_IMAGE_BYTES = 5 * 2**20  # Anthropic's (REFERENCE.md: about 5 MB per image)
INSTALL_HINT = 'pip install "holynb[images]"'
DEFAULT_QUALITY = 90  # JPEG quality when a conversion happens without a preset
THUMBNAIL_SIDE = 96
PHOTO_COLOURS = 4096  # more distinct colours than this: "photographic"

# The formats every provider takes as they are, by the first bytes of the file.
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_LOSSY_SOURCES = {"JPEG", "MPO", "HEIF", "HEIC", "AVIF"}
_ORIENTATION = 0x0112  # the EXIF tag
_DETAILS = ("auto", "low", "high")


@dataclass(frozen=True, slots=True)
class ImagePreset:
    """How to shrink images before sending: the longest side in pixels, the JPEG quality and
    OpenAI's ``detail``. The named presets are ``"high"`` (2048 px, quality 95), ``"medium"``
    (1024, 85) and ``"low"`` (512, 75).

    >>> s.chat("Read the label", images=["scan.tiff"], image_preset=holynb.ImagePreset(1600, 80))
    """

    max_side: int | None = None
    quality: int = 85
    detail: str = "auto"

    def __post_init__(self) -> None:
        if self.max_side is not None and (not isinstance(self.max_side, int) or self.max_side < 16):
            raise ImageError(
                f"ImagePreset.max_side must be at least 16 pixels, not {self.max_side!r}."
            )
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ImageError(f"ImagePreset.quality must be 1 to 100, not {self.quality!r}.")
        if self.detail not in _DETAILS:
            raise ImageError(f"ImagePreset.detail must be one of {_DETAILS}, not {self.detail!r}.")


PRESETS: dict[str, ImagePreset] = {
    "high": ImagePreset(2048, 95),
    "medium": ImagePreset(1024, 85),
    "low": ImagePreset(512, 75),
}


def resolve_preset(preset: str | ImagePreset | None) -> ImagePreset | None:
    """``preset`` as an ImagePreset (a name is looked up in ``PRESETS``)."""
    if preset is None or isinstance(preset, ImagePreset):
        return preset
    if isinstance(preset, str) and preset.lower() in PRESETS:
        return PRESETS[preset.lower()]
    names = ", ".join(repr(n) for n in PRESETS)
    raise ImageError(
        f"Unknown image preset {preset!r}: use one of {names} or "
        "holynb.ImagePreset(max_side=..., quality=...)."
    )


def _preset_name(preset: ImagePreset) -> str:
    for name, known in PRESETS.items():
        if known == preset:
            return repr(name)
    return repr(preset)


# -- the prepared image ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class PreparedImage:
    """One image ready to send: its bytes (or its URL), format, size, and where it came from.

    ``block()`` is the OpenAI-style content block; ``tokens(api)`` its estimated prompt tokens;
    ``label()`` a one-line description such as ``[image: chart.png, 640x480, PNG, 21.4 KB]``.
    """

    name: str
    media_type: str | None = None
    width: int | None = None
    height: int | None = None
    data: bytes | None = None
    source_url: str | None = None  # an http(s) URL passed through
    detail: str = "auto"
    converted: bool = False

    @property
    def format(self) -> str:
        """``PNG``, ``JPEG``, ``GIF``, ``WEBP``, or ``URL`` for a passed-through URL."""
        if self.media_type is None:
            return "URL"
        return self.media_type.split("/", 1)[1].upper()

    @property
    def size_bytes(self) -> int | None:
        """The bytes sent (before base64), or None for a URL."""
        return None if self.data is None else len(self.data)

    @property
    def url(self) -> str:
        """A ``data:`` URL with the bytes, or the URL passed through."""
        if self.data is None:
            return self.source_url or ""
        encoded = base64.b64encode(self.data).decode("ascii")
        return f"data:{self.media_type};base64,{encoded}"

    def block(self) -> dict[str, Any]:
        """The OpenAI-style content block for this image."""
        return {"type": "image_url", "image_url": {"url": self.url, "detail": self.detail}}

    def tokens(self, api: str = "openai") -> int:
        """Estimated prompt tokens for this image in the wire format ``api``
        (``"openai"`` or ``"anthropic"``)."""
        return image_tokens(self.width, self.height, self.detail, api)

    def label(self) -> str:
        """``[image: name, WxH, FORMAT, size]`` (``[image: URL]`` for a URL)."""
        if self.data is None:
            return f"[image: {self.name}]"
        size = _size(len(self.data))
        return f"[image: {self.name}, {self.width}x{self.height}, {self.format}, {size}]"

    def thumbnail_url(self, max_side: int = THUMBNAIL_SIDE) -> str | None:
        """A small PNG of this image as a ``data:`` URL (None for a URL, or without Pillow).

        Raises ImageError when it cannot be shown: more pixels than Pillow decodes safely
        (``PIL.Image.MAX_IMAGE_PIXELS``, checked from the header before decoding), or bytes
        Pillow cannot read. The image itself is unaffected: it is sent all the same."""
        if self.data is None:
            return None
        try:
            from PIL import ImageOps
        except ImportError:
            return None
        try:
            with open_image(self.data, self.name, "no thumbnail is shown") as im:
                im.draft("RGB", (max_side, max_side))  # a JPEG decodes at a fraction of its size
                thumb = ImageOps.exif_transpose(im)
                thumb.thumbnail((max_side, max_side))
                if thumb.mode not in ("RGB", "RGBA", "L", "LA"):
                    thumb = thumb.convert("RGBA")
                out = io.BytesIO()
                thumb.save(out, format="PNG")
        except ImageError:
            raise
        except Exception as err:  # a thumbnail must never break the call: its own error only
            raise ImageError(
                f"No thumbnail for {self.name}: {type(err).__name__}: {err}", name=self.name
            ) from None
        return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")

    def __repr__(self) -> str:
        return f"PreparedImage({self.label()[1:-1]})"


def _size(n: int) -> str:
    """Decimal units, as people type limits: 500,000 bytes is "500 KB", 27,021,298 "27.0 MB"."""
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        kb = n / 1000
        return f"{kb:.0f} KB" if kb >= 100 else f"{kb:.1f} KB"
    return f"{n / 1_000_000:.1f} MB"


# -- preparing ---------------------------------------------------------------------------------


def default_max_image_bytes(api: str) -> int:
    """The size limit per image when none is given: 5 MB for Anthropic's Messages API, 20 MB
    for OpenAI's chat completions."""
    return ANTHROPIC_MAX_IMAGE_BYTES if api == "anthropic" else DEFAULT_MAX_IMAGE_BYTES


def prepare_images(
    sources: Any,
    preset: str | ImagePreset | None = None,
    *,
    max_bytes: int | None = None,
) -> list[PreparedImage]:
    """``prepare_image`` for each source (one source alone is accepted too)."""
    if sources is None:
        return []
    single = str | bytes | bytearray | memoryview | os.PathLike | PreparedImage
    if isinstance(sources, single) or not isinstance(sources, Iterable) or _is_array(sources):
        sources = [sources]
    return [prepare_image(s, preset=preset, max_bytes=max_bytes) for s in sources]


def prepare_image(
    source: Any,
    *,
    preset: str | ImagePreset | None = None,
    max_bytes: int | None = None,
    name: str | None = None,
) -> PreparedImage:
    """An image ready to send, from a path, bytes, a ``PIL.Image.Image``, an http(s) or
    ``data:`` URL, a matplotlib figure or a NumPy array (HxW, HxWx3, HxWx4; uint8 or floats
    in 0..1). See the module docstring for what is converted and how.

    Raises ImageError (nothing is sent) for an unreadable or non-image source, an image over
    ``max_bytes`` (default 20 MB), or when Pillow is needed and not installed.
    """
    resolved = resolve_preset(preset)
    limit = DEFAULT_MAX_IMAGE_BYTES if max_bytes is None else int(max_bytes)
    if isinstance(source, PreparedImage):
        return within_limit(source, limit)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        detail = resolved.detail if resolved else "auto"
        return PreparedImage(name=name or source, source_url=source, detail=detail)
    if isinstance(source, str) and source.startswith("data:"):
        return _from_bytes(_decode_data_url(source), name or "data URL", resolved, limit)
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        return _from_bytes(_read(path), name or path.name, resolved, limit)
    if isinstance(source, bytes | bytearray | memoryview):
        return _from_bytes(bytes(source), name or "bytes", resolved, limit)
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(source, pil.Image):
        return _encode(source, name or "PIL image", resolved, limit, source.format)
    if callable(getattr(source, "savefig", None)):
        return _from_bytes(_render_figure(source), name or "figure", resolved, limit)
    if _is_array(source):
        return _encode(_array_image(source), name or "array", resolved, limit, None)
    raise ImageError(
        f"Cannot use a {type(source).__name__} as an image: give a path, bytes, a PIL image, "
        "a URL, a matplotlib figure or a NumPy array."
    )


def within_limit(image: PreparedImage, max_bytes: int) -> PreparedImage:
    """``image`` itself when its bytes fit ``max_bytes``; else ImageError (nothing is sent),
    saying how to prepare it again for this limit. A URL has no size here and always fits."""
    size = image.size_bytes
    if size is None or size <= max_bytes:
        return image
    fix = _fixing_preset(image.data, None, max_bytes, None)
    how = f"preset={fix}, " if fix is not None and not fix.startswith("'medium' (") else ""
    raise ImageError(
        f"{image.name} is {_size(size)}, over the {_size(max_bytes)} limit per image; nothing "
        "was sent. It was prepared for a larger limit: prepare it again for this one, e.g. "
        f"prepare_image(source, {how}max_bytes={max_bytes}), or raise the limit with "
        "Session(max_image_bytes=...).",
        name=image.name,
        size_bytes=size,
    )


def max_decoded_pixels() -> int | None:
    """The most pixels holynb decodes in one image: Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``
    as it is now (raise it to trust bigger images; None: no limit), or None without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return None
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else int(limit)


def _check_pixels(name: str, width: int, height: int, outcome: str) -> None:
    limit = max_decoded_pixels()
    if limit is None or width * height <= limit:
        return
    size = f"{width}x{height} pixels ({width * height / 1e6:,.1f} megapixels)"
    raise _too_many_pixels(name, size, outcome)


def _too_many_pixels(name: str, size: str, outcome: str) -> ImageError:
    limit = max_decoded_pixels()
    return ImageError(
        f"{name} is {size}, more than holynb decodes (PIL.Image.MAX_IMAGE_PIXELS = "
        f"{limit or 0:,}): it may be a decompression bomb, so it is not decoded and {outcome}. "
        "Shrink it with another tool, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the "
        "file (a PNG, JPEG, GIF or WebP without a preset is sent as it is, without decoding).",
        name=name,
    )


def open_image(data: bytes, name: str, outcome: str = "nothing was sent") -> Any:
    """``data`` opened with Pillow (not yet decoded), after its pixel count, read from the
    header, was checked against :func:`max_decoded_pixels`. Every Pillow decode of bytes in
    holynb starts here. Raises ImageError (``outcome`` says what it means for the caller) for
    too many pixels; Pillow's own errors for anything else."""
    image = _pil(name)
    width, height = _header_dimensions(data)
    if width > 0 and height > 0:
        _check_pixels(name, width, height, outcome)  # before Pillow opens it: no warning
    try:
        im = image.open(io.BytesIO(data))
    except image.DecompressionBombError as err:  # a format the header reader does not know
        raise _too_many_pixels(name, f"larger than Pillow opens ({err})", outcome) from None
    try:
        _check_pixels(name, im.width, im.height, outcome)
    except ImageError:
        im.close()
        raise
    return im


def _header_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from the header without decoding ((-1, -1) when not known)."""
    import imagesize

    try:
        width, height = imagesize.get(io.BytesIO(data))
    except Exception:
        width, height = -1, -1
    return int(width), int(height)


def sniff_format(data: bytes) -> str | None:
    """``png``, ``jpeg``, ``gif`` or ``webp`` from the first bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"Image file not found: {path}", name=str(path)) from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a folder, not an image file.", name=str(path)) from None
    except OSError as err:
        raise ImageError(f"Cannot read the image {path}: {err}", name=str(path)) from None


def _decode_data_url(url: str) -> bytes:
    head, _, payload = url.partition(",")
    try:
        if head.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise ImageError(f"The data: URL {url[:40]}... is not valid base64.") from None


def _from_bytes(data: bytes, name: str, preset: ImagePreset | None, limit: int) -> PreparedImage:
    fmt = sniff_format(data)
    if fmt is not None and preset is None:
        if len(data) > limit:
            raise _too_big(name, len(data), limit, data, None)
        width, height = _header_size(data, name)
        return PreparedImage(name, MEDIA_TYPES[fmt], width, height, data)
    try:
        im = open_image(data, name)  # too many pixels: an ImageError, raised as it is
        original_size = im.size
        if preset is not None and preset.max_side and im.format == "JPEG":
            # decode at 1/2, 1/4 or 1/8 scale when that still covers max_side: much faster
            im.draft("RGB", (preset.max_side, preset.max_side))
        im.load()
    except ImageError:
        raise
    except Exception as err:
        unknown = type(err).__name__ == "UnidentifiedImageError"
        reason = (
            "not in an image format Pillow knows" if unknown else f"{type(err).__name__}: {err}"
        )
        raise ImageError(
            f"{name} is not an image holynb can read ({reason}). Check the file; PNG, JPEG, "
            "GIF, WebP, BMP and TIFF work (HEIC/HEIF with pillow-heif installed).",
            name=name,
            size_bytes=len(data),
        ) from None
    upright = im.getexif().get(_ORIENTATION, 1) == 1
    prepared = _encode(im, name, preset, limit, im.format)
    if (
        fmt is not None
        and upright
        and (prepared.width, prepared.height) == original_size
        and len(data) <= min(limit, len(prepared.data or b""))
    ):  # the preset changed nothing but the bytes, and made them no smaller: send the original
        width, height = original_size
        return PreparedImage(name, MEDIA_TYPES[fmt], width, height, data, detail=prepared.detail)
    return prepared


def _header_size(data: bytes, name: str) -> tuple[int, int]:
    """Width and height from the header (EXIF rotation applied); checks the file with Pillow
    when it is installed."""
    width, height = _header_dimensions(data)
    detail = ""
    limit = max_decoded_pixels()
    try:
        from PIL import Image
    except ImportError:
        pass
    else:
        # Not for more pixels than Pillow opens: it would refuse, though this is no decode.
        if limit is None or width * height <= limit:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.verify()
            except Exception as err:
                width, detail = -1, f" ({type(err).__name__}: {err})"
    if width <= 0 or height <= 0:
        raise ImageError(
            f"{name} looks like an image but cannot be read{detail}: the file may be truncated "
            "or corrupt.",
            name=name,
            size_bytes=len(data),
        )
    return width, height


def _pil(name: str) -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImageError(
            f"{name} needs converting, which needs Pillow: {INSTALL_HINT} (PNG, JPEG, GIF and "
            "WebP files within the size limit and without a preset are sent as they are).",
            name=name,
        ) from None
    _register_heif()
    return Image


def _register_heif() -> None:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def _render_figure(figure: Any) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png")  # the figure's own canvas: pyplot's state is untouched
    return out.getvalue()


def _is_array(source: Any) -> bool:
    return hasattr(source, "__array_interface__") and hasattr(source, "shape")


def _array_image(array: Any) -> Any:
    import numpy as np

    image = _pil("array")
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or arr.size == 0:
        raise ImageError(
            f"A NumPy array image must be HxW, HxWx3 or HxWx4, not shape {arr.shape}.",
            name="array",
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ImageError(
                "A float array image must hold values from 0 to 1 (no NaN); scale it, e.g. "
                "arr / 255, or pass arr.astype('uint8').",
                name="array",
            )
        arr = np.rint(arr * 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise ImageError(
                f"An integer array image must hold values from 0 to 255 (dtype {arr.dtype}).",
                name="array",
            )
        arr = arr.astype(np.uint8)
    return image.fromarray(np.ascontiguousarray(arr))


def _has_alpha(im: Any) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )


def _encode(
    im: Any,
    name: str,
    preset: ImagePreset | None,
    limit: int,
    source_format: str | None,
    *,
    check: bool = True,
) -> PreparedImage:
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im) or im
    if im.mode.startswith(("I", "F")):
        im = _to_8bit(im)
    alpha = _has_alpha(im)
    im = im.convert("RGBA" if alpha else ("L" if im.mode in ("1", "L") else "RGB"))
    if preset is not None and preset.max_side and max(im.size) > preset.max_side:
        im.thumbnail((preset.max_side, preset.max_side), Image.Resampling.LANCZOS)
    quality = preset.quality if preset is not None else DEFAULT_QUALITY
    lossy = (source_format or "").upper() in _LOSSY_SOURCES
    photo = preset is not None and im.getcolors(PHOTO_COLOURS) is None
    fmt = "JPEG" if not alpha and (lossy or photo) else "PNG"
    data = _save(im, fmt, quality)
    if fmt == "PNG" and len(data) > limit:
        fmt, data = "JPEG", _save(im, "JPEG", quality)
    if check and len(data) > limit:
        raise _too_big(name, len(data), limit, None, im, preset)
    detail = preset.detail if preset is not None else "auto"
    media = f"image/{fmt.lower()}"
    return PreparedImage(name, media, im.width, im.height, data, detail=detail, converted=True)


def _to_8bit(im: Any) -> Any:
    """A 16-bit, 32-bit or float greyscale image as 8-bit ``L``: 16-bit values divided by 257,
    floats in 0..1 times 255, anything else stretched from its minimum to its maximum."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(im, dtype=np.float64)
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and low >= 0 and 255 < high <= 65535):
        arr = arr / 257
    elif im.mode == "F" and low >= 0 and high <= 1:
        arr = arr * 255
    elif low < 0 or high > 255:
        arr = (arr - low) * (255 / (high - low or 1))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _save(im: Any, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        if im.mode in ("RGBA", "LA"):  # JPEG has no alpha: flatten onto white
            from PIL import Image

            background = Image.new("RGB", im.size, (255, 255, 255))
            background.paste(im, mask=im.getchannel("A"))
            im = background
        im.save(out, format="JPEG", quality=quality)
    else:
        im.save(out, format="PNG")
    return out.getvalue()


def _too_big(
    name: str,
    size: int,
    limit: int,
    data: bytes | None,
    im: Any,
    tried: ImagePreset | None = None,
) -> ImageError:
    fix = _fixing_preset(data, im, limit, tried)
    if fix is None:
        advice = (
            "No preset brings it under the limit: shrink it yourself, or raise the limit with "
            "Session(max_image_bytes=...)."
        )
    else:
        advice = (
            f"Pass image_preset={fix} to shrink it (%%llm --image-preset), or raise the limit "
            "with Session(max_image_bytes=...)."
        )
    return ImageError(
        f"{name} is {_size(size)}, over the {_size(limit)} limit per image; nothing was sent. "
        + advice,
        name=name,
        size_bytes=size,
    )


def _fixing_preset(
    data: bytes | None, im: Any, limit: int, tried: ImagePreset | None
) -> str | None:
    """The largest named preset whose result fits under ``limit`` (tried for real)."""
    if find_spec("PIL") is None:
        return "'medium' (with Pillow: " + INSTALL_HINT + ")"
    try:
        if im is None and data is not None:
            im = open_image(data, "")
            im.load()
    except Exception:
        return None
    for preset in PRESETS.values():
        if tried is not None and tried.max_side and (preset.max_side or 0) >= tried.max_side:
            continue
        try:
            smaller = _encode(im, "", preset, limit, im.format, check=False)
        except Exception:
            return None
        if (smaller.size_bytes or 0) <= limit:
            return _preset_name(preset)
    return None


# -- into messages -----------------------------------------------------------------------------


def attach_images(
    messages: list[dict[str, Any]], images: Sequence[PreparedImage]
) -> list[dict[str, Any]]:
    """``messages`` with ``images`` added to the last user message, whose content becomes
    blocks: its text first, then one ``image_url`` block per image."""
    if not images:
        return messages
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            break
    else:
        raise ImageError("Images go with a user message, and the prompt has none.")
    message = dict(messages[i])
    content = message.get("content")
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}] if content else []
    elif isinstance(content, list):
        blocks = list(content)
    else:
        blocks = []
    blocks.extend(image.block() for image in images)
    message["content"] = blocks
    return [*messages[:i], message, *messages[i + 1 :]]
