"""Canvas composition and paste-back: pure array functions, no I/O.

The reference (already scaled and cropped to the visible box V) sits at
``(vx0, vy0)`` on a ``W x H`` canvas; the mask is True where pixels are unknown.
Whatever a backend returns, the reference pixels are pasted back exactly.
"""

from __future__ import annotations

import numpy as np


def crop_box(offset_x: int, offset_y: int, vx0: int, vy0: int, vx1: int, vy1: int) -> tuple[int, int, int, int]:
    """The visible box in the (scaled) reference's own coordinates."""
    return vx0 - offset_x, vy0 - offset_y, vx1 - offset_x, vy1 - offset_y


def compose(ref: np.ndarray, W: int, H: int, vx0: int, vy0: int, fill=(0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """-> (canvas H x W x 3 uint8 with the reference placed and ``fill`` elsewhere,
    mask H x W bool, True = to generate)."""
    h, w = ref.shape[:2]
    canvas = np.empty((H, W, 3), dtype=np.uint8)
    canvas[:] = np.asarray(fill, dtype=np.uint8)
    canvas[vy0:vy0 + h, vx0:vx0 + w] = ref
    mask = np.ones((H, W), dtype=bool)
    mask[vy0:vy0 + h, vx0:vx0 + w] = False
    return canvas, mask


def paste_back(out: np.ndarray, ref: np.ndarray, vx0: int, vy0: int) -> np.ndarray:
    """Put the exact reference pixels back (the contract: the original is untouched)."""
    h, w = ref.shape[:2]
    out = np.array(out, dtype=np.uint8, copy=True)
    out[vy0:vy0 + h, vx0:vx0 + w] = ref
    return out


def extend_alpha(alpha: np.ndarray | None, W: int, H: int, vx0: int, vy0: int) -> np.ndarray | None:
    """Source alpha on the canvas: the reference's own, generated area opaque."""
    if alpha is None:
        return None
    out = np.full((H, W), 255, dtype=np.uint8)
    h, w = alpha.shape
    out[vy0:vy0 + h, vx0:vx0 + w] = alpha
    return out


def flatten_alpha(rgb: np.ndarray, alpha: np.ndarray, background=(255, 255, 255)) -> np.ndarray:
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    bg = np.asarray(background, dtype=np.float32)
    return (rgb.astype(np.float32) * a + bg * (1.0 - a) + 0.5).astype(np.uint8)
