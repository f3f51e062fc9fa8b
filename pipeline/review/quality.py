"""Per-row quality metrics (pure array functions): seam score, reference fidelity and
fill leakage. Written to the metadata; the review page ranks rows by them."""

from __future__ import annotations

import numpy as np

from ..backends.canvas import CONTRAST_CHOICES as COLOUR_FILLS
from ..backends.canvas import FILL_COLORS

LEAK_DISTANCE = 60.0  # RGB distance under which a generated pixel "is" the fill colour
LEAK_FLAG = 0.02  # fraction of generated pixels above which a row is flagged


# A real photo's own boundary scores ~1 on both measures; a seam is a departure either
# way: a hard edge (seam >> 1), an over-smoothed ramp (seam << 1), a blurred fill
# (texture << 1), noise (texture >> 1). Rows are ranked by how far they are from natural.
NATURAL = (0.8, 1.25)  # symmetric in log: |ln x| <= ln 1.25


def seam_score(out: np.ndarray, vx0: int, vy0: int, vx1: int, vy1: int, sides) -> float | None:
    """Step across the reference boundary over the step just inside it, on generated sides.

    Two-sided: ~1 natural (the boundary is like the photo itself); well above 1 a hard
    edge; well below 1 an over-smoothed ramp (the fill leans on the boundary and blurs
    it away). None when nothing borders the reference.
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
    return float((np.mean(cross) + 0.5) / (np.mean(inside) + 0.5))


def texture_score(
    out: np.ndarray, vx0: int, vy0: int, vx1: int, vy1: int, sides, band: int = 16
) -> float | None:
    """Mean |Laplacian| in the generated band along the seam over the reference's band
    just inside it (``band`` px each, generated sides only): ~1 the photo's texture there
    continues; << 1 a smooth or blurred fill; >> 1 noise. Local on purpose: a plain
    backdrop continued plain scores ~1 whatever the subject. None when nothing borders."""
    import cv2

    left, top, right, bottom = sides
    H, W = out.shape[:2]
    b = max(2, min(band, (vx1 - vx0) // 3, (vy1 - vy0) // 3))
    lap = np.abs(cv2.Laplacian(out.astype(np.float32).mean(axis=2), cv2.CV_32F, ksize=1))
    new, old = [], []
    # one pixel kept off the seam and the canvas edge: the Laplacian there sees both sides
    if left and vx0 > 2:
        (
            new.append(lap[vy0:vy1, max(1, vx0 - b) : vx0 - 1]),
            old.append(lap[vy0:vy1, vx0 + 1 : vx0 + b]),
        )
    if right and W - vx1 > 2:
        (
            new.append(lap[vy0:vy1, vx1 + 1 : min(W - 1, vx1 + b)]),
            old.append(lap[vy0:vy1, vx1 - b : vx1 - 1]),
        )
    if top and vy0 > 2:
        (
            new.append(lap[max(1, vy0 - b) : vy0 - 1, vx0:vx1]),
            old.append(lap[vy0 + 1 : vy0 + b, vx0:vx1]),
        )
    if bottom and H - vy1 > 2:
        (
            new.append(lap[vy1 + 1 : min(H - 1, vy1 + b), vx0:vx1]),
            old.append(lap[vy1 - b : vy1 - 1, vx0:vx1]),
        )
    if not new:
        return None
    n, o = np.concatenate([x.ravel() for x in new]), np.concatenate([x.ravel() for x in old])
    if not n.size or not o.size:
        return None
    return float((n.mean() + 0.25) / (o.mean() + 0.25))


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


def untouched(vh: int, vw: int, sides, feather: int) -> tuple[int, int, int, int]:
    """The part of V outside the feather band, in V's coordinates (y0, y1, x0, x1)."""
    left, top, right, bottom = sides
    return (
        feather if top else 0,
        vh - (feather if bottom else 0),
        feather if left else 0,
        vw - (feather if right else 0),
    )


def fidelity(
    out: np.ndarray, ref: np.ndarray, vx0: int, vy0: int, sides, feather: int
) -> tuple[int, float]:
    """Max and mean |output - source| over the untouched reference area (0 for png)."""
    h, w = ref.shape[:2]
    y0, y1, x0, x1 = untouched(h, w, sides, feather)
    if y1 <= y0 or x1 <= x0:
        return 0, 0.0
    d = np.abs(
        out[vy0 + y0 : vy0 + y1, vx0 + x0 : vx0 + x1].astype(np.int16)
        - ref[y0:y1, x0:x1].astype(np.int16)
    )
    return int(d.max()), float(d.mean())


def fill_leakage(
    out: np.ndarray, vx0: int, vy0: int, vx1: int, vy1: int, fill: str | None
) -> float | None:
    """Fraction of generated pixels still (nearly) the fill colour; None for non-colour fills."""
    if fill not in COLOUR_FILLS:
        return None
    mask = np.ones(out.shape[:2], dtype=bool)
    mask[vy0:vy1, vx0:vx1] = False
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
