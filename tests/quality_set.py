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
# defects away from the seam (the score's whole-area checks), as users of outpainting
# models report them
WHOLE_DEFECTS = (
    "blob",  # a soft blob of a colour the photo does not have, away from the seam
    "frame",  # a dark or light frame drawn along the canvas edge (PowerPaint#61)
    "bars",  # letterbox bars over part of a generated side (koboldcpp#2101)
    "copy",  # the subject again, smaller, somewhere in the generated area
    "patch",  # a blank patch (flat grey or flat colour) away from the seam
    "smear",  # detail lost far from the seam, the continuation next to it sharp
    "shift",  # the surroundings displaced by 3-8 px: lines break at the seam
)
ALL_DEFECTS = DEFECTS + WHOLE_DEFECTS
# the score's column each family was made for: leave one family out drops it (does the
# rest still catch it?); shift has none of its own (structure's, at a smaller scale)
OWN_COLUMN = {
    "cast": "color",
    "step": "seam",
    "blur": "blur",
    "noise": "noise",
    "flat": "flat",
    "mirror": "mirror",
    "stretch": "stretch",
    "structure": "structure",
    "repeat": "repeat",
    "blob": "foreign",
    "frame": "frame",
    "bars": "blank",
    "copy": "repeat",
    "patch": "blank",
    "smear": "detail",
}

# photos the thresholds are fitted on, and photos held out (judged, never fitted)
FIT_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "grass", "immunohistochemistry", "retina")
HELD_PHOTOS = ("coffee", "coins", "gravel", "hubble_deep_field", "motorcycle", "rocket")


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


def windows(seed: int = 0, n: int = 60, size: tuple[int, int] = (256, 224), photos=None):
    """``n`` (name, window, box, full photo, window origin): windows of the photos (all,
    or those named), each with a layout, the photos and layouts taken in turn."""
    rng = np.random.default_rng(seed)
    every = _photos()
    names = sorted(photos or every)
    photos = every
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
    elif kind in WHOLE_DEFECTS:
        img = _away(kind, img, window, box, photo, origin, rng)
    else:
        raise ValueError(kind)
    return _paste(img, window, box)


def _strip(box: Box, w: int, h: int, rng) -> tuple[str, int, int]:
    """A generated side at random, weighted by its depth: (side, depth, length)."""
    sides = [
        (name, depth, length)
        for name, depth, length in (
            ("left", box.x0, h),
            ("right", w - box.x1, h),
            ("top", box.y0, w),
            ("bottom", h - box.y1, w),
        )
        if depth >= 24
    ]
    p = np.array([d for _, d, _ in sides], float)
    return sides[int(rng.choice(len(sides), p=p / p.sum()))]


def _place(side: str, w: int, h: int, d0: int, d1: int, l0: int, l1: int) -> tuple[slice, slice]:
    """Depths [d0, d1) from the canvas edge of ``side`` and [l0, l1) along it, as slices."""
    if side == "left":
        return slice(l0, l1), slice(d0, d1)
    if side == "right":
        return slice(l0, l1), slice(w - d1, w - d0)
    if side == "top":
        return slice(d0, d1), slice(l0, l1)
    return slice(h - d1, h - d0), slice(l0, l1)


def _foreign_colour(window: np.ndarray, rng) -> np.ndarray:
    """A saturated colour at least 30 CIELAB units from every colour of the window."""
    import cv2

    lab = cv2.cvtColor(window.astype(np.float32) / 255, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    lab = lab[:: max(1, len(lab) // 4000)]
    best, far = None, -1.0
    for _ in range(40):
        c = rng.integers(0, 256, 3).astype(np.float32)
        c[rng.integers(0, 3)] = rng.choice([0, 255])
        cl = cv2.cvtColor(c[None, None] / 255, cv2.COLOR_RGB2LAB)[0, 0]
        d = float(np.sqrt(((lab - cl) ** 2).sum(axis=1)).min())
        if d > far:
            best, far = c, d
        if far >= 30:
            break
    return best


def _away(kind: str, img, window, box: Box, photo, origin, rng) -> np.ndarray:
    """A whole-area defect (``WHOLE_DEFECTS``) in the generated area of ``img``."""
    import cv2

    h, w = window.shape[:2]
    if kind == "frame":
        t, inset = int(rng.integers(2, 7)), int(rng.integers(0, 9))
        level = float(rng.uniform(0, 40) if rng.random() < 0.7 else rng.uniform(215, 255))
        out = img.copy()
        cv2.rectangle(out, (inset, inset), (w - 1 - inset, h - 1 - inset), (level,) * 3, t)
        return out
    if kind == "shift":
        x, y = origin
        ph, pw = photo.shape[:2]
        along_y, along_x = box.height == h, box.width == w
        for _ in range(50):
            dx, dy = (int(v) for v in rng.choice([-1, 1], 2) * rng.integers(3, 9, 2))
            dx, dy = (0 if along_y else dx), (0 if along_x else dy)
            if 0 <= x + dx <= pw - w and 0 <= y + dy <= ph - h and (dx or dy):
                break
        return photo[y + dy : y + dy + h, x + dx : x + dx + w].astype(np.float32)
    if kind == "smear":
        mask = np.ones((h, w), np.float32)
        mask[max(0, box.y0 - 16) : box.y1 + 16, max(0, box.x0 - 16) : box.x1 + 16] = 0
        mask = cv2.GaussianBlur(mask, (0, 0), 3.0)[..., None]
        blurred = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(2.5, 4.0)))
        return img * (1 - mask) + blurred * mask
    side, depth, length = _strip(box, w, h, rng)
    out = img.copy()
    if kind == "bars":
        d = max(4, round(depth * rng.uniform(0.3, 0.7)))
        span = round(length * rng.uniform(0.6, 1.0))
        l0 = int(rng.integers(0, length - span + 1))
        out[_place(side, w, h, 0, d, l0, l0 + span)] = float(rng.uniform(0, 16))
        return out
    if kind == "patch":
        d = max(6, round(depth * rng.uniform(0.4, 0.7)))
        span = max(8, round(length * rng.uniform(0.25, 0.5)))
        d0 = int(rng.integers(0, max(1, depth - 8 - d) + 1))
        l0 = int(rng.integers(0, length - span + 1))
        flat = rng.uniform(90, 170) if rng.random() < 0.5 else window.reshape(-1, 3).mean(0)
        out[_place(side, w, h, d0, d0 + d, l0, l0 + span)] = flat
        return out
    if kind == "blob":
        r = max(5.0, min(depth * rng.uniform(0.25, 0.4), length * 0.3))
        centre_d = rng.uniform(r + 2, max(r + 3, depth - 10 - r))
        centre_l = rng.uniform(r, length - r)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        depth_of = {"left": xs, "right": w - 1 - xs, "top": ys, "bottom": h - 1 - ys}[side]
        along = ys if side in ("left", "right") else xs
        inside = ((depth_of - centre_d) / r) ** 2 + ((along - centre_l) / (r * 1.4)) ** 2 <= 1
        alpha = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 1.5)[..., None]
        texture = img - cv2.GaussianBlur(img, (0, 0), 2.0)
        colour = _foreign_colour(window, rng)
        return img * (1 - alpha) + (colour + 0.7 * texture) * alpha
    if kind == "copy":
        ref = window[box.region]
        rh, rw = ref.shape[:2]
        across = rw if side in ("left", "right") else rh
        scale = min(0.6, (depth - 6) / across) * rng.uniform(0.8, 1.0)
        scale = max(scale, 0.3)
        cw, ch = max(8, round(rw * scale)), max(8, round(rh * scale))
        small = cv2.resize(ref, (cw, ch), interpolation=cv2.INTER_AREA).astype(np.float32)
        cd, cl = (cw, ch) if side in ("left", "right") else (ch, cw)
        d0 = int(rng.integers(0, max(1, depth - 6 - cd) + 1))
        l0 = int(rng.integers(-cl // 4, max(-cl // 4 + 1, length - cl + cl // 4)))
        ys, xs = _place(side, w, h, d0, d0 + cd, 0, cl)  # the copy's own slices, l0 applied below
        if side in ("left", "right"):
            ys = slice(l0, l0 + cl)
        else:
            xs = slice(l0, l0 + cl)
        y0, x0 = ys.start, xs.start
        ty0, tx0 = max(0, -y0), max(0, -x0)  # cropped by the canvas edge: partial
        y1, x1 = min(h, y0 + ch), min(w, x0 + cw)
        out[max(0, y0) : y1, max(0, x0) : x1] = small[
            ty0 : ty0 + y1 - max(0, y0), tx0 : tx0 + x1 - max(0, x0)
        ]
        return out
    raise ValueError(kind)


def labelled_set(seed: int = 0, n: int = 60, photos=None, kinds=ALL_DEFECTS) -> list[Case]:
    """``n`` true continuations and ``n`` of each defect kind (one per window), from all
    photos or those named (``FIT_PHOTOS``, ``HELD_PHOTOS``)."""
    rng = np.random.default_rng(seed + 1)
    cases = []
    for name, window, box, photo, origin in windows(seed, n, photos=photos):
        cases.append(Case(name, "true", _paste(window, window, box), box))
        for kind in kinds:
            cases.append(Case(name, kind, defect(kind, window, box, photo, origin, rng), box))
    return cases


def auc(negatives, positives) -> float:
    """P(a defect scores above a true continuation), ties counted half."""
    neg = np.asarray(negatives, float)
    pos = np.asarray(positives, float)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


# Other algorithms' real outputs on the same windows (nobody crafted these as defects):
# OpenCV's inpainting methods asked to outpaint the generated area. cv2.xphoto needs
# opencv-contrib (a test dependency); without it only Telea and Navier-Stokes run.
TOOLS = ("telea", "ns", "fsr", "shiftmap")


def tool_output(tool: str, window: np.ndarray, box: Box) -> np.ndarray | None:
    """``tool``'s outpainting of the window's generated area, pasted back as a run does;
    None where the tool is not installed."""
    import cv2

    gen = _generated(window, box).astype(np.uint8) * 255
    if tool in ("telea", "ns"):
        flag = cv2.INPAINT_TELEA if tool == "telea" else cv2.INPAINT_NS
        out = cv2.inpaint(window, gen, 5, flag)
    else:
        xphoto = getattr(cv2, "xphoto", None)
        if xphoto is None:
            return None
        known = 255 - gen  # xphoto's mask marks the known pixels
        out = np.zeros_like(window)
        if tool == "fsr":
            xphoto.inpaint(window, known, out, xphoto.INPAINT_FSR_FAST)
        else:
            # shift-map: in CIELAB, as OpenCV's own sample runs it
            lab = cv2.cvtColor(window, cv2.COLOR_RGB2LAB)
            xphoto.inpaint(lab, known, out, xphoto.INPAINT_SHIFTMAP)
            out = cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
    return _paste(out.astype(np.float32), window, box)


def foreign_block(output: np.ndarray, truth: np.ndarray, box: Box) -> float:
    """The labelling rule for other tools' outputs, from the true surroundings (which the
    score never sees): the share of the canvas in the largest 4-connected block of
    generated pixels at least 25 CIELAB units from every colour of the true window. An
    output with a block of 0.5 % of the canvas or more is a foreign-colour-block output."""
    import cv2

    def lab(a):
        return cv2.cvtColor(a.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)

    truth_q = np.unique(np.round(lab(truth).reshape(-1, 3) / 2).astype(np.int16), axis=0)
    out_lab = lab(output)
    gen = _generated(output, box)
    q = np.round(out_lab[gen] / 2).astype(np.int16)
    colours, index = np.unique(q, axis=0, return_inverse=True)
    near = np.empty(len(colours))
    for start in range(0, len(colours), 512):  # distance to the nearest true colour
        d = colours[start : start + 512, None, :].astype(np.float32) - truth_q[None]
        near[start : start + 512] = (d * d).sum(axis=2).min(axis=1)
    far = (near * 4 >= 25.0**2)[index.reshape(-1)]
    mask = np.zeros(gen.shape, np.uint8)
    mask[gen] = far
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0
    return largest / gen.size


def tool_set(
    seed: int = 0, n: int = 60, photos=None, tools=TOOLS, size: tuple[int, int] = (256, 224)
) -> list[tuple[Case, float]]:
    """Each tool's output on ``n`` windows, with its ``foreign_block`` share."""
    out = []
    for name, window, box, _, _ in windows(seed, n, size=size, photos=photos):
        for tool in tools:
            image = tool_output(tool, window, box)
            if image is not None:
                out.append((Case(name, tool, image, box), foreign_block(image, window, box)))
    return out
