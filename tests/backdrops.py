"""Product photos for tests and benchmarks, made the way studios shoot them: a real
object (the cup and saucer of scikit-image's coffee photo, cut out along an ellipse)
composited onto a backdrop: flat white with sensor noise, a grey vignette, a two-tone
sweep, white with a soft shadow under the object. The product's true box is known, so
tests can check where the pipeline placed it.
"""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image

from pipeline.common.box import Box

KINDS = ("white", "vignette", "sweep", "shadow")  # and "blown": a pure-white (255) sweep


def product(size: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """The cup and saucer (``size`` x ``size`` RGB) and its mask (True on the object)."""
    img = skimage.data.coffee()[20:380, 120:480]  # 360 x 360, the cup and saucer centred
    if size != 360:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))
    yy, xx = np.mgrid[0:size, 0:size]
    mask = ((xx - size / 2) / (size * 0.45)) ** 2 + ((yy - size / 2) / (size * 0.42)) ** 2 <= 1
    return img, mask


def backdrop(kind: str, width: int, height: int, seed: int = 0, noise: float = 2.0) -> np.ndarray:
    """A studio backdrop (height x width x 3 uint8) with Gaussian sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    if kind == "white":
        base = np.full((height, width, 3), 245.0)
    elif kind == "blown":  # lit to the sensor's white point: 255 with a trace of noise
        base = np.full((height, width, 3), 254.5)
    elif kind == "vignette":  # grey, darker towards the corners, a little cool
        r = np.hypot((xx - width / 2) / width, (yy - height / 2) / height)
        base = (200.0 - 60.0 * r**2)[..., None] * np.array([1.0, 1.0, 1.02])
    elif kind == "sweep":  # a paper sweep: light at the top, darker and warmer at the floor
        t = yy / height
        base = (230.0 * (1 - t) + 150.0 * t)[..., None] * np.array([1.0, 0.98, 0.95])
    elif kind == "shadow":  # white, a soft contact shadow low in the frame
        base = np.full((height, width, 3), 238.0)
        blob = ((xx - width / 2) / (width * 0.3)) ** 2 + (
            (yy - height * 0.8) / (height * 0.05)
        ) ** 2
        base -= 40.0 * np.exp(-blob)[..., None]
    else:
        raise ValueError(f"unknown backdrop {kind!r}; one of {KINDS}")
    return np.clip(base + rng.normal(0.0, noise, base.shape), 0, 255).round().astype(np.uint8)


def product_photo(
    kind: str = "white",
    width: int = 500,
    height: int = 600,
    at: tuple[int, int] | None = None,
    size: int = 300,
    seed: int = 0,
    noise: float = 2.0,
) -> tuple[np.ndarray, Box]:
    """The product (``size`` px) on a ``kind`` backdrop with its top-left at ``at`` (x, y;
    default: centred a little high, as product shots are). A negative or too large ``at``
    cuts it with the frame. Returns the image and the product's box inside it."""
    obj, mask = product(size)
    x, y = at if at is not None else ((width - size) // 2, (height - size) // 3)
    out = backdrop(kind, width, height, seed, noise)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + size, width), min(y + size, height)
    sub = mask[y0 - y : y1 - y, x0 - x : x1 - x]
    out[y0:y1, x0:x1][sub] = obj[y0 - y : y1 - y, x0 - x : x1 - x][sub]
    rows, cols = np.flatnonzero(sub.any(axis=1)), np.flatnonzero(sub.any(axis=0))
    return out, Box(
        x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1
    )


def scene_photos() -> dict[str, np.ndarray]:
    """scikit-image's scene photos (RGB): none of them is a studio backdrop."""
    out = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry"):
        img = getattr(skimage.data, name)()
        out[name] = np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]
    return out
