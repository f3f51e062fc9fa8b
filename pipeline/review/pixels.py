"""Pixel helpers the score's checks share: the grey they read, the scale they look at,
and each generated side seen as a left edge."""

from __future__ import annotations

import numpy as np

from ..common.box import Box

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in an image's pixels

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


def enlarge(region: Region | None, f: int, W: int, H: int) -> Region | None:
    """A region found on the image shrunk by ``f`` (``shrink``), in the W x H image's pixels."""
    if region is None:
        return None
    x0, y0, x1, y1 = region
    return max(0, x0 * f), max(0, y0 * f), min(W, x1 * f), min(H, y1 * f)


def sides(H: int, W: int, box: Box):
    """Each generated side as (name, view: an H x W (x C) array seen with that side as its
    left edge, seam column, the original's first and last row in the view, its depth):
    flips and transposes, so every check is written once, for a left edge."""
    if box.x0 > 0:
        yield "left", (lambda a: a), box.x0, box.y0, box.y1, box.width
    if box.x1 < W:
        yield "right", (lambda a: a[:, ::-1]), W - box.x1, box.y0, box.y1, box.width
    if box.y0 > 0:
        yield "top", (lambda a: a.swapaxes(0, 1)), box.y0, box.x0, box.x1, box.height
    if box.y1 < H:
        yield (
            "bottom",
            (lambda a: a.swapaxes(0, 1)[:, ::-1]),
            H - box.y1,
            box.x0,
            box.x1,
            box.height,
        )


def rect(side: str, a: int, b: int, r0: int, r1: int, W: int, H: int) -> Region:
    """Columns ``[a, b)`` and rows ``[r0, r1)`` of a side's view, in image pixels."""
    if side == "left":
        return a, r0, b, r1
    if side == "right":
        return W - b, r0, W - a, r1
    if side == "top":
        return r0, a, r1, b
    return r0, H - b, r1, H - a
