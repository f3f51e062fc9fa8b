"""Pixel helpers the score's checks share: the grey they read and the scale they look at."""

from __future__ import annotations

import numpy as np

from ..common.box import Box

# ITU-R 601 luma in thousandths: integer weights, so every product and partial sum of the
# float32 matrix product is an integer below 2**24, exact in whatever order a BLAS kernel
# sums (fractional weights are not: the last bits differed by CPU); then one IEEE division
GREY_MILLI = np.array([299, 587, 114], np.float32)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """The grey (0..255, float32) of uint8 RGB pixels, bit for bit the same everywhere."""
    return (rgb.astype(np.float32) @ GREY_MILLI) / np.float32(1000)


def shrink(image: np.ndarray, box: Box, longest: int) -> tuple[np.ndarray, Box, int]:
    """The image and box at most ``longest`` px on the longer side, by a whole factor
    (returned): an area average over f x f pixels, OpenCV's fast path (a twentieth of the
    time of a fractional factor). The last few rows and columns that do not fill a block
    are left out (under one pixel at the new scale)."""
    import cv2

    H, W = image.shape[:2]
    f = -(-max(H, W) // longest)
    if f <= 1:
        return image, box, 1
    h, w = max(1, H // f), max(1, W // f)
    small = cv2.resize(image[: h * f, : w * f], (w, h), interpolation=cv2.INTER_AREA)
    return small, Box(*(round(v / f) for v in (box.x0, box.y0, box.x1, box.y1))), f
