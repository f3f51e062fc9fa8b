"""Per-row quality metrics (pure array functions): seam score, reference fidelity and
fill leakage. Written to the metadata; the review page ranks rows by them."""

from __future__ import annotations

import numpy as np

from ..backends.canvas import CONTRAST_CHOICES as COLOUR_FILLS
from ..backends.canvas import FILL_COLORS
from ..common.box import Box, Sides

LEAK_DISTANCE = 60.0  # RGB distance under which a generated pixel "is" the fill colour
LEAK_FLAG = 0.02  # fraction of generated pixels above which a row is flagged


# A real photo's own boundary scores ~1 on both measures; a seam is a departure either
# way: a hard edge (seam >> 1), an over-smoothed ramp (seam << 1), a blurred fill
# (texture << 1), noise (texture >> 1). Rows are ranked by how far they are from natural.
NATURAL = (0.8, 1.25)  # symmetric in log: |ln x| <= ln 1.25


def seam_score(out: np.ndarray, box: Box, sides: Sides) -> float | None:
    """Step across the reference boundary over the step just inside it, on generated sides.

    Two-sided: ~1 natural (the boundary is like the photo itself); well above 1 a hard
    edge; well below 1 an over-smoothed ramp (the fill leans on the boundary and blurs
    it away). None when nothing borders the reference.
    """
    vx0, vy0, vx1, vy1 = box.x0, box.y0, box.x1, box.y1
    cross, inside = [], []

    def grey(key):  # grey values of just the lines asked for, not of the whole canvas
        return out[key].astype(np.float32).mean(axis=-1)

    def step(a, b):
        return np.abs(grey(a) - grey(b)).mean()

    rows, cols = slice(vy0, vy1), slice(vx0, vx1)
    if sides.left and box.width > 3:
        cross.append(step((rows, vx0 - 1), (rows, vx0)))
        inside.append(step((rows, vx0 + 1), (rows, vx0 + 2)))
    if sides.right and box.width > 3:
        cross.append(step((rows, vx1), (rows, vx1 - 1)))
        inside.append(step((rows, vx1 - 2), (rows, vx1 - 3)))
    if sides.top and box.height > 3:
        cross.append(step((vy0 - 1, cols), (vy0, cols)))
        inside.append(step((vy0 + 1, cols), (vy0 + 2, cols)))
    if sides.bottom and box.height > 3:
        cross.append(step((vy1, cols), (vy1 - 1, cols)))
        inside.append(step((vy1 - 2, cols), (vy1 - 3, cols)))
    if not cross:
        return None
    return float((np.mean(cross) + 0.5) / (np.mean(inside) + 0.5))


def texture_score(out: np.ndarray, box: Box, sides: Sides, band: int = 16) -> float | None:
    """Mean |Laplacian| in the generated band along the seam over the reference's band
    just inside it (``band`` px each, generated sides only): ~1 the photo's texture there
    continues; << 1 a smooth or blurred fill; >> 1 noise. Local on purpose: a plain
    backdrop continued plain scores ~1 whatever the subject. None when nothing borders."""
    import cv2

    vx0, vy0, vx1, vy1 = box.x0, box.y0, box.x1, box.y1
    H, W = out.shape[:2]
    b = max(2, min(band, box.width // 3, box.height // 3))
    lap = np.abs(cv2.Laplacian(out.astype(np.float32).mean(axis=2), cv2.CV_32F, ksize=1))
    rows, cols = slice(vy0, vy1), slice(vx0, vx1)
    pairs = []  # (generated band, reference band); one pixel kept off the seam and the edge
    if sides.left and vx0 > 2:
        pairs.append((lap[rows, max(1, vx0 - b) : vx0 - 1], lap[rows, vx0 + 1 : vx0 + b]))
    if sides.right and W - vx1 > 2:
        pairs.append((lap[rows, vx1 + 1 : min(W - 1, vx1 + b)], lap[rows, vx1 - b : vx1 - 1]))
    if sides.top and vy0 > 2:
        pairs.append((lap[max(1, vy0 - b) : vy0 - 1, cols], lap[vy0 + 1 : vy0 + b, cols]))
    if sides.bottom and H - vy1 > 2:
        pairs.append((lap[vy1 + 1 : min(H - 1, vy1 + b), cols], lap[vy1 - b : vy1 - 1, cols]))
    if not pairs:
        return None
    new = np.concatenate([g.ravel() for g, _ in pairs])
    old = np.concatenate([r.ravel() for _, r in pairs])
    if not new.size or not old.size:
        return None
    return float((new.mean() + 0.25) / (old.mean() + 0.25))


def quality_distance(seam: float | None, texture: float | None) -> float | None:
    """How far from natural a row is: the larger |ln| of its seam and texture scores
    (0 natural; ln 1.25 = 0.22 is the edge of the natural band)."""
    parts = [abs(float(np.log(v))) for v in (seam, texture) if v is not None and v > 0]
    return max(parts) if parts else None


def lowpass_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray, sigma: float = 4.0) -> float:
    """PSNR of the images blurred with a Gaussian of ``sigma`` px, over ``mask``: structure
    and colour, with texture (which no method can restore exactly) left out."""
    import cv2

    blur = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma) for x in (a, b)]
    mse = float(((blur[0] - blur[1])[mask] ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def untouched(vh: int, vw: int, sides: Sides, feather: int) -> tuple[int, int, int, int]:
    """The part of V outside the feather band, in V's coordinates (y0, y1, x0, x1)."""
    left, top, right, bottom = sides
    return (
        feather if top else 0,
        vh - (feather if bottom else 0),
        feather if left else 0,
        vw - (feather if right else 0),
    )


def fidelity(
    out: np.ndarray, ref: np.ndarray, box: Box, sides: Sides, feather: int
) -> tuple[int, float]:
    """Max and mean |output - source| over the untouched reference area (0 for png)."""
    y0, y1, x0, x1 = untouched(box.height, box.width, sides, feather)
    if y1 <= y0 or x1 <= x0:
        return 0, 0.0
    inner = out[box.region][y0:y1, x0:x1]
    d = np.abs(inner.astype(np.int16) - ref[y0:y1, x0:x1].astype(np.int16))
    return int(d.max()), float(d.mean())


def fill_leakage(out: np.ndarray, box: Box, fill: str | None) -> float | None:
    """Fraction of generated pixels still (nearly) the fill colour; None for non-colour fills."""
    if fill not in COLOUR_FILLS:
        return None
    mask = np.ones(out.shape[:2], dtype=bool)
    mask[box.region] = False
    if not mask.any():
        return 0.0
    d = np.linalg.norm(
        out[mask].astype(np.float32) - np.asarray(FILL_COLORS[fill], np.float32), axis=1
    )
    return float((d < LEAK_DISTANCE).mean())


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio of uint8 images, dB (over ``mask`` if given; inf if equal)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = float(((d[mask] if mask is not None else d) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
