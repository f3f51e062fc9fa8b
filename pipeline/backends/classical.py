"""``classical``: CPU outpainting without weights, for plain and studio backgrounds.

Multi-scale smooth extension (push-pull over a Gaussian pyramid, i.e. normalised
convolution at every scale): the unknown area is filled from ever coarser averages
of the known pixels, so gradients and vignettes continue smoothly without streaks.
Then grain matched to the noise of the reference's border is added (seeded), so
the fill does not look flatter than the photo it extends.
"""

from __future__ import annotations

import cv2
import numpy as np


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
        alpha = np.clip(ww * 2.0, 0.0, 1.0)[:, :, None] if lvl > 0 else known[:, :, None].astype(np.float32)
        est = alpha * local + (1.0 - alpha) * up
    return est


def border_noise_sigma(ref: np.ndarray, band: int = 8) -> float:
    """Per-pixel noise level of the reference's outer band (median absolute Laplacian)."""
    g = ref.astype(np.float32).mean(axis=2)
    h, w = g.shape
    b = max(1, min(band, h // 4, w // 4))
    lap = np.abs(cv2.Laplacian(g, cv2.CV_32F, ksize=1))
    ring = np.concatenate([lap[:b].ravel(), lap[-b:].ravel(), lap[:, :b].ravel(), lap[:, -b:].ravel()])
    # Laplacian of white noise with sigma s has std ~ sqrt(20) s; median|N(0,1)| ~ 0.6745
    return float(np.median(ring) / 0.6745 / np.sqrt(20.0))


class ClassicalBackend:
    name = "classical"
    needs_actor = False
    version = "1"

    def __init__(self, model_cfg):
        self.grain = model_cfg.classical_grain

    def identity(self) -> dict:
        return {"backend": self.name, "version": self.version, "grain": self.grain}

    def outpaint(self, canvases, masks, seeds, prompts):
        out = []
        for canvas, mask, seed in zip(canvases, masks, seeds):
            known = ~mask
            filled = push_pull(canvas.astype(np.float32), known)
            if self.grain > 0:
                ys, xs = np.nonzero(known)
                ref = canvas[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
                sigma = min(self.grain * border_noise_sigma(ref), 12.0)
                if sigma > 0.05:
                    rng = np.random.default_rng(seed)
                    noise = rng.standard_normal(mask.shape, dtype=np.float32) * sigma
                    filled = filled + (noise * mask)[:, :, None]
            img = np.clip(filled + 0.5, 0, 255).astype(np.uint8)
            img[known] = canvas[known]
            out.append(img)
        return out
