"""``classical``: CPU outpainting without weights, for plain and studio backgrounds.

Multi-scale smooth extension (push-pull over a Gaussian pyramid, i.e. normalised
convolution at every scale): the unknown area is filled from ever coarser averages
of the known pixels, so it continues smoothly without streaks. Where the
reference's border is a studio backdrop (well explained by a plane: light
gradients, fall-off), that planar trend is extrapolated and push-pull fills only
the residual, so gradients keep going instead of flattening out; on busy borders
the trend is faded out (it would extrapolate noise). Then grain matched to the
noise of the reference's border is added (seeded), so the fill does not look
flatter than the photo it extends. The first few generated pixels lean on the nearest
reference pixel (weight decaying over ~3 px), so there is no step at the seam.

Texture: the smooth extension carries structure and colour; the photo's own high
frequencies are added on top (``synthesize_texture``): next to the reference its
high-pass mirrored across the edge, so texture continues across the seam without a
break; farther out, patches of the high-pass of the reference's border band, placed
at random (seeded) and overlap-added with power-preserving windows. A plain studio
backdrop has almost no high-pass in its border band, so it stays clean.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import BACKENDS
from .solid import nearest_edge_fill


def push_pull(img: np.ndarray, known: np.ndarray, min_size: int = 2) -> np.ndarray:
    """Fill ``~known`` pixels of float32 ``img`` (H x W x C) by push-pull."""
    w = known.astype(np.float32)
    levels_c, levels_w = [img * w[:, :, None]], [w]
    while min(levels_w[-1].shape) > min_size:
        c = cv2.pyrDown(levels_c[-1])
        ww = cv2.pyrDown(levels_w[-1])
        levels_c.append(c.reshape(c.shape[0], c.shape[1], -1))
        levels_w.append(ww)
    # coarsest estimate: weighted mean (the pyramid may not cover every pixel)
    cw = levels_w[-1][:, :, None]
    total = levels_c[-1].reshape(-1, img.shape[2]).sum(0) / max(float(cw.sum()), 1e-8)
    est = np.where(cw > 1e-6, levels_c[-1] / np.maximum(cw, 1e-6), total)
    for lvl in range(len(levels_c) - 2, -1, -1):
        c, ww = levels_c[lvl], levels_w[lvl]
        up = cv2.pyrUp(est, dstsize=(c.shape[1], c.shape[0])).reshape(c.shape)
        local = c / np.maximum(ww, 1e-6)[:, :, None]
        # trust the level's own average where it saw enough known pixels
        alpha = (
            np.clip(ww * 2.0, 0.0, 1.0)[:, :, None]
            if lvl > 0
            else known[:, :, None].astype(np.float32)
        )
        est = alpha * local + (1.0 - alpha) * up
    return est


def border_noise_sigma(ref: np.ndarray, band: int = 8) -> float:
    """Per-pixel noise level of the reference's outer band (median absolute Laplacian)."""
    g = ref.astype(np.float32).mean(axis=2)
    h, w = g.shape
    b = max(1, min(band, h // 4, w // 4))
    lap = np.abs(cv2.Laplacian(g, cv2.CV_32F, ksize=1))
    ring = np.concatenate(
        [lap[:b].ravel(), lap[-b:].ravel(), lap[:, :b].ravel(), lap[:, -b:].ravel()]
    )
    # Laplacian of white noise with sigma s has std ~ sqrt(20) s; median|N(0,1)| ~ 0.6745
    return float(np.median(ring) / 0.6745 / np.sqrt(20.0))


def planar_trend(canvas: np.ndarray, known: np.ndarray, band: int = 12) -> tuple[np.ndarray, float]:
    """Least-squares plane per channel over the reference's outer band.

    Returns (the plane over the whole canvas, float32 H x W x 3; the band's residual
    std, i.e. how far from a plain backdrop the border is).
    """
    ys, xs = np.nonzero(known)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    ring = np.zeros_like(known)
    ring[y0:y1, x0:x1] = True
    b = max(1, min(band, (y1 - y0) // 3, (x1 - x0) // 3))
    ring[y0 + b : y1 - b, x0 + b : x1 - b] = False
    ring &= known
    ry, rx = np.nonzero(ring)
    A = np.stack([np.ones(len(rx)), rx, ry], 1)
    vals = canvas[ry, rx].astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, vals, rcond=None)  # 3 x 3: one plane per channel
    resid = float(np.std(vals - A @ coef))
    H, W = known.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    plane = coef[0][None, None, :] + xx[:, :, None] * coef[1] + yy[:, :, None] * coef[2]
    return plane.astype(np.float32), resid


def smooth_extend(canvas: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Push-pull, with the border's planar trend extrapolated where it is a backdrop."""
    img = canvas.astype(np.float32)
    plane, resid = planar_trend(canvas, known)
    # full trend below 4 grey levels of residual, none above 12 (photos measure 18+)
    w = float(np.clip((12.0 - resid) / 8.0, 0.0, 1.0))
    if w == 0.0:
        return push_pull(img, known)
    trend = np.clip(plane + push_pull(img - plane, known), 0, 255)
    return trend if w == 1.0 else w * trend + (1.0 - w) * push_pull(img, known)


def boundary_blend(canvas: np.ndarray, mask: np.ndarray, tau: float = 3.0) -> np.ndarray:
    """Weight (H x W) of the nearest reference pixel for each generated pixel: 1 at the
    reference, decaying as exp(-d / tau) with the distance d from it, so the first generated
    pixels lean on the reference's boundary values (a smaller step at the seam) without
    copying them."""
    rows = np.flatnonzero(~mask.all(axis=1))
    cols = np.flatnonzero(~mask.all(axis=0))
    H, W = mask.shape
    dy = np.maximum(np.maximum(rows[0] - np.arange(H), np.arange(H) - rows[-1]), 0).astype(
        np.float32
    )
    dx = np.maximum(np.maximum(cols[0] - np.arange(W), np.arange(W) - cols[-1]), 0).astype(
        np.float32
    )
    d = np.hypot(dy[:, None], dx[None, :])
    return np.where(mask, np.exp(-d / tau), 1.0).astype(np.float32)


def highpass(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return img - cv2.GaussianBlur(img, (0, 0), sigma)


def _tile_patches(hp: np.ndarray, ring: np.ndarray, H: int, W: int, patch: int, rng) -> np.ndarray:
    """H x W x 3 of random ``patch``-sized windows of ``hp`` whose top-left is in ``ring``,
    overlap-added at half-patch steps with sqrt-Hann windows (their squares sum to 1:
    uncorrelated patches keep the source's variance)."""
    step = patch // 2
    n = np.arange(patch)
    win1 = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * (n + 0.5) / patch)).astype(np.float32)
    win = (win1[:, None] * win1[None, :])[:, :, None]
    oy, ox = np.nonzero(ring)
    pad = patch
    out = np.zeros((H + 2 * pad, W + 2 * pad, hp.shape[2]), np.float32)
    for ty in range(0, H + pad, step):
        for tx in range(0, W + pad, step):
            k = rng.integers(len(oy))
            out[ty : ty + patch, tx : tx + patch] += (
                hp[oy[k] : oy[k] + patch, ox[k] : ox[k] + patch] * win
            )
    return out[pad // 2 : pad // 2 + H, pad // 2 : pad // 2 + W]


# Far from the reference the border band's patches can be busier than the photo continues
# (edges meet the frame): FAR_GAIN scales their amplitude there, chosen on the
# crop-and-restore set (benchmarks/classical_quality.py; figures in benchmarks/RESULTS.md).
# Next to the reference the mirrored texture keeps full strength, so the seam stays natural.
FAR_GAIN = 1.0
CALM_PERCENTILE = 50


def synthesize_texture(
    ref: np.ndarray,
    H: int,
    W: int,
    x0: int,
    y0: int,
    seed: int,
    near: float = 12.0,
    patch: int = 32,
) -> np.ndarray:
    """High-frequency texture for an H x W canvas with ``ref`` at (x0, y0) (float32, zero
    mean): mirrored from the reference next to it, random border-band patches far from it."""
    h, w = ref.shape[:2]
    hp = highpass(ref.astype(np.float32))
    mirrored = np.pad(hp, ((y0, H - y0 - h), (x0, W - x0 - w), (0, 0)), mode="symmetric")
    p = min(patch, h, w)
    p -= p % 2
    if p < 4:
        return mirrored
    # patch origins whose patch lies in the reference and overlaps its outer band
    band = max(p, min(h, w) // 4)
    ring = np.zeros((h - p + 1, w - p + 1), bool)
    ring[: max(1, band - p + 1)] = ring[-max(1, band - p + 1) :] = True
    ring[:, : max(1, band - p + 1)] = ring[:, -max(1, band - p + 1) :] = True
    # only the calmer half of the band's patches: grain and surface texture, not the edge
    # fragments of objects cut by the frame (which read as scratches when scattered)
    energy = cv2.boxFilter(
        (hp**2).sum(axis=2),
        -1,
        (p, p),
        anchor=(0, 0),
        normalize=True,
        borderType=cv2.BORDER_CONSTANT,
    )[: h - p + 1, : w - p + 1]
    calm = ring & (energy <= np.percentile(energy[ring], CALM_PERCENTILE))
    far = FAR_GAIN * _tile_patches(
        hp, calm if calm.any() else ring, H, W, p, np.random.default_rng(seed)
    )
    # distance from the reference: mirrored texture near it, patches beyond
    dy = np.maximum(np.maximum(y0 - np.arange(H), np.arange(H) - (y0 + h - 1)), 0).astype(
        np.float32
    )
    dx = np.maximum(np.maximum(x0 - np.arange(W), np.arange(W) - (x0 + w - 1)), 0).astype(
        np.float32
    )
    wm = np.exp(-np.hypot(dy[:, None], dx[None, :]) / near)[:, :, None]
    return (wm * mirrored + (1 - wm) * far) / np.sqrt(
        wm**2 + (1 - wm) ** 2
    )  # mixing keeps the variance


class ClassicalBackend:
    spec = BACKENDS["classical"]

    @classmethod
    def from_config(cls, model_cfg, context) -> ClassicalBackend:
        return cls(model_cfg)

    fill_label = "none"  # no fill: the unknown area is computed, not painted

    def __init__(self, model_cfg):
        self.grain = model_cfg.classical_grain

    def outpaint(self, jobs):
        out = []
        for job in jobs:
            canvas, mask = job.canvas()
            seed = job.seed
            job.fill_color = self.fill_label
            known = ~mask
            filled = smooth_extend(canvas, known)
            w = boundary_blend(canvas, mask)[:, :, None]
            filled = w * nearest_edge_fill(canvas, mask).astype(np.float32) + (1.0 - w) * filled
            if self.grain > 0:  # the photo's own texture over the smooth extension
                H, W = mask.shape
                tex = synthesize_texture(job.ref, H, W, job.x0, job.y0, seed)
                filled = filled + self.grain * tex * mask[:, :, None]
            img = np.clip(filled + 0.5, 0, 255).astype(np.uint8)
            img[known] = canvas[known]
            out.append(img)
        return out
