"""analyze_image: what Pillow can say about an image file in the workspace, deterministically.

Dominant colour: the image is reduced (nearest neighbour, no blending) to at most 128x128 pixels, the
pixels are grouped into 16-level buckets per channel, and the average of the fullest bucket is
reported (ties go to the smaller bucket), so the same file always gives the same answer. Decoding
runs in a :class:`~codette.tools.bounded.BoundedWorker` child (memory and time bounded) on bytes the
parent read through the workspace's checked descriptor.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from typing import Any

from PIL import Image, ImageChops, ImageStat, UnidentifiedImageError

from codette.tools.base import BoundedRunner, ToolFailure
from codette.tools.files import Workspace

MAX_IMAGE_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 25_000_000
GRAY_TOLERANCE = 3
_SAMPLE = 128

NAMED_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "silver": (192, 192, 192),
    "red": (255, 0, 0), "maroon": (128, 0, 0), "green": (0, 128, 0), "lime": (0, 255, 0),
    "blue": (0, 0, 255), "navy": (0, 0, 128), "yellow": (255, 255, 0), "olive": (128, 128, 0),
    "cyan": (0, 255, 255), "teal": (0, 128, 128), "magenta": (255, 0, 255), "purple": (128, 0, 128),
    "orange": (255, 165, 0), "brown": (139, 69, 19), "pink": (255, 192, 203),
}


def color_name(rgb: tuple[int, int, int]) -> str:
    """The nearest basic colour name (squared RGB distance; ties resolved by table order)."""
    return min(NAMED_COLORS, key=lambda n: sum((a - b) ** 2 for a, b in zip(rgb, NAMED_COLORS[n])))


def dominant_color(rgb: Image.Image) -> tuple[int, int, int]:
    small = rgb
    if max(rgb.size) > _SAMPLE:
        scale = _SAMPLE / max(rgb.size)
        small = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                           Image.Resampling.NEAREST)
    data = small.tobytes()
    pixels = list(zip(data[0::3], data[1::3], data[2::3]))
    buckets = Counter((r >> 4, g >> 4, b >> 4) for r, g, b in pixels)
    best = min(buckets, key=lambda k: (-buckets[k], k))
    members = [p for p in pixels if (p[0] >> 4, p[1] >> 4, p[2] >> 4) == best]
    n = len(members)
    return tuple(round(sum(p[i] for p in members) / n) for i in range(3))  # type: ignore[return-value]


def is_grayscale(img: Image.Image) -> bool:
    """True for grayscale modes, or colour images whose channels never differ by more than a few levels."""
    if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    rgb = img.convert("RGB")
    r, g, b = rgb.split()
    worst = max(ImageChops.difference(r, g).getextrema()[1], ImageChops.difference(g, b).getextrema()[1])
    return worst <= GRAY_TOLERANCE


def describe_image(data: bytes, shown: str, rel: str) -> dict[str, Any]:
    """Format, size, mode, per-band mean, dominant colour (RGB, hex, name) and grayscale flag of an image's bytes."""
    path = shown
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ToolFailure(f"image '{path}' has more than {MAX_PIXELS} pixels")
                img.load()
                fmt, mode, (w, h) = img.format, img.mode, img.size
                work = img.convert("RGBA" if "A" in img.getbands() or img.info.get("transparency") is not None
                                   else "RGB") if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV") else img.copy()
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ToolFailure(f"'{path}' is not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # e.g. a text chunk over Pillow's size limit
        raise ToolFailure(f"cannot read image '{path}': {str(exc)[:160]}") from None
    bands = list(work.getbands())
    stat_img = work.convert("L") if work.mode == "1" else work
    means = [round(m, 2) for m in ImageStat.Stat(stat_img).mean]
    dom = dominant_color(work.convert("RGB"))
    return {
        "path": rel,
        "format": fmt,
        "width": w,
        "height": h,
        "mode": mode,
        "bands": bands,
        "mean_color": means,
        "dominant_color": list(dom),
        "dominant_hex": "#{:02x}{:02x}{:02x}".format(*dom),
        "dominant_name": color_name(dom),
        "grayscale": is_grayscale(work),
    }


def analyze_image(ws: Workspace, path: str, worker: BoundedRunner | None = None) -> dict[str, Any]:
    """Tool entry point: the file read through the workspace, decoded in ``worker`` (or in process)."""
    data, rel = ws.read_bytes(path, MAX_IMAGE_BYTES, "image", not_file=f"file '{path}' does not exist")
    if worker is None:
        return describe_image(data, path, rel)
    return worker.call(describe_image, data, f"image '{path}'", shown=path, rel=rel)
