"""The score's whole-area checks: every generated pixel judged against what the photo
itself shows, not only the bands next to the seam (``score`` holds those).

Looked at no larger than ``WHOLE_PX`` on the longer side (these defects are large; the
cost stays a fraction of a decode). Each check returns its value (larger = worse, 0 where
nothing of it shows) and the region, in the image's pixels, where it was worst:

- ``foreign``: generated pixels, in a block, of a colour the original does not have nor
  any near it (a blob of a colour the photo does not have, a block of saturated colour
  where a patch method found no source);
- ``blank``: generated areas with no variation at all (a blank patch, bars, a leaked
  fill) beyond the original's own;
- ``frame``: straight lines or bars parallel to a canvas edge, inside a generated side,
  stronger than any the original has (frames, letterbox bars);
- ``detail``: fine detail lost far from the seam against the continuation next to it
  (an extension that smears out with distance).
"""

from __future__ import annotations

import numpy as np

from ..common.box import Box
from .pixels import Region, enlarge, grey_of, rect, shrink, sides

WHOLE_PX = 256  # the longer side the whole-area checks look at
NEAR = 8  # px (at WHOLE_PX): the continuation next to the seam, against which far detail is judged
BIN = 6  # CIELAB units per colour bin
VIVID = 12.0  # CIELAB chroma beyond the original's most saturated colours: foreign too
REACH = 2  # bins: a colour within this many bins (per axis) of one the photo has is its own
MIN_SHARE = 0.002  # share of the explaining pixels a bin needs (stray pixels explain nothing)


def _bins(lab: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Each pixel's colour bin as one integer, from OpenCV's 8-bit CIELAB (L * 255 / 100,
    a* + 128, b* + 128: a fixed-point table, the same integers on every CPU, so a pixel
    never changes bin with another CPU's float rounding)."""
    lab = lab.astype(np.int32)
    nl, nab = 100 // BIN + 1, 256 // BIN + 1
    L = lab[..., 0] * 100 // (255 * BIN)
    return (L * nab + lab[..., 1] // BIN) * nab + lab[..., 2] // BIN, (nl, nab)


def _explained(bins: np.ndarray, shape: tuple[int, int], weights: np.ndarray) -> np.ndarray:
    """The bins within ``REACH`` bins (in each axis) of a bin that holds at least ``MIN_SHARE``
    of the explaining pixels: a boolean cube, flattened as ``_bins`` numbers them."""
    nl, nab = shape
    counts = np.bincount(bins[weights], minlength=nl * nab * nab).reshape(nl, nab, nab)
    held = counts >= max(2.0, MIN_SHARE * max(1, int(weights.sum())))
    r = REACH
    padded = np.pad(held, r)
    near = np.zeros_like(held)
    for dl in range(2 * r + 1):
        for da in range(2 * r + 1):
            for db in range(2 * r + 1):
                near |= padded[dl : dl + nl, da : da + nab, db : db + nab]
    return near.reshape(-1)


def _largest(mask: np.ndarray) -> tuple[int, Region | None]:
    """The largest 8-connected component of ``mask``: (pixels, bounding box)."""
    import cv2

    if not mask.any():
        return 0, None
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[i])
    return area, (x, y, x + w, y + h)


def _masks(H: int, W: int, box: Box, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """(generated, original past the blend band)."""
    gen = np.ones((H, W), bool)
    gen[box.region] = False
    inner = np.zeros((H, W), bool)
    inner[box.y0 + margin : box.y1 - margin, box.x0 + margin : box.x1 - margin] = True
    return gen, inner


def _foreign(lab, gen, inner) -> tuple[float, Region | None]:
    """Share of the generated area in the largest block of colours the original does not
    have, nor any colour near one it has (the original alone explains: a patch method
    that fills a block with a foreign colour fills the seam's side of it too)."""
    import cv2

    bins, shape = _bins(lab)
    explained = _explained(bins, shape, inner)
    a, b = lab[..., 1].astype(np.int32) - 128, lab[..., 2].astype(np.int32) - 128
    chroma2 = a * a + b * b  # integers: exact
    most = float(np.sqrt(np.percentile(chroma2[inner], 99.5))) if inner.any() else 0.0
    vivid = chroma2 > (most + VIVID) ** 2
    foreign = gen & (~explained[bins] | vivid)
    # a block, not speckle: what survives a 3x3 opening
    foreign = cv2.morphologyEx(foreign.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    area, region = _largest(foreign > 0)
    return area / max(1, int(gen.sum())), region


def _blank(grey, lab, gen, inner) -> tuple[float, Region | None]:
    """Share of the generated area in the largest block with no variation (3x3 range under
    half a level, not clipped) or of the masked area's mid-grey, less the original's own
    share of such pixels."""
    import cv2

    k = np.ones((3, 3), np.uint8)
    flat = (cv2.dilate(grey, k) - cv2.erode(grey, k)) < 0.5
    flat &= (grey >= 3) & (grey <= 252)
    L, a, b = (lab[..., i].astype(np.int32) for i in range(3))
    flat |= (np.abs(L - 137) <= 1) & (a == 128) & (b == 128)  # CIELAB (53.6, 0, 0)
    own = float(flat[inner].mean()) if inner.any() else 0.0
    area, region = _largest(flat & gen)
    return max(0.0, area / max(1, int(gen.sum())) - own), region


def _lines(v: np.ndarray) -> np.ndarray:
    """Per column: |mean over the rows of the horizontal gradient| (levels per 2 px): a
    straight edge or line along the rows adds up, texture cancels."""
    g = v[:, 2:] - v[:, :-2]
    return np.abs(g.mean(axis=0))


def _frame(grey, box: Box, margin: int) -> tuple[float, Region | None]:
    """Straight lines and bars parallel to a canvas edge inside a generated side (the
    side's whole length, corners included), beyond the strongest the original has along
    the same direction over its own length."""
    H, W = grey.shape
    best, region = 0.0, None
    for side, view, c, r0, r1, depth in sides(H, W, box):
        v = view(grey)
        stop = c - margin  # the strip's columns, clear of the blend band
        if stop < 3 or depth < 2 * margin + 4:
            continue
        part = v[:, : stop + 1]
        strip = _lines(part)
        own = _lines(v[r0:r1, c + margin : c + depth - margin])
        value = float(strip.max()) - float(own.max())
        if value > best:
            j = int(np.argmax(strip)) + 1  # the column the centred difference is at
            best, region = value, rect(side, max(0, j - 2), min(c, j + 3), 0, v.shape[0], W, H)
    return best, region


def _detail(grey, box: Box) -> tuple[float, Region | None]:
    """Fine detail (mean |Laplacian|) of the generated area far from the seam against the
    continuation next to it, -ln of the ratio: an extension that smears out with distance."""
    import cv2

    H, W = grey.shape
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))
    best, region = 0.0, None
    for side, view, c, _, _, _ in sides(H, W, box):
        v = view(lap)[1:-1]
        near_w = min(2 * NEAR, c // 3)
        if near_w < 3 or c - near_w < 2 * near_w:
            continue
        near = float(v[:, c - near_w : c].mean())
        far = float(v[:, 1 : c - near_w].mean())
        value = -float(np.log((far + 0.6) / (near + 0.6)))
        if value > best:
            best, region = value, rect(side, 0, c - near_w, 0, v.shape[0] + 2, W, H)
    return max(0.0, best), region


def whole(image: np.ndarray, box: Box, feather: int) -> tuple[dict, dict]:
    """The whole-area columns of an RGB uint8 image whose original area is ``box``, and
    each one's region (image pixels; None where nothing showed)."""
    import cv2

    H, W = image.shape[:2]
    small, sbox, f = shrink(image, box, WHOLE_PX)
    k = 1.0 / f
    h, w = small.shape[:2]
    margin = max(1, round(feather * k)) + 1
    gen, inner = _masks(h, w, sbox, margin)
    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2LAB)  # 8-bit: integers
    grey = grey_of(small)
    cols, regions = {}, {}
    cols["foreign"], regions["foreign"] = _foreign(lab, gen, inner)
    cols["blank"], regions["blank"] = _blank(grey, lab, gen, inner)
    cols["frame"], regions["frame"] = _frame(grey, sbox, margin)
    cols["detail"], regions["detail"] = _detail(grey, sbox)

    return cols, {d: enlarge(r, f, W, H) for d, r in regions.items()}
