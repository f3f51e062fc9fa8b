"""Per-row quality metrics (pure array functions): seam score, reference fidelity and
fill leakage. Written to the metadata; the review page ranks rows by them."""

from __future__ import annotations

import numpy as np

from .compose import CONTRAST_CHOICES as COLOUR_FILLS, FILL_COLORS

LEAK_DISTANCE = 60.0   # RGB distance under which a generated pixel "is" the fill colour
LEAK_FLAG = 0.02       # fraction of generated pixels above which a row is flagged


def seam_score(out: np.ndarray, vx0: int, vy0: int, vx1: int, vy1: int, sides) -> float | None:
    """Gradient across the reference boundary over the gradient just inside it.

    ~1: the boundary is no sharper than the photo itself; >> 1: a visible seam. Measured
    on generated sides only; None when nothing borders the reference.
    """
    left, top, right, bottom = sides
    cross, inside = [], []

    class _Grey:  # grey values of just the lines asked for, not of the whole canvas
        def __getitem__(self, key):
            return out[key].astype(np.float32).mean(axis=-1)

    img = _Grey()

    def pair(a, b):
        return np.abs(a - b).mean()

    if left and vx1 - vx0 > 3:
        cross.append(pair(img[vy0:vy1, vx0 - 1], img[vy0:vy1, vx0]))
        inside.append(pair(img[vy0:vy1, vx0 + 1], img[vy0:vy1, vx0 + 2]))
    if right and vx1 - vx0 > 3:
        cross.append(pair(img[vy0:vy1, vx1], img[vy0:vy1, vx1 - 1]))
        inside.append(pair(img[vy0:vy1, vx1 - 2], img[vy0:vy1, vx1 - 3]))
    if top and vy1 - vy0 > 3:
        cross.append(pair(img[vy0 - 1, vx0:vx1], img[vy0, vx0:vx1]))
        inside.append(pair(img[vy0 + 1, vx0:vx1], img[vy0 + 2, vx0:vx1]))
    if bottom and vy1 - vy0 > 3:
        cross.append(pair(img[vy1, vx0:vx1], img[vy1 - 1, vx0:vx1]))
        inside.append(pair(img[vy1 - 2, vx0:vx1], img[vy1 - 3, vx0:vx1]))
    if not cross:
        return None
    return float(np.mean(cross) / (np.mean(inside) + 1.0))


def untouched(vh: int, vw: int, sides, feather: int) -> tuple[int, int, int, int]:
    """The part of V outside the feather band, in V's coordinates (y0, y1, x0, x1)."""
    left, top, right, bottom = sides
    return (feather if top else 0, vh - (feather if bottom else 0),
            feather if left else 0, vw - (feather if right else 0))


def fidelity(out: np.ndarray, ref: np.ndarray, vx0: int, vy0: int, sides, feather: int) -> tuple[int, float]:
    """Max and mean |output - source| over the untouched reference area (0 for png)."""
    h, w = ref.shape[:2]
    y0, y1, x0, x1 = untouched(h, w, sides, feather)
    if y1 <= y0 or x1 <= x0:
        return 0, 0.0
    d = np.abs(out[vy0 + y0:vy0 + y1, vx0 + x0:vx0 + x1].astype(np.int16) - ref[y0:y1, x0:x1].astype(np.int16))
    return int(d.max()), float(d.mean())


def fill_leakage(out: np.ndarray, vx0: int, vy0: int, vx1: int, vy1: int, fill: str | None) -> float | None:
    """Fraction of generated pixels still (nearly) the fill colour; None for non-colour fills."""
    if fill not in COLOUR_FILLS:
        return None
    mask = np.ones(out.shape[:2], dtype=bool)
    mask[vy0:vy1, vx0:vx1] = False
    if not mask.any():
        return 0.0
    d = np.linalg.norm(out[mask].astype(np.float32) - np.asarray(FILL_COLORS[fill], np.float32), axis=1)
    return float((d < LEAK_DISTANCE).mean())


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio of uint8 images, dB (over ``mask`` if given; inf if equal)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = float(((d[mask] if mask is not None else d) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
