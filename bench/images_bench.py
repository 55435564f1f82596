"""What preparing an image costs: milliseconds per megapixel for each preset.

    python bench/images_bench.py                 # 12 MP and 2 MP images, median of 3
    python bench/images_bench.py --sizes 4000x3000,1920x1080 --reps 5

Images are generated (a smooth gradient with noise, like a photo, and a flat chart-like image)
and encoded as JPEG, PNG and BMP files in memory; each is then prepared with
``holynb.images.prepare_image`` as a call would (no preset, "high", "medium", "low"). Printed
as a Markdown table: the source, the preset, what was sent (format, size, bytes) and the time
per megapixel of the source. "no preset" on JPEG and PNG is the untouched pass-through.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from holynb.images import prepare_image

PRESETS = (None, "high", "medium", "low")


def photo(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def chart(width: int, height: int) -> Image.Image:
    im = Image.new("RGB", (width, height), "white")
    for i in range(8):
        left = width // 10 + i * width // 10
        top = height - (i + 2) * height // 12
        im.paste((31, 119, 180), (left, top, left + width // 14, height - height // 10))
    return im


def encoded(im: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def median_ms(data: bytes, preset: str | None, reps: int) -> tuple[float, object]:
    times = []
    prepared = None
    for _ in range(reps):
        t0 = time.perf_counter()
        prepared = prepare_image(data, preset=preset, max_bytes=2**31)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4000x3000,1920x1080", help="WxH,WxH,...")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print("| source | preset | sent | ms | ms per MP |")
    print("|---|---|---|---:|---:|")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        megapixels = width * height / 1e6
        sources = {
            "photo JPEG": encoded(photo(width, height), "JPEG"),
            "photo BMP": encoded(photo(width, height), "BMP"),
            "chart PNG": encoded(chart(width, height), "PNG"),
        }
        for label, data in sources.items():
            for preset in PRESETS:
                ms, img = median_ms(data, preset, args.reps)
                sent = f"{img.format} {img.width}x{img.height}, {img.size_bytes / 1e6:.2f} MB"
                name = preset or "no preset"
                print(
                    f"| {label} {width}x{height} | {name} | {sent} | {ms:,.1f} "
                    f"| {ms / megapixels:,.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
