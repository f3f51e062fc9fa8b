"""``solid``: plain padding — a constant colour, or the reference's edges extended
and blurred. No model; the baseline for pipeline benchmarks."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from . import BACKENDS


def nearest_edge_fill(canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each unknown pixel takes the nearest pixel of the known box (edge replicate)."""
    rows = np.flatnonzero(~mask.all(axis=1))
    cols = np.flatnonzero(~mask.all(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1], cols[0], cols[-1]
    H, W = mask.shape
    yy = np.clip(np.arange(H), y0, y1)
    xx = np.clip(np.arange(W), x0, x1)
    return canvas[yy[:, None], xx[None, :]]


class SolidBackend:
    spec = BACKENDS["solid"]

    @classmethod
    def from_config(cls, model_cfg, context) -> SolidBackend:
        return cls(model_cfg)

    def __init__(self, model_cfg):
        self.mode = model_cfg.solid_mode
        self.color = tuple(model_cfg.solid_color)
        self.blur = model_cfg.solid_blur
        # what the unknown area held: recorded per row as fill_color
        self.fill_label = (
            "#{:02x}{:02x}{:02x}".format(*self.color) if self.mode == "color" else "edge"
        )

    def outpaint(self, jobs):
        out = []
        for job in jobs:
            canvas, mask = job.canvas()
            job.fill_color = self.fill_label
            if self.mode == "color":
                img = canvas.copy()
                img[mask] = self.color
            else:
                img = nearest_edge_fill(canvas, mask)
                if self.blur > 0:
                    blurred = np.asarray(
                        Image.fromarray(img).filter(ImageFilter.GaussianBlur(self.blur))
                    )
                    img = np.where(mask[:, :, None], blurred, img)
            out.append(img)
        return out
