"""The quality score: how far an output is from a natural continuation of its original
area, from the output and the original area's box alone (no model weights, no source).

Every generated side of the box is looked at through the same window: the image is
flipped or transposed so that side is a left edge, then bands on both sides of the seam
are compared with each other and with a band deeper inside the original, which says how
much this photo changes over the same distance by itself. Each defect users of inpainting
models report has its own column, larger = worse, 0 where nothing of it shows:

- ``seam``: a brightness step across the seam (CIELAB L), beyond the photo's own trend;
- ``color``: a colour cast or shift (CIELAB a*, b*), beyond the photo's own trend;
- ``blur``: high frequencies lost outside (a blurry or over-smoothed extension);
- ``noise``: high frequencies gained outside;
- ``flat``: generated pixels that are exactly flat where the original has texture, or the
  masked area's mid-grey left in place (a leaked fill);
- ``mirror``: the original mirrored across the seam (ghosts);
- ``stretch``: the border stretched outwards (streaks across the seam);
- ``structure``: edges that cross the seam do not continue (the surroundings misplaced);
- ``repeat``: the original (the product) repeated anywhere in the generated area, whole
  or a part of it, also smaller.

Then the whole-area checks (``whole.py``): ``foreign`` colours, ``blank`` areas, a
``frame`` or bars along a canvas edge, ``detail`` lost far from the seam. Each column also
says where it was worst (``regions``): the region the review page outlines.

Along a seam the comparisons are made per segment and combined by their median, so a
defect that holds along the whole seam shows, and a photo whose content changes along it
does not. Images are looked at no larger than ``SCALE_PX`` on their longer side, shrunk
by a whole factor (``pixels.shrink``: OpenCV's fast area average).

``quality_distance`` is the largest column over its threshold (``quality.thresholds``):
above 1, the row fails the gate (``quality_pass`` false).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common.box import Box
from ..common.precision import stored
from .pixels import Region, enlarge, grey_of, rect, shrink, sides
from .whole import whole

SEAM_DEFECTS = ("seam", "color", "blur", "noise", "flat", "mirror", "stretch", "structure")
WHOLE_DEFECTS = ("foreign", "blank", "frame", "detail")  # whole.py
DEFECTS = (*SEAM_DEFECTS, "repeat", *WHOLE_DEFECTS)
SCALE_PX = 768  # the longer side the score looks at, at most: a bounded cost
FEATHER = 8  # the paste-back's blend band inside the original (output.feather_px's default)
BAND = 24  # px of each band compared across a seam
REPEAT_PX = 320  # the longer side the search for a repeated original looks at
REPEAT_SCALES = (0.3, 0.4, 0.5, 0.6)  # the original's copies looked for at these sizes
SEGMENT = 16  # px of seam per comparison: the segments must agree on a step or a cast


@dataclass(frozen=True)
class Seam:
    """One generated side, seen as a left edge: the bands of a transformed crop."""

    lab: np.ndarray  # rows x cols x 3 float32 (L 0..100, a*, b*)
    grey: np.ndarray  # rows x cols float32, 0..255
    c: int  # the seam: column c is the original's first
    deep: int  # columns of original available from the seam inwards


def _seams(image: np.ndarray, box: Box, feather: int) -> list[tuple[Seam, Region]]:
    """Each generated side's bands, with the region (image pixels) they judge: the
    generated band outside the seam along the original's side."""
    import cv2

    H, W = image.shape[:2]
    out = []
    for side, view_of, c, r0, r1, depth in sides(H, W, box):
        view = view_of(image)
        outside = min(c, 2 * BAND)
        inside = min(depth, feather + 3 * BAND)
        if r1 - r0 < 16 or outside < 6 or inside < feather + 8:
            continue
        crop = np.ascontiguousarray(view[r0:r1, c - outside : c + inside])
        lab = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        grey = grey_of(crop)
        out.append((Seam(lab, grey, outside, inside), rect(side, c - outside, c, r0, r1, W, H)))
    return out


def _segment_medians(a: np.ndarray, reduce=np.median) -> np.ndarray:
    """Per segment of ``SEGMENT`` rows: the median (or ``reduce``) of each channel
    (segments x channels), in one call per segment length rather than one per segment."""
    rows, ch = a.shape[0], a.shape[-1]
    n = max(1, rows // SEGMENT)
    flat = a.reshape(rows, -1, ch)
    q, extra = divmod(rows, n)  # as np.array_split: the first ``extra`` segments a row longer
    out = []
    for start, size, count in ((0, q + 1, extra), (extra * (q + 1), q, n - extra)):
        if count:
            block = flat[start : start + size * count].reshape(count, -1, ch)
            out.append(reduce(block, axis=1))
    return np.concatenate(out)


def _consistent(d: np.ndarray) -> float:
    """How far segments' differences (segments x channels) agree on one shift: the lower
    quartile of their projections on the median's direction, 0 if they do not agree. A
    step or a cast moves every segment alike; an object at the seam moves a few."""
    m = np.median(d, axis=0)
    norm = float(np.linalg.norm(m))
    if norm < 1e-6:
        return 0.0
    return max(0.0, float(np.percentile(d @ (m / norm), 20)))


def _offsets(s: Seam, feather: int) -> tuple[float, float]:
    """(brightness step, colour shift) across the seam: per segment, the median over its
    rows of the pixels just outside less the pixels just inside (right at the seam, and
    past the blend band, where a shift of the whole canvas shows whole), less the same
    difference at the same distance inside the original (the photo's own trend); then
    how far the segments agree (``_consistent``)."""
    lab = s.lab
    c = s.c
    outside = lab[:, c - 2 : c].mean(axis=1)
    found = [0.0, 0.0]
    for gap in (0, feather):
        if c + 2 * gap + 6 > lab.shape[1]:
            continue
        inside = lab[:, c + gap : c + gap + 2].mean(axis=1)
        deeper = lab[:, c + 2 * gap + 2 : c + 2 * gap + 4].mean(axis=1)
        across = _segment_medians(outside - inside)
        trend = _segment_medians(inside - deeper)
        across = across - np.clip(trend, -np.abs(across), np.abs(across))  # explains, never adds
        found[0] = max(found[0], _consistent(across[:, :1]))
        found[1] = max(found[1], _consistent(across[:, 1:]))
    return found[0], found[1]


def _energy(grey: np.ndarray) -> float:
    """Mean |Laplacian| (4-neighbour): the finest detail and noise."""
    import cv2

    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))[1:-1, 1:-1].mean())


def _noise_sigma(g: np.ndarray) -> np.ndarray:
    """Per segment: the noise's sigma by Immerkaer's estimator, made robust to edges with a
    median (the Laplacian of two differences cancels smooth shading and most detail).
    Filtered in integer thousandths of a level (``grey_of``'s own integers, below 2**24
    whatever the sum): exact, so the cancellation cannot magnify another CPU's rounding."""
    import cv2

    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    milli = np.rint(g.astype(np.float64) * 1000).astype(np.float32)
    r = np.abs(cv2.filter2D(milli, cv2.CV_32F, kernel))[1:-1, 1:-1] / 1000
    return _segment_medians(r[..., None])[:, 0] * 1.4826 / 6.0


def _segment_energy(g: np.ndarray) -> np.ndarray:
    import cv2

    lap = np.abs(cv2.Laplacian(g, cv2.CV_32F, ksize=1))[1:-1, 1:-1]
    return _segment_medians(lap[..., None], np.mean)[:, 0]


def _texture(s: Seam, feather: int) -> tuple[float, float, float]:
    """(blur, noise, flat): per segment, log ratios outside over inside of fine detail (at
    two scales: blur) and of the noise's sigma (noise), their medians; and the share of
    exactly flat pixels outside beyond the original's own, or of the masked area's grey."""
    import cv2

    b = min(2 * BAND, s.c)
    out_g = s.grey[:, s.c - b : s.c - 2]
    in_g = s.grey[:, s.c + feather : s.c + feather + b]
    if out_g.shape[1] < 4 or in_g.shape[1] < 4:
        return 0.0, 0.0, 0.0
    eps = 0.6
    fine = np.log((_segment_energy(out_g) + eps) / (_segment_energy(in_g) + eps))
    half = [
        cv2.resize(
            x, (max(3, x.shape[1] // 2), max(3, x.shape[0] // 2)), interpolation=cv2.INTER_AREA
        )
        for x in (out_g, in_g)
    ]
    coarse = np.log((_energy(half[0]) + eps) / (_energy(half[1]) + eps))
    blur = max(0.0, -max(float(np.median(fine)), coarse))
    noise = max(
        0.0, float(np.median(np.log((_noise_sigma(out_g) + 1.0) / (_noise_sigma(in_g) + 1.0))))
    )

    def flat_share(g):
        # exactly flat 3x3 neighbourhoods: no camera makes them outside blown or black areas
        lo = cv2.erode(g, np.ones((3, 3), np.uint8))
        hi = cv2.dilate(g, np.ones((3, 3), np.uint8))
        flat = (hi - lo) < 0.5
        clipped = (g < 3) | (g > 252)
        return float((flat & ~clipped).mean())

    masked_grey = np.abs(s.lab[:, s.c - b : s.c - 2] - np.array([53.6, 0.0, 0.0])).max(axis=2) < 0.6
    flat = max(0.0, flat_share(out_g) - flat_share(in_g)) + float(masked_grey.mean())
    return blur, noise, flat


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 1e-6 else 0.0


def _shifted_ncc(a: np.ndarray, b: np.ndarray, most: int, least: int, overlap: int) -> list:
    """``_ncc`` of ``a`` against ``b`` displaced by d (least <= |d| <= most, at least
    ``overlap`` samples in common), for every d at once: window sums from cumulative sums,
    the cross terms from one correlation."""
    n = len(a)
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    ca, cb = np.concatenate([[0], np.cumsum(a)]), np.concatenate([[0], np.cumsum(b)])
    ca2, cb2 = np.concatenate([[0], np.cumsum(a * a)]), np.concatenate([[0], np.cumsum(b * b)])
    cross = np.correlate(a, b, "full")  # cross[n - 1 + d] = sum_i a[i + d] b[i]
    out = []
    for d in range(-most, most + 1):
        m = n - abs(d)
        if abs(d) < least or m < overlap:
            continue
        a0, b0 = max(0, d), max(0, -d)  # a[a0:a0+m] against b[b0:b0+m]
        sa, sb = ca[a0 + m] - ca[a0], cb[b0 + m] - cb[b0]
        va = ca2[a0 + m] - ca2[a0] - sa * sa / m
        vb = cb2[b0 + m] - cb2[b0] - sb * sb / m
        cov = cross[n - 1 + d] - sa * sb / m
        den = np.sqrt(max(va, 0.0) * max(vb, 0.0))
        out.append(float(cov / den) if den > 1e-6 else 0.0)
    return out


def _highpass(g: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return g - cv2.GaussianBlur(g, (0, 0), sigma)


def _mirror(s: Seam) -> float:
    """Correlation of the outside band with the inside band mirrored at the seam, beyond
    its correlation with the inside band as it is (a plain translation)."""
    b = min(2 * BAND, s.c, s.deep)
    if b < 6:
        return 0.0
    hp = _highpass(s.grey, 2.0)
    out_b = hp[:, s.c - b : s.c - 2]
    in_b = hp[:, s.c + 2 : s.c + b]
    mirrored = _ncc(out_b[:, ::-1], in_b)
    shifted = _ncc(out_b, in_b)
    return max(0.0, mirrored - max(0.0, shifted))


def _stretch(s: Seam, feather: int) -> float:
    """Detail across the seam's direction over detail along it, outside against inside:
    a stretched border has detail along the seam and none across."""
    b = min(2 * BAND, s.c)
    g = s.grey
    out_g = g[:, s.c - b : s.c - 1]
    in_g = g[:, s.c + feather : s.c + feather + b]
    if out_g.shape[1] < 3 or in_g.shape[1] < 3:
        return 0.0

    def ratio(x):
        across = np.abs(np.diff(x, axis=1)).mean()
        along = np.abs(np.diff(x, axis=0)).mean()
        return (across + 0.3) / (along + 0.3)

    return max(0.0, float(np.log(ratio(in_g) / ratio(out_g))))


def _structure(s: Seam, feather: int) -> float:
    """Edges crossing the seam: the profile along the seam just outside against just
    inside, past the blend (band-passed: shapes of 3 to 24 px, which carry over that
    distance). Natural: they match about as well as the original matches itself over the
    same distance. Broken: they match worse, or better displaced along the seam (the
    surroundings misplaced)."""
    import cv2

    w = 2
    if s.c < w or s.deep < 2 * feather + 3 * w:
        return 0.0

    def profile(c0):
        p = cv2.GaussianBlur(s.grey[:, c0 : c0 + w].mean(axis=1)[:, None], (0, 0), 3.0)
        return (p - cv2.GaussianBlur(p, (0, 0), 24.0))[:, 0]

    out_p = profile(s.c - w)
    in_p = profile(s.c + feather)
    in2_p = profile(s.c + 2 * feather + w)
    if np.std(in_p) < 0.5 and np.std(out_p) < 0.5:
        return 0.0  # nothing crosses the seam to continue
    here = _ncc(out_p, in_p)
    displaced = max(_shifted_ncc(out_p, in_p, 40, 6, 32), default=here)
    return max(0.0, max(_ncc(in_p, in2_p), 0.0) - here) + max(0.0, displaced - here)


def _repeat(image: np.ndarray, box: Box) -> tuple[float, Region | None]:
    """The best match of a piece of the original inside the generated area (normalised
    cross-correlation, pieces wholly outside the original), beyond the photo's own
    self-similarity: the best match of the same piece elsewhere in the original. The
    pieces: halves of the original (a repeat, a part of it) and the whole original at
    ``REPEAT_SCALES`` (a smaller copy of the subject). Looked for at most ``REPEAT_PX`` on
    the longer side: a repeated product is a large structure, and the search's cost grows
    with the image's area times the piece's. Returns the value and where it matched."""
    import cv2

    H0, W0 = image.shape[:2]
    image, box, f = shrink(image, box, REPEAT_PX)
    H, W = image.shape[:2]
    grey = grey_of(image)
    gen_w = max(box.x0, W - box.x1)
    gen_h = max(box.y0, H - box.y1)
    pieces = []  # (x, y, piece) with (x, y) where it lies in the original
    for vertical in (False, True):  # pieces for the left/right areas, then top/bottom
        if vertical:
            tw, th = min(box.width // 2, W), min(gen_h, box.height // 2)
        else:
            tw, th = min(gen_w, box.width // 2), min(box.height // 2, H)
        if tw < 12 or th < 12:
            continue
        for fx, fy in ((0.5, 0.5), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)):
            x = box.x0 + round(fx * (box.width - tw))
            y = box.y0 + round(fy * (box.height - th))
            pieces.append((x, y, grey[y : y + th, x : x + tw]))
    soft = cv2.GaussianBlur(grey, (0, 0), 1.5)  # scaled copies: a scale off by 10 % still matches
    original = soft[box.region]
    for scale in REPEAT_SCALES:
        tw, th = round(box.width * scale), round(box.height * scale)
        if tw >= 12 and th >= 12 and (tw <= gen_w or th <= gen_h):
            small = cv2.resize(original, (tw, th), interpolation=cv2.INTER_AREA)
            pieces.append((None, None, small))
    best, where = 0.0, None
    for x, y, piece in pieces:
        th, tw = piece.shape
        if piece.std() < 4:
            continue  # a plain piece matches anything plain
        ncc = cv2.matchTemplate(grey if x is not None else soft, piece, cv2.TM_CCOEFF_NORMED)
        ys, xs = np.mgrid[0 : ncc.shape[0], 0 : ncc.shape[1]]
        outside = (xs + tw <= box.x0) | (xs >= box.x1) | (ys + th <= box.y0) | (ys >= box.y1)
        if not outside.any():
            continue
        within = (xs >= box.x0) & (xs + tw <= box.x1) & (ys >= box.y0) & (ys + th <= box.y1)
        if x is not None:
            within &= (np.abs(xs - x) >= tw) | (np.abs(ys - y) >= th)
        there = float(ncc[outside].max())
        own = max(0.3, float(ncc[within].max()) if within.any() else 0.0)
        # relative to the headroom the photo's own self-similarity leaves
        value = (there - own) / (1.02 - own)
        if value > best:
            i = int(np.argmax(np.where(outside, ncc, -2.0)))
            my, mx = divmod(i, ncc.shape[1])
            best = value
            where = enlarge((mx, my, mx + tw, my + th), f, W0, H0)
    return max(0.0, best), where


# how a defect's values on several seams combine: the worst seam, or (structure: its
# evidence is weak on one seam and the misplaced surroundings are everywhere) their mean
MEAN_OVER_SEAMS = {"structure"}


def _combine(defect: str, values: list[float]) -> float:
    if not values:
        return 0.0
    return float(np.mean(values)) if defect in MEAN_OVER_SEAMS else float(max(values))


def score(
    image: np.ndarray, box: Box, feather: int = FEATHER, regions: bool = False
) -> dict[str, float] | tuple[dict[str, float], dict[str, Region | None]] | None:
    """The defect columns of one output (H x W x 3 uint8) whose original area is ``box``;
    None when nothing was generated. ``regions``: also where each column was worst (x0,
    y0, x1, y1 in the output's pixels; None where nothing showed)."""

    H0, W0 = image.shape[:2]
    H, W = H0, W0
    if box.sides(W, H) == (False, False, False, False):
        return None
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] < 3:  # grey (with or without alpha): judged as the grey it displays
        image = np.repeat(image[..., :1], 3, axis=2)
    image, box, f = shrink(image, box, SCALE_PX)
    k = 1.0 / f
    feather = max(1, round(feather * k))
    image = np.ascontiguousarray(image[..., :3])
    found: dict[str, list[tuple[float, Region]]] = {d: [] for d in SEAM_DEFECTS}
    for s, band in _seams(image, box, feather):
        seam, color = _offsets(s, feather)
        blur, noise, flat = _texture(s, feather)
        each = {
            "seam": seam,
            "color": color,
            "blur": blur,
            "noise": noise,
            "flat": flat,
            "mirror": _mirror(s),
            "stretch": _stretch(s, feather),
            "structure": _structure(s, feather),
        }
        for key, value in each.items():
            found[key].append((value, band))
    cols, where = {}, {}
    for d, seen in found.items():
        cols[d] = _combine(d, [v for v, _ in seen])
        worst = max(seen, key=lambda vr: vr[0], default=(0.0, None))
        where[d] = worst[1] if worst[0] > 0 else None
    cols["repeat"], where["repeat"] = _repeat(image, box)
    more, more_where = whole(image, box, feather)
    cols.update(more)
    where.update(more_where)
    if not regions:
        return cols
    return cols, {d: enlarge(where[d], f, W0, H0) for d in DEFECTS}


def distance(cols: dict[str, float], thresholds) -> float:
    """The largest defect column over its threshold: above 1 fails. ``thresholds``: a
    mapping or the config's ``quality.thresholds``."""
    get = thresholds.get if isinstance(thresholds, dict) else thresholds.__getattribute__
    return max(cols[k] / get(k) for k in DEFECTS)


COLUMNS = tuple(f"quality_{k}" for k in DEFECTS)  # the metadata's per-defect columns
# where the defect that failed a row was found: a box in the output's pixels, for the
# review page and report.html to outline (null where the row passes)
REGION_COLUMNS = tuple(f"quality_region_{c}" for c in ("x0", "y0", "x1", "y1"))


def judge(image: np.ndarray, box: Box, thresholds, feather: int = FEATHER) -> dict:
    """The metadata's quality columns of one output: ``quality_<defect>`` each,
    ``quality_distance``, ``quality_pass``, ``quality_defect`` (the worst column's
    defect where the row fails, else None) and ``quality_region_*`` (where that defect
    was found); all None when nothing was generated."""
    found = score(image, box, feather, regions=True)
    if found is None:
        return {
            **dict.fromkeys(COLUMNS),
            "quality_distance": None,
            "quality_pass": None,
            "quality_defect": None,
            **dict.fromkeys(REGION_COLUMNS),
        }
    cols, where = found
    get = thresholds.get if isinstance(thresholds, dict) else thresholds.__getattribute__
    ratios = {k: cols[k] / get(k) for k in DEFECTS}
    worst = max(ratios, key=ratios.get)
    passed = ratios[worst] <= 1.0
    region = None if passed else where[worst]
    return {
        **{f"quality_{k}": stored(f"quality_{k}", v) for k, v in cols.items()},
        "quality_distance": stored("quality_distance", ratios[worst]),
        "quality_pass": passed,
        "quality_defect": None if passed else worst,
        **dict(zip(REGION_COLUMNS, region or (None,) * 4)),
    }
