"""A labelled set for the quality score, from real photos (scikit-image's bundled ones).

A *true continuation* is a window of a photo whose middle (the reference box) is taken as
the original: what surrounds it is the photo's own surroundings, what a perfect model
would have made. A *defect* is the same canvas with one of the failures users of
inpainting models report, at a realistic strength, in the generated area (a colour shift
of the VAE affects the whole canvas), then the same feathered paste-back as a run (the
reference restored, blended over ``FEATHER`` px on the generated sides).

Used by ``tests/review/test_score.py`` (AUC per defect kind asserted) and
``benchmarks/quality_score.py`` (the figures in RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import skimage.data
from PIL import Image

from pipeline.common.box import Box
from pipeline.review.compose import feathered_paste

FEATHER = 8  # output.feather_px's default
DEFECTS = (
    "cast",  # a colour shift of 10-14 levels in a random hue (the VAE's)
    "step",  # a brightness step of 14-24 levels in the generated area
    "blur",  # a blurry extension (Gaussian, sigma 2.5-4)
    "noise",  # noise of sigma 8-14 levels
    "flat",  # a flat fill: the border's mean colour, or the masked-area grey leaked
    "mirror",  # the reference mirrored across the seam (ghosts)
    "stretch",  # the border pixels stretched outwards
    "structure",  # the photo's own surroundings, misplaced: edges broken at the seam
    "repeat",  # the reference repeated beside itself
)


def _photos() -> dict[str, np.ndarray]:
    """Colour and grey photos, each at most 640 px on its longer side (RGB uint8)."""
    out = {}
    for name in (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
        "retina",
        "camera",
        "brick",
        "grass",
        "gravel",
        "coins",
    ):
        img = getattr(skimage.data, name)()
        img = np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]
        h, w = img.shape[:2]
        k = 640 / max(h, w)
        if k < 1:
            img = np.asarray(
                Image.fromarray(img).resize((round(w * k), round(h * k)), Image.LANCZOS)
            )
        out[name] = np.ascontiguousarray(img)
    left, _, _ = skimage.data.stereo_motorcycle()
    out["motorcycle"] = np.asarray(Image.fromarray(left).resize((494, 333), Image.LANCZOS))
    return out


@dataclass
class Case:
    name: str  # photo/window/layout
    kind: str  # "true" or a defect of DEFECTS
    image: np.ndarray  # the output, H x W x 3 uint8
    box: Box  # the original area (visible box)


LAYOUTS = {  # the reference box as fractions of the canvas: x0, y0, x1, y1
    "sides": (0.25, 0.0, 0.75, 1.0),
    "topbottom": (0.0, 0.25, 1.0, 0.75),
    "centre": (0.2, 0.2, 0.8, 0.8),
    "left": (0.35, 0.0, 1.0, 1.0),
    "banner": (0.3, 0.0, 0.7, 1.0),
}


def windows(seed: int = 0, n: int = 60, size: tuple[int, int] = (256, 224)):
    """``n`` (name, window, box, full photo, window origin): windows of the photos, each
    with a layout, the photos and layouts taken in turn."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    names = sorted(photos)
    layouts = sorted(LAYOUTS)
    W, H = size
    out = []
    for i in range(n):
        name = names[i % len(names)]
        layout = layouts[(i // len(names) + i) % len(layouts)]
        photo = photos[name]
        ph, pw = photo.shape[:2]
        w, h = (W, H) if i % 2 == 0 else (H, W)
        w, h = min(w, pw - 100), min(h, ph - 100)
        x, y = int(rng.integers(50, pw - w - 50 + 1)), int(rng.integers(50, ph - h - 50 + 1))
        fx0, fy0, fx1, fy1 = LAYOUTS[layout]
        box = Box(round(fx0 * w), round(fy0 * h), round(fx1 * w), round(fy1 * h))
        window = photo[y : y + h, x : x + w].copy()
        out.append((f"{name}/{i}/{layout}", window, box, photo, (x, y)))
    return out


def _paste(canvas: np.ndarray, window: np.ndarray, box: Box) -> np.ndarray:
    """The run's paste-back: the reference restored, feathered on the generated sides."""
    h, w = window.shape[:2]
    ref = window[box.region]
    return feathered_paste(
        np.clip(canvas, 0, 255).astype(np.uint8), ref, box, box.sides(w, h), FEATHER
    )


def _generated(window: np.ndarray, box: Box) -> np.ndarray:
    mask = np.ones(window.shape[:2], bool)
    mask[box.region] = False
    return mask


def defect(kind: str, window: np.ndarray, box: Box, photo, origin, rng) -> np.ndarray:
    """The window with one defect in its generated area, pasted back as a run does."""
    import cv2

    img = window.astype(np.float32)
    gen = _generated(window, box)
    h, w = window.shape[:2]
    ref = window[box.region]
    if kind == "cast":
        hue = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(hue), np.cos(hue - 2.094), np.cos(hue + 2.094)])
        img = img + rng.uniform(10, 14) * direction / np.abs(direction).max()
    elif kind == "step":
        img[gen] += rng.choice([-1, 1]) * rng.uniform(14, 24)
    elif kind == "blur":
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(2.5, 4.0))
    elif kind == "noise":
        img[gen] += rng.normal(0, rng.uniform(8, 14), (int(gen.sum()), 3))
    elif kind == "flat":
        if rng.random() < 0.5:
            img[gen] = ref.reshape(-1, 3).mean(axis=0)
        else:
            img[gen] = 128.0  # the masked area's zero (mid-grey) left in place
    elif kind == "mirror":
        pad = ((box.y0, h - box.y1), (box.x0, w - box.x1), (0, 0))
        img = np.pad(ref, pad, mode="symmetric").astype(np.float32)
    elif kind == "stretch":
        pad = ((box.y0, h - box.y1), (box.x0, w - box.x1), (0, 0))
        img = np.pad(ref, pad, mode="edge").astype(np.float32)
    elif kind == "structure":
        # the photo's own surroundings, displaced by 16-40 px along the seams
        x, y = origin
        ph, pw = photo.shape[:2]
        along_y, along_x = box.height == h, box.width == w  # seams left/right; top/bottom
        for _ in range(50):
            dx, dy = (int(v) for v in rng.choice([-1, 1], 2) * rng.integers(16, 41, 2))
            dx, dy = (0 if along_y else dx), (0 if along_x else dy)
            if 0 <= x + dx <= pw - w and 0 <= y + dy <= ph - h and (dx or dy):
                break
        img = photo[y + dy : y + dy + h, x + dx : x + dx + w].astype(np.float32)
    elif kind == "repeat":
        pad = ((box.y0, h - box.y1), (box.x0, w - box.x1), (0, 0))
        img = np.pad(ref, pad, mode="wrap").astype(np.float32)
    else:
        raise ValueError(kind)
    return _paste(img, window, box)


def labelled_set(seed: int = 0, n: int = 60) -> list[Case]:
    """``n`` true continuations and ``n`` of each defect kind (one per window)."""
    rng = np.random.default_rng(seed + 1)
    cases = []
    for name, window, box, photo, origin in windows(seed, n):
        cases.append(Case(name, "true", _paste(window, window, box), box))
        for kind in DEFECTS:
            cases.append(Case(name, kind, defect(kind, window, box, photo, origin, rng), box))
    return cases


def auc(negatives, positives) -> float:
    """P(a defect scores above a true continuation), ties counted half."""
    neg = np.asarray(negatives, float)
    pos = np.asarray(positives, float)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))
