"""Images in prompts: every source, conversions and presets checked by decoding what the local
server received, the size limit and bad files refused before sending, token estimates, the
widget's thumbnails and ``%%llm --image``."""

from __future__ import annotations

import ast
import base64
import io
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from PIL import Image

import holynb
from holynb import ImageError, ImagePreset
from holynb.image_tokens import anthropic_image_tokens, openai_image_tokens
from holynb.images import prepare_image
from holynb.notebook import magics
from holynb.notebook.display import PlainView, StreamView
from holynb.server.vision import vision as vision_model
from tests.helpers import key_env, session_for

# -- helpers -----------------------------------------------------------------------------------


def encoded(im: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


def solid(size: tuple[int, int] = (64, 48), colour: Any = (255, 0, 0), mode: str = "RGB"):
    return Image.new(mode, size, colour)


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = len(mode)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode)


def png_bomb(width: int, height: int) -> bytes:
    """A single-colour greyscale PNG of width x height, made with zlib (never decoded here):
    10,000 x 10,000 pixels fit in about 100 KB and decode to 100 MB."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    pack = zlib.compressobj(9)
    rows = bytes((width + 1) * 100)  # 100 rows: filter byte 0, then black pixels
    data = [pack.compress(rows) for _ in range(height // 100)]
    data.append(pack.compress(bytes((width + 1) * (height % 100))) + pack.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(data))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def sent_parts(server) -> list[dict[str, Any]]:
    content = server.requests_log[-1]["body"]["messages"][-1]["content"]
    return [p for p in content if p.get("type") == "image_url"]


def sent_bytes(server) -> list[bytes]:
    urls = [p["image_url"]["url"] for p in sent_parts(server)]
    return [base64.b64decode(u.partition(",")[2]) for u in urls]


def sent_images(server) -> list[Image.Image]:
    images = []
    for data in sent_bytes(server):
        im = Image.open(io.BytesIO(data))
        im.load()
        images.append(im)
    return images


@pytest.fixture
def vision(local):
    return session_for(local, model="local/vision")


# -- what is sent untouched --------------------------------------------------------------------


@pytest.mark.parametrize("as_path", [str, Path])
def test_png_file_passes_through_untouched(vision, local, tmp_path, as_path):
    data = encoded(noise((40, 30)), "PNG")
    (tmp_path / "chart.png").write_bytes(data)
    r = vision.chat("What is it?", images=[as_path(tmp_path / "chart.png")])
    assert sent_bytes(local) == [data]
    assert r.text.startswith("image 1: PNG 40x30, mean colour #")


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "WEBP"])
def test_jpeg_gif_webp_bytes_pass_through_untouched(vision, local, fmt):
    data = encoded(solid((33, 22)), fmt)
    r = vision.chat("What is it?", images=[data])
    assert sent_bytes(local) == [data]
    media = sent_parts(local)[0]["image_url"]["url"].split(";")[0]
    assert media == f"data:image/{fmt.lower()}"
    assert f"{fmt} 33x22" in r.text


def test_text_first_then_one_block_per_image(vision, local):
    vision.chat("Compare them", images=[encoded(solid(), "PNG"), encoded(solid(), "JPEG")])
    content = local.requests_log[-1]["body"]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "Compare them"}
    assert [p["type"] for p in content[1:]] == ["image_url", "image_url"]
    assert all(p["image_url"]["detail"] == "auto" for p in content[1:])


def test_passthrough_needs_no_pillow(local, tmp_path, monkeypatch):
    data = encoded(noise((40, 30)), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    bmp = encoded(solid(), "BMP")
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` now fails
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    s = session_for(local)
    s.chat("What is it?", images=[tmp_path / "a.png"])
    assert sent_bytes(local) == [data]
    assert prepare_image(data).width == 40
    with pytest.raises(ImageError, match=r'pip install "holynb\[images\]"'):
        s.chat("What is it?", images=[bmp])


# -- every source ------------------------------------------------------------------------------


def test_url_is_passed_through_and_never_fetched(vision, local):
    url = "https://example.invalid/cat.png"
    r = vision.chat("What is it?", images=[url])
    assert sent_parts(local) == [{"type": "image_url", "image_url": {"url": url, "detail": "auto"}}]
    assert r.text == "image 1: URL not fetched"


def test_data_url_is_decoded_and_sent(vision, local):
    data = encoded(solid((10, 10), (0, 0, 255)), "PNG")
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    r = vision.chat("What is it?", images=[url])
    assert sent_bytes(local) == [data]
    assert r.text == "image 1: PNG 10x10, mean colour #0000ff"


def test_pil_image_is_sent_as_png(vision, local):
    r = vision.chat("What is it?", images=[solid((30, 20), (255, 0, 0))])
    assert r.text == "image 1: PNG 30x20, mean colour #ff0000"


def test_matplotlib_figure_is_rendered_to_png_without_touching_pyplot(vision, local):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    fig = Figure(figsize=(4, 3), dpi=50)
    fig.add_subplot().plot([1, 3, 2])
    r = vision.chat("Describe the chart", images=[fig])
    assert r.text.startswith("image 1: PNG 200x150, mean colour")
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((20, 30), 128, dtype=np.uint8), "PNG 30x20, mean colour #808080"),
        (np.ones((8, 6, 3)) * [1.0, 0.0, 0.5], "PNG 6x8, mean colour #ff0080"),
        (np.tile(np.uint8([0, 255, 0, 255]), (5, 7, 1)), "PNG 7x5, mean colour #00ff00"),
    ],
    ids=["HxW-uint8", "HxWx3-float", "HxWx4-uint8"],
)
def test_numpy_arrays_are_sent_as_png(vision, local, array, expected):
    r = vision.chat("What is it?", images=[array])
    assert r.text == f"image 1: {expected}"


def test_float_array_outside_0_to_1_is_refused_with_advice(local):
    with pytest.raises(ImageError, match=r"from 0 to 1.*arr / 255"):
        session_for(local).chat("?", images=[np.full((4, 4), 200.0)])
    assert local.stats.requests == 0


def test_something_else_is_refused_naming_what_works(local):
    with pytest.raises(ImageError, match="a path, bytes, a PIL image, a URL"):
        session_for(local).chat("?", images=[{"not": "an image"}])


# -- conversions and presets -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_other_formats_are_converted_to_png(vision, local, fmt):
    r = vision.chat("What is it?", images=[encoded(solid((12, 9), (0, 255, 0)), fmt)])
    assert r.text == "image 1: PNG 12x9, mean colour #00ff00"


def test_16_bit_images_are_scaled_not_clipped(vision, local):
    grey16 = Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16))  # half of 65535
    r = vision.chat("?", images=[encoded(grey16, "TIFF")])
    assert r.text == "image 1: PNG 8x8, mean colour #808080"


def test_heic_is_converted_when_pillow_heif_is_installed(vision, local):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    data = encoded(noise((64, 48)), "HEIF")
    vision.chat("What is it?", images=[data])
    (im,) = sent_images(local)
    assert im.format == "JPEG" and im.size == (64, 48)


@pytest.mark.parametrize(("preset", "side"), [("high", 2048), ("medium", 1024), ("low", 512)])
def test_presets_shrink_the_long_side_and_photos_become_jpeg(vision, local, preset, side):
    tiff = encoded(noise((2400, 1600)), "TIFF")
    vision.chat("What is it?", images=[tiff], image_preset=preset)
    (im,) = sent_images(local)
    assert im.format == "JPEG"
    assert im.size == (side, round(side * 2 / 3))


def test_large_jpeg_with_a_preset_is_shrunk_to_the_exact_size(vision, local):
    vision.chat("?", images=[encoded(noise((2400, 1600)), "JPEG")], image_preset="low")
    (im,) = sent_images(local)
    assert im.format == "JPEG" and im.size == (512, 341)


def test_a_preset_that_would_only_grow_a_jpeg_sends_the_original(vision, local):
    original = encoded(noise((300, 200)), "JPEG", quality=60)
    vision.chat("?", images=[original], image_preset="high")  # fits 2048 px; q95 is bigger
    assert sent_bytes(local) == [original]


def test_preset_quality_sets_the_jpeg_quality(vision, local):
    photo = encoded(noise((300, 200)), "PNG")
    vision.chat("?", images=[photo], image_preset="high")
    high = len(sent_bytes(local)[0])
    vision.chat("?", images=[photo], image_preset="low")
    low = len(sent_bytes(local)[0])
    assert low < high * 0.7


def test_a_chart_with_a_preset_stays_png(vision, local):
    chart = solid((1200, 800), (255, 255, 255))
    chart.paste((0, 0, 255), (100, 100, 400, 700))
    vision.chat("?", images=[encoded(chart, "PNG")], image_preset="medium")
    (im,) = sent_images(local)
    assert im.format == "PNG" and im.size == (1024, 683)


def test_exif_orientation_is_applied_when_reencoding(vision, local):
    stored = solid((60, 40), (255, 0, 0))
    stored.paste((0, 0, 255), (30, 0, 60, 40))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: left becomes top
    jpeg = encoded(stored, "JPEG", exif=exif, quality=95)
    vision.chat("?", images=[jpeg], image_preset="high")
    (im,) = sent_images(local)
    assert im.format == "JPEG" and im.size == (40, 60)
    assert im.getexif().get(0x0112, 1) == 1
    top, bottom = im.convert("RGB").getpixel((20, 5)), im.convert("RGB").getpixel((20, 55))
    assert top[0] > 200 and top[2] < 60, top  # red
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue


def test_alpha_stays_png_with_a_preset(vision, local):
    vision.chat("?", images=[noise((300, 200), "RGBA")], image_preset="low")
    (im,) = sent_images(local)
    assert im.format == "PNG" and im.mode == "RGBA"


def test_alpha_is_flattened_onto_white_when_the_png_is_too_big(local):
    im = noise((256, 256), "RGBA")
    im.paste((0, 0, 0, 0), (0, 0, 128, 256))  # left half fully transparent
    s = session_for(local, model="local/vision", max_image_bytes=120_000)
    assert len(encoded(im, "PNG")) > 120_000
    s.chat("?", images=[im])
    (sent,) = sent_images(local)
    assert sent.format == "JPEG" and sent.mode == "RGB"
    assert all(c > 245 for c in sent.getpixel((30, 100)))  # transparent became white


def test_custom_preset_sets_size_quality_and_detail(vision, local):
    preset = ImagePreset(max_side=100, quality=40, detail="low")
    vision.chat("?", images=[noise((400, 200))], image_preset=preset)
    (part,) = sent_parts(local)
    assert part["image_url"]["detail"] == "low"
    (im,) = sent_images(local)
    assert im.size == (100, 50) and im.format == "JPEG"


def test_unknown_preset_and_bad_preset_values_are_image_errors(local):
    with pytest.raises(ImageError, match="'high', 'medium', 'low'"):
        session_for(local).chat("?", images=[solid()], image_preset="tiny")
    with pytest.raises(ImageError, match="quality"):
        ImagePreset(max_side=100, quality=0)
    with pytest.raises(ImageError, match="max_side"):
        ImagePreset(max_side=3)
    assert local.stats.requests == 0


# -- refused before sending --------------------------------------------------------------------


def test_size_limit_refuses_before_sending_and_names_file_size_and_preset(local, tmp_path):
    path = tmp_path / "holiday.png"
    path.write_bytes(encoded(noise((300, 300)), "PNG"))
    s = session_for(local, max_image_bytes=100_000)
    with pytest.raises(ImageError) as caught:
        s.chat("What is it?", images=[path])
    message = str(caught.value)
    size = path.stat().st_size
    assert f"holiday.png is {size / 1000:.0f} KB, over the 100 KB limit" in message
    assert "nothing was sent" in message
    fix = message.split("image_preset='", 1)[1].split("'", 1)[0]
    assert fix == "medium"  # "high" keeps noise at JPEG quality 95: still too big
    assert caught.value.name == "holiday.png" and caught.value.size_bytes == path.stat().st_size
    with pytest.raises(ImageError):
        list(s.stream("What is it?", images=[path]))
    assert local.stats.requests == 0 and s.records == []
    s.chat("What is it?", images=[path], image_preset=fix)  # the preset named does fix it
    assert local.stats.requests == 1


def test_default_limit_is_20_mb():
    assert holynb.Session(base_url="http://127.0.0.1:9/v1").max_image_bytes == 20 * 2**20


def test_default_limit_is_5_mb_in_anthropics_format_unless_given(local):
    s = session_for(local, model="local/vision", api="anthropic")
    assert s.max_image_bytes == 5 * 2**20
    assert s.derive(api="openai").max_image_bytes == 20 * 2**20
    data = encoded(noise((1400, 1400)), "PNG")  # about 5.6 MB: fine for OpenAI, not Anthropic
    assert 5 * 2**20 < len(data) < 20 * 2**20
    with pytest.raises(ImageError, match=r"over the 5\.2 MB limit"):
        s.chat("What?", images=[data])
    assert local.stats.requests == 0
    given = session_for(local, model="local/vision", api="anthropic", max_image_bytes=6 * 2**20)
    assert given.derive(model="local/vision").max_image_bytes == 6 * 2**20
    assert given.chat("What?", images=[data]).text.startswith("image 1: PNG 1400x1400")


def test_a_prepared_image_over_the_sessions_limit_is_refused_in_chat_and_stream(local):
    big = prepare_image(encoded(noise((1400, 1400)), "PNG"))  # 5.6 MB: within the default 20 MB
    assert 5 * 2**20 < (big.size_bytes or 0) < 20 * 2**20
    s = session_for(local, model="local/vision", api="anthropic")  # 5 MB per image
    with pytest.raises(ImageError, match=r"over the 5\.2 MB limit.*nothing was sent") as caught:
        s.chat("What?", images=[big])
    assert caught.value.size_bytes == big.size_bytes
    assert "prepare_image(" in str(caught.value)  # how to make it again, smaller
    with pytest.raises(ImageError, match=r"over the 5\.2 MB limit"):
        list(s.stream("What?", images=big))
    assert local.stats.requests == 0 and s.records == []


def test_a_prepared_image_over_the_limit_fails_only_its_own_map_row(local):
    small = prepare_image(encoded(solid((8, 8), (255, 0, 0)), "PNG"), name="small.png")
    big = prepare_image(encoded(noise((300, 300)), "PNG"), name="big.png")  # about 270 KB
    s = session_for(local, model="local/vision", max_image_bytes=100_000)
    df = s.map(["one", "two", "three"], images=[small, big, [small, big]], progress=False)
    assert df["ok"].tolist() == [True, False, False]
    assert df.loc[0, "text"] == "image 1: PNG 8x8, mean colour #ff0000"
    assert df.loc[1, "error"].startswith("ImageError: big.png is ")
    assert "over the 100 KB limit" in df.loc[2, "error"]
    assert local.stats.requests == 1


def test_truncated_image_is_a_clear_error_naming_it(local, tmp_path):
    data = encoded(noise((64, 64)), "PNG")
    path = tmp_path / "scan.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"scan\.png .*truncated or corrupt"):
        session_for(local).chat("?", images=[path])
    assert local.stats.requests == 0


def test_non_image_file_is_a_clear_error_naming_it(local, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image at all")
    with pytest.raises(ImageError, match=r"notes\.jpg is not an image holynb can read"):
        session_for(local).chat("?", images=[path])
    with pytest.raises(ImageError, match=r"Image file not found: .*missing\.png"):
        session_for(local).chat("?", images=[tmp_path / "missing.png"])
    assert local.stats.requests == 0


# -- tokens and estimates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "auto", 765),
        ((2048, 4096), "high", 1105),  # OpenAI's own worked example
        ((4096, 8192), "low", 85),
        ((100, 100), "auto", 255),
    ],
)
def test_openai_tile_rule(size, detail, tokens):
    assert openai_image_tokens(*size, detail) == tokens


@pytest.mark.parametrize(
    ("size", "tokens"),
    [((1000, 1000), 1334), ((200, 100), 27), ((1092, 1092), 1590), ((4000, 3000), 1600)],
)
def test_anthropic_rule_with_its_resize(size, tokens):
    assert anthropic_image_tokens(*size) == tokens


def test_server_usage_counts_image_tokens_by_the_same_rule_as_the_estimate(vision, local):
    square = encoded(solid((1024, 1024)), "PNG")
    with_image = vision.chat("Describe", images=[square])
    text_only = vision.chat("Describe")
    assert with_image.usage.prompt_tokens - text_only.usage.prompt_tokens == 765
    estimate = vision.estimate("Describe", images=[square])
    assert estimate.image_tokens == 765
    assert estimate.prompt_tokens == vision.estimate("Describe").prompt_tokens + 765


def test_server_counts_images_by_anthropics_rule_on_the_messages_route(local):
    s = session_for(local, model="local/vision", api="anthropic")
    square = encoded(solid((1024, 1024)), "PNG")
    with_image = s.chat("Describe", images=[square])
    text_only = s.chat("Describe")
    assert with_image.usage.prompt_tokens - text_only.usage.prompt_tokens == 1399
    assert s.estimate("Describe", images=[square]).image_tokens == 1399


def test_estimate_follows_the_sessions_wire_format(local):
    s = session_for(local)
    image = solid((2000, 1000))
    assert s.estimate("?", images=[image]).image_tokens == openai_image_tokens(2000, 1000)
    s = session_for(local, api="anthropic")
    estimate = s.estimate("?", images=[image], image_preset="low")
    assert estimate.image_tokens == anthropic_image_tokens(512, 256) == 175
    assert "image_tokens=175" in repr(estimate)


def test_estimate_counts_a_url_at_the_most_it_can_cost(local):
    s = session_for(local)
    assert s.estimate("?", images=["https://example.invalid/a.png"]).image_tokens == 1445


def test_budget_holds_image_tokens_by_the_wire_formats_rule(local):
    square = solid((1568, 1568))  # OpenAI: 765 tokens; Anthropic: 1600
    prices = {"local/vision": {"input": 1000.0, "output": 0.0}}  # $0.001 a token
    s = session_for(local, model="local/vision", budget_usd=1.5, prices=prices)
    s.chat("?", images=[square], max_tokens=1)  # (765 + text) x 1.25 fits in $1.50
    assert local.stats.requests == 1

    s = session_for(local, model="local/vision", budget_usd=1.5, prices=prices, api="anthropic")
    with pytest.raises(holynb.BudgetExceededError):
        s.chat("?", images=[square], max_tokens=1)  # 1600 x 1.25 tokens do not
    assert local.stats.requests == 1


# -- the other call forms ----------------------------------------------------------------------


def test_stream_sends_images(vision, local):
    text = "".join(vision.stream("Describe", images=[solid((5, 4), (0, 0, 0))]))
    assert text == "image 1: PNG 5x4, mean colour #000000"
    assert vision.last_result.usage.prompt_tokens > 255


async def test_achat_and_astream_send_images(local):
    async with session_for(local, model="local/vision") as s:
        r = await s.achat("?", images=solid((3, 2)), image_preset="low")
        assert r.text == "image 1: PNG 3x2, mean colour #ff0000"
        parts = [t async for t in s.astream("?", images=[solid((3, 2)), solid((4, 4))])]
        assert "".join(parts).splitlines()[1].startswith("image 2: PNG 4x4")


def test_anthropic_format_sends_image_blocks_the_vision_model_reads(local):
    s = session_for(local, model="local/vision", api="anthropic")
    r = s.chat("What is it?", images=[encoded(solid((9, 7), (0, 255, 0)), "PNG")])
    assert r.text == "image 1: PNG 9x7, mean colour #00ff00"
    (block,) = [b for b in local.requests_log[-1]["body"]["messages"][-1]["content"]
                if b["type"] == "image"]  # fmt: skip
    assert block["source"]["type"] == "base64" and block["source"]["media_type"] == "image/png"
    text = "".join(s.stream("And this?", images=["https://example.invalid/a.png"]))
    assert text == "image 1: URL not fetched"


def test_images_go_with_the_last_user_message_of_a_conversation(vision, local):
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and this?"},
    ]
    vision.chat(messages, images=[solid()])
    sent = local.requests_log[-1]["body"]["messages"]
    assert sent[0]["content"] == "first"
    assert sent[2]["content"][0] == {"type": "text", "text": "and this?"}


# -- map ---------------------------------------------------------------------------------------


def test_map_sends_each_prompts_images_and_a_bad_one_fails_alone(vision, local, tmp_path):
    (tmp_path / "red.png").write_bytes(encoded(solid((8, 8), (255, 0, 0)), "PNG"))
    (tmp_path / "blue.bmp").write_bytes(encoded(solid((6, 4), (0, 0, 255)), "BMP"))
    (tmp_path / "broken.png").write_text("not a picture")
    images = [
        tmp_path / "red.png",
        [tmp_path / "red.png", tmp_path / "blue.bmp"],
        tmp_path / "broken.png",
        None,
    ]
    df = vision.map(["one", "two", "three", "four"], images=images, progress=False)
    assert df["ok"].tolist() == [True, True, False, True]
    assert df.loc[0, "text"] == "image 1: PNG 8x8, mean colour #ff0000"
    assert df.loc[1, "text"].splitlines()[1] == "image 2: PNG 6x4, mean colour #0000ff"
    assert df.loc[2, "error"].startswith("ImageError: broken.png is not an image")
    assert df.loc[3, "text"] == "No image received."
    assert df["prompt"].tolist() == ["one", "two", "three", "four"]
    assert local.stats.requests == 3


def test_map_takes_a_column_of_images_with_a_preset_and_resumes_from_a_checkpoint(
    vision, local, tmp_path
):
    import pandas as pd

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"photo{i}.jpg")
        paths[-1].write_bytes(encoded(noise((900, 600), seed=i), "JPEG"))
    frame = pd.DataFrame({"name": ["a", "b", "c"], "photo": paths})
    checkpoint = tmp_path / "run.sqlite"
    kwargs = {"template": "Describe {name}", "images": "photo", "image_preset": "low"}
    df = vision.map(frame, checkpoint=checkpoint, progress=False, **kwargs)
    assert df["text"].str.startswith("image 1: JPEG 512x341").all()
    assert local.stats.requests == 3
    again = vision.map(frame, checkpoint=checkpoint, progress=False, **kwargs)
    assert local.stats.requests == 3  # every answer came from the checkpoint
    assert again["text"].tolist() == df["text"].tolist()


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, holynb
    url, ckpt, folder = sys.argv[1:]
    paths = [f"{folder}/img{i}.{'bmp' if i % 5 == 0 else 'png'}" for i in range(200)]
    s = holynb.Session(base_url=url, model="local/vision", concurrency=8)
    s.map([f"item {i}" for i in range(200)], images=paths, checkpoint=ckpt, progress=False)
    """
)


def colour_of(i: int) -> tuple[int, int, int]:
    return (i, 255 - i, (i * 37) % 256)


def test_a_200_image_map_resumes_after_sigkill_sending_at_most_concurrency_twice(local, tmp_path):
    from holynb.keystore import KeyStore

    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(200):  # every 5th a BMP, converted to PNG on the way (the same bytes each run)
        fmt = "BMP" if i % 5 == 0 else "PNG"
        paths.append(folder / f"img{i}.{fmt.lower()}")
        paths[-1].write_bytes(encoded(solid((16, 12), colour_of(i)), fmt))
    ckpt = tmp_path / "run.sqlite"
    local.latency_ms = 20
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_SCRIPT, local.base_url, str(ckpt), str(folder)],
            env=key_env(local),
        )
        deadline = time.monotonic() + 60
        while local.stats.completed < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_after = local.stats.requests
        stored = len(KeyStore(ckpt))
        assert 40 <= stored < 200
        s = session_for(local, model="local/vision", concurrency=8)
        prompts = [f"item {i}" for i in range(200)]
        df = s.map(prompts, images=paths, checkpoint=ckpt, progress=False)
    finally:
        local.latency_ms = 0
    assert df["ok"].all() and len(df) == 200
    assert df["cache_hit"].sum() == stored
    assert local.stats.requests - killed_after == 200 - stored
    assert local.stats.requests - 200 <= 8  # only the items in flight at the kill
    expected = [
        "image 1: PNG 16x12, mean colour #{:02x}{:02x}{:02x}".format(*colour_of(i))
        for i in range(200)
    ]
    assert df["text"].tolist() == expected  # each row answered about its own image


def test_map_images_need_one_entry_per_prompt(vision, local):
    with pytest.raises(holynb.ConfigurationError, match="one entry per prompt"):
        vision.map(["a", "b"], images=[solid()], progress=False)
    with pytest.raises(holynb.ConfigurationError, match="not a column"):
        import pandas as pd

        vision.map(pd.DataFrame({"x": [1]}), template="{x}", images="photo", progress=False)
    assert local.stats.requests == 0


# -- compare and batch -------------------------------------------------------------------------


def test_compare_sends_each_prompts_images_to_every_model(vision, local, tmp_path):
    (tmp_path / "red.png").write_bytes(encoded(solid((8, 8), (255, 0, 0)), "PNG"))
    (tmp_path / "blue.bmp").write_bytes(encoded(solid((6, 4), (0, 0, 255)), "BMP"))
    local.register_model("local/vision-too", vision_model)
    models = ["local/vision", "local/vision-too"]
    images = [tmp_path / "red.png", tmp_path / "blue.bmp"]
    df = vision.compare(["one", "two"], models, images=images, progress=False)
    assert df["ok"].all() and df["model"].tolist() == models * 2
    assert df["text"].tolist() == [
        *["image 1: PNG 8x8, mean colour #ff0000"] * 2,
        *["image 1: PNG 6x4, mean colour #0000ff"] * 2,
    ]
    one = vision.compare("one", models, images=[images[1]], image_preset="low", progress=False)
    assert one["text"].tolist() == ["image 1: PNG 6x4, mean colour #0000ff"] * 2


async def test_acompare_sends_images(local, tmp_path):
    s = session_for(local, model="local/vision")
    df = await s.acompare(["one"], ["local/vision"], images=[solid()], progress=False)
    assert df["text"].tolist() == ["image 1: PNG 64x48, mean colour #ff0000"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_batch_puts_each_rows_images_into_its_request_body(vision, local, home, tmp_path):
    import pandas as pd

    (tmp_path / "red.png").write_bytes(encoded(solid((8, 8), (255, 0, 0)), "PNG"))
    frame = pd.DataFrame(
        {"name": ["a", "b", "c"], "photo": [tmp_path / "red.png", solid((4, 4), (0, 255, 0)), None]}
    )
    local.batches.settings.keep_inputs = True  # to read what was sent after the batch ends
    try:
        job = vision.batch(frame, "Describe {name}", images="photo", image_preset="low")
        df = job.wait(progress=False).results()
    finally:
        local.batches.settings.keep_inputs = False
    assert df["text"].tolist() == [
        "image 1: PNG 8x8, mean colour #ff0000",
        "image 1: PNG 4x4, mean colour #00ff00",
        "No image received.",
    ]
    input_id = local.batches.get(job.batch_ids[0]).input_file_id
    (uploaded,) = [f for f in local.batches.files.all() if f.id == input_id]
    first = orjson.loads(uploaded.content.splitlines()[0])
    assert first["body"]["messages"][-1]["content"][0] == {"type": "text", "text": "Describe a"}


def test_batch_with_bad_images_names_every_bad_row_and_uploads_nothing(local, home, tmp_path):
    (tmp_path / "broken.png").write_text("not a picture")
    big = tmp_path / "big.png"
    big.write_bytes(encoded(noise((300, 300)), "PNG"))
    s = session_for(local, model="local/vision", max_image_bytes=100_000)
    files_before = len(local.batches.files.all())
    images = [solid(), tmp_path / "broken.png", tmp_path / "missing.png", big]
    with pytest.raises(ImageError) as caught:
        s.batch(["a", "b", "c", "d"], images=images)
    message = str(caught.value)
    assert message.startswith("3 of 4 rows have an image that cannot be sent")
    assert "nothing was uploaded" in message
    assert "row 1: broken.png is not an image" in message
    assert "row 2: Image file not found:" in message and "row 3: big.png is " in message
    assert caught.value.name == "broken.png"
    assert len(local.batches.files.all()) == files_before and s.batches().empty
    with pytest.raises(holynb.ConfigurationError, match="batch's images= needs one entry"):
        s.batch(["a", "b"], images=[solid()])


# -- display -----------------------------------------------------------------------------------


def test_widget_shows_small_sanitised_thumbnails():
    big = prepare_image(noise((800, 400)), name='<img src=x onerror="alert(1)">.png')
    url = prepare_image("https://example.invalid/cat.png")
    view = StreamView("local/vision", images=[big, url])
    html = view.widget.children[0].value
    assert html.count("<img ") == 1 and 'src="data:image/png;base64,' in html
    assert "onerror=" not in html.replace("onerror=&quot;", "")
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.png, 800x400, PNG" in html
    assert "[image: https://example.invalid/cat.png]" in html  # named, never loaded
    thumb = html.split('src="', 1)[1].split('"', 1)[0]
    im = Image.open(io.BytesIO(base64.b64decode(thumb.partition(",")[2])))
    assert max(im.size) <= 96 and im.size == (96, 48)


def test_settled_output_keeps_the_thumbnails():
    updates: list[dict[str, str]] = []

    class Handle:
        def update(self, bundle: dict[str, str], raw: bool = False) -> None:
            updates.append(bundle)

    view = StreamView("local/vision", images=[prepare_image(solid((40, 20)), name="red.png")])
    view._handle = Handle()  # what show() keeps to replace the widget by static HTML
    view.append("A red rectangle.")
    view.finish(holynb.ChatResult(text="A red rectangle.", model="local/vision"))
    html = updates[-1]["text/html"]
    assert html.startswith('<div class="holynb-images"') and "red.png, 40x20, PNG" in html


def test_vision_model_reads_anthropic_image_blocks_too():
    from holynb.server.vision import anthropic_images, describe_images

    data = encoded(solid((4, 3), (0, 255, 0)), "PNG")
    blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(data).decode()}},
        {"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.png"}},
        {"type": "text", "text": "What are these?"},
    ]  # fmt: skip
    images = anthropic_images([{"role": "user", "content": blocks}])
    assert describe_images(images) == (
        "image 1: PNG 4x3, mean colour #00ff00\nimage 2: URL not fetched"
    )


BOMB_SCRIPT = """
import sys
from holynb import ImageError
from holynb.notebook.display import images_html
from holynb.images import prepare_image

bomb = prepare_image(open(sys.argv[1], "rb").read(), name="bomb.png")  # sent as it is: no decode
small = prepare_image(open(sys.argv[2], "rb").read(), name="small.png")
html = images_html([bomb, small])
try:
    bomb.thumbnail_url()
except ImageError as err:
    refused = str(err)
else:
    refused = ""
# VmHWM: this process's own peak (getrusage's ru_maxrss starts from the parent's at fork)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
peak_mb = int(status["VmHWM"].split()[0]) / 1024
print(repr((html.count("<img "), "bomb.png, 10000x10000, PNG" in html, refused, peak_mb)))
"""


def test_a_decompression_bomb_gets_no_thumbnail_and_memory_stays_bounded(tmp_path):
    from tests.helpers import CHILD_ENV

    bomb = png_bomb(10_000, 10_000)  # 100 megapixels: over Pillow's limit, under twice it
    assert len(bomb) < 150_000
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "small.png").write_bytes(encoded(solid((40, 20)), "PNG"))
    paths = [str(tmp_path / "bomb.png"), str(tmp_path / "small.png")]
    done = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, *paths],
        capture_output=True, text=True, env=CHILD_ENV, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    thumbnails, labelled, refused, peak_mb = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert peak_mb < 150, f"peak {peak_mb:.0f} MB"
    assert thumbnails == 1 and labelled  # the small image's thumbnail; the bomb named
    assert "bomb.png is 10000x10000 pixels" in refused and "MAX_IMAGE_PIXELS" in refused


def test_thumbnails_and_conversions_refuse_images_over_pillows_pixel_limit(local, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # a 200x100 image is "too many"
    big = prepare_image(encoded(solid((200, 100)), "PNG"), name="big.png")  # no decode: fine
    small = prepare_image(encoded(solid((40, 20)), "PNG"), name="small.png")
    with pytest.raises(ImageError, match=r"big\.png is 200x100 pixels") as caught:
        big.thumbnail_url()
    assert caught.value.name == "big.png"
    view = StreamView("local/echo", images=[big, small])
    html = view.widget.children[0].value
    assert html.count("<img ") == 1 and "big.png, 200x100, PNG" in html  # named, not shown
    s = session_for(local)
    assert s.chat("hi", images=[big]).text.startswith("You said: hi [1 image]")  # sent as it is
    seen = session_for(local, model="local/vision").chat("?", images=[big]).text
    assert seen == "image 1: PNG 200x100, too many pixels to decode"  # the server decodes none
    with pytest.raises(ImageError, match=r"bytes is 200x100 pixels.*nothing was sent"):
        s.chat("hi", images=[encoded(solid((200, 100)), "PNG")], image_preset="low")
    assert local.stats.requests == 2


def test_an_image_too_big_to_decode_fails_only_its_own_map_row(local, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    images = [encoded(solid((200, 100)), "BMP"), encoded(solid((40, 20)), "BMP")]  # converted
    df = session_for(local).map(["one", "two"], images=images, progress=False)
    assert df["ok"].tolist() == [False, True]
    assert df.loc[0, "error"].startswith("ImageError: bytes is 200x100 pixels")
    assert local.stats.requests == 1


def test_widget_without_images_has_no_thumbnail_row():
    view = StreamView("local/echo")
    assert view.images_html == "" and len(view.widget.children) == 3


def test_plain_view_prints_one_line_per_image():
    out = io.StringIO()
    image = prepare_image(encoded(solid((64, 48)), "PNG"), name="chart.png")
    PlainView("m", out=out, images=[image]).show()
    assert out.getvalue() == f"[image: chart.png, 64x48, PNG, {len(image.data)} B]\n"


# -- %%llm --image -----------------------------------------------------------------------------


@pytest.fixture
def shell(local):
    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext holynb")
    magics.set_default_session(session_for(local))
    yield sh
    sh.run_cell("%llm --new")


def run(shell, source):
    result = shell.run_cell(source, store_history=True)
    assert result.error_in_exec is None, result.error_in_exec
    return result


def test_llm_magic_sends_variables_and_paths_as_images(shell, local, tmp_path, capsys):
    path = tmp_path / "photo.bmp"
    path.write_bytes(encoded(noise((600, 300)), "BMP"))
    shell.user_ns["fig_like"] = solid((20, 10), (0, 0, 255))
    run(shell, f"%%llm -m local/vision --image fig_like --image '{path}' --image-preset low\nWhat?")
    lines = shell.user_ns["_llm"].splitlines()
    assert lines[0] == "image 1: PNG 20x10, mean colour #0000ff"
    assert lines[1].startswith("image 2: JPEG 512x256")
    out = capsys.readouterr().out
    assert "[image: fig_like, 20x10, PNG," in out and "[image: photo.bmp, 512x256, JPEG," in out
    assert sent_parts(local)[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_llm_magic_reports_a_bad_image_and_sends_nothing(shell, local, capsys):
    result = shell.run_cell("%%llm --image no/such/file.png\nWhat?", store_history=True)
    assert isinstance(result.error_in_exec, UsageError)  # the cell fails: Run All stops
    assert "holynb: Image file not found: no/such/file.png" in capsys.readouterr().err
    assert local.stats.requests == 0


def test_llm_chat_keeps_the_images_in_the_conversation(shell, local, capsys):
    shell.user_ns["red"] = solid((8, 8), (255, 0, 0))
    run(shell, "%llm --new")
    run(shell, "%%llm --chat -m local/vision --image red\nWhat is this?")
    assert shell.user_ns["_llm"] == "image 1: PNG 8x8, mean colour #ff0000"
    run(shell, "%%llm --chat -m local/vision\nAnd its colour again?")
    messages = local.requests_log[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    first = messages[0]["content"]
    assert first[0]["text"].strip() == "What is this?"
    data = base64.b64decode(first[1]["image_url"]["url"].partition(",")[2])
    assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (255, 0, 0)
    assert messages[2]["content"].strip() == "And its colour again?"
    capsys.readouterr()
    run(shell, "%llm history")
    out = capsys.readouterr().out
    assert "user: What is this? [image]" in out and "base64" not in out


def test_llm_magic_sends_the_images_to_every_model_side_by_side(shell, local):
    local.register_model("local/vision-too", vision_model)
    shell.user_ns["red"] = solid((8, 8), (255, 0, 0))
    run(shell, "%%llm -m local/vision,local/vision-too --image red -o cmp\nWhat?")
    assert shell.user_ns["_llm"] == dict.fromkeys(
        ["local/vision", "local/vision-too"], "image 1: PNG 8x8, mean colour #ff0000"
    )
    assert shell.user_ns["cmp"]["prompt"].str.strip().tolist() == ["What?", "What?"]


def test_sizes_in_messages_are_decimal_like_the_limits_people_type(local, tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (27_021_298 - 8))
    s = session_for(local, max_image_bytes=500_000)
    with pytest.raises(ImageError) as caught:
        s.chat("What is it?", images=[path])
    assert "huge.png is 27.0 MB, over the 500 KB limit per image" in str(caught.value)
