"""What a backend starts from: the reference placed on its canvas, and the fill
the unknown area holds before generation. Pure array functions, no I/O.

The reference (already scaled and cropped to the visible box V) sits at
``(vx0, vy0)`` on a ``W x H`` canvas; the mask is True where pixels are unknown.
"""

from __future__ import annotations

import numpy as np


def compose(
    ref: np.ndarray, W: int, H: int, vx0: int, vy0: int, fill=(0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """-> (canvas H x W x 3 uint8 with the reference placed and ``fill`` elsewhere,
    mask H x W bool, True = to generate)."""
    h, w = ref.shape[:2]
    canvas = np.empty((H, W, 3), dtype=np.uint8)
    canvas[:] = np.asarray(fill, dtype=np.uint8)
    canvas[vy0 : vy0 + h, vx0 : vx0 + w] = ref
    mask = np.ones((H, W), dtype=bool)
    mask[vy0 : vy0 + h, vx0 : vx0 + w] = False
    return canvas, mask


# Fill colours a checkpoint may have been trained on (the hosted API's: green, blue,
# magenta) and FLUX.1-Fill-dev's own: masked pixels zeroed in [-1, 1], i.e. mid-grey.
FILL_COLORS = {
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "magenta": (255, 0, 255),
    "grey": (128, 128, 128),
}
CONTRAST_CHOICES = ("green", "blue", "magenta")


def border_pixels(ref: np.ndarray, band: int = 4) -> np.ndarray:
    """The reference's outer band as N x 3 (the colours the fill must stand apart from)."""
    h, w = ref.shape[:2]
    b = max(1, min(band, h // 2, w // 2))
    return np.concatenate(
        [
            ref[:b].reshape(-1, 3),
            ref[-b:].reshape(-1, 3),
            ref[:, :b].reshape(-1, 3),
            ref[:, -b:].reshape(-1, 3),
        ]
    )


def contrast_fill(ref: np.ndarray) -> str:
    """``contrast`` rule: of green / blue / magenta, the one farthest from the border's colours
    (distance to the nearest 2 % of border pixels, so a few outliers do not decide)."""
    px = border_pixels(ref).astype(np.float32)
    best, best_d = CONTRAST_CHOICES[0], -1.0
    for name in CONTRAST_CHOICES:
        d = np.linalg.norm(px - np.asarray(FILL_COLORS[name], np.float32), axis=1)
        score = float(np.percentile(d, 2))
        if score > best_d:
            best, best_d = name, score
    return best
