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
- ``repeat``: the original (the product) repeated in the generated area.

Along a seam the comparisons are made per segment and combined by their median, so a
defect that holds along the whole seam shows, and a photo whose content changes along it
does not. Images are looked at no larger than ``SCALE_PX`` on their longer side.

``quality_distance`` is the largest column over its threshold (``quality.thresholds``):
above 1, the row fails the gate (``quality_pass`` false).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common.box import Box
from ..common.precision import stored

DEFECTS = ("seam", "color", "blur", "noise", "flat", "mirror", "stretch", "structure", "repeat")
SCALE_PX = 768  # the longer side the score looks at: a fixed scale, a bounded cost
FEATHER = 8  # the paste-back's blend band inside the original (output.feather_px's default)
BAND = 24  # px of each band compared across a seam
REPEAT_PX = 320  # the longer side the search for a repeated original looks at
SEGMENT = 16  # px of seam per comparison: the segments must agree on a step or a cast
# ITU-R 601 luma in thousandths: integer weights, so every product and partial sum of the
# float32 matrix product is an integer below 2**24, exact in whatever order a BLAS kernel
# sums (fractional weights are not: the last bits differed by CPU); then one IEEE division
GREY_MILLI = np.array([299, 587, 114], np.float32)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """The grey (0..255, float32) of uint8 RGB pixels, bit for bit the same everywhere."""
    return (rgb.astype(np.float32) @ GREY_MILLI) / np.float32(1000)


@dataclass(frozen=True)
class Seam:
    """One generated side, seen as a left edge: the bands of a transformed crop."""

    lab: np.ndarray  # rows x cols x 3 float32 (L 0..100, a*, b*)
    grey: np.ndarray  # rows x cols float32, 0..255
    c: int  # the seam: column c is the original's first
    deep: int  # columns of original available from the seam inwards


def _views(image: np.ndarray, box: Box):
    """Each generated side as (image view, seam column, first row, last row, original's
    width inwards): flips and transposes, so every side reads as a left edge."""
    H, W = image.shape[:2]
    t = image.transpose(1, 0, 2)
    if box.x0 > 0:
        yield image, box.x0, box.y0, box.y1, box.width
    if box.x1 < W:
        yield image[:, ::-1], W - box.x1, box.y0, box.y1, box.width
    if box.y0 > 0:
        yield t, box.y0, box.x0, box.x1, box.height
    if box.y1 < H:
        yield t[:, ::-1], H - box.y1, box.x0, box.x1, box.height


def _seams(image: np.ndarray, box: Box, feather: int) -> list[tuple[Seam, np.ndarray]]:
    import cv2

    out = []
    for view, c, r0, r1, depth in _views(image, box):
        outside = min(c, 2 * BAND)
        inside = min(depth, feather + 3 * BAND)
        if r1 - r0 < 16 or outside < 6 or inside < feather + 8:
            continue
        crop = np.ascontiguousarray(view[r0:r1, c - outside : c + inside])
        lab = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        grey = grey_of(crop)
        out.append((Seam(lab, grey, outside, inside), view))
    return out


def _segment_medians(a: np.ndarray) -> np.ndarray:
    """Per segment of ``SEGMENT`` rows: the median of each channel (segments x channels)."""
    rows, ch = a.shape[0], a.shape[-1]
    n = max(1, rows // SEGMENT)
    flat = a.reshape(rows, -1, ch)
    q, extra = divmod(rows, n)  # as np.array_split: the first ``extra`` segments a row longer
    out = []
    for start, size, count in ((0, q + 1, extra), (extra * (q + 1), q, n - extra)):
        if count:
            block = flat[start : start + size * count].reshape(count, -1, ch)
            out.append(np.median(block, axis=1))
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
    parts = np.array_split(r, max(1, r.shape[0] // SEGMENT), axis=0)
    return np.array([np.median(p) for p in parts]) * 1.4826 / 6.0 * np.sqrt(36 / 36)


def _segment_energy(g: np.ndarray) -> np.ndarray:
    import cv2

    lap = np.abs(cv2.Laplacian(g, cv2.CV_32F, ksize=1))[1:-1, 1:-1]
    parts = np.array_split(lap, max(1, lap.shape[0] // SEGMENT), axis=0)
    return np.array([p.mean() for p in parts])


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
    n = len(in_p)
    here = _ncc(out_p, in_p)
    shifts = [d for d in range(-40, 41) if abs(d) >= 6 and n - abs(d) >= 32]
    displaced = max(
        (_ncc(out_p[max(0, d) : n + min(0, d)], in_p[max(0, -d) : n - max(0, d)]) for d in shifts),
        default=here,
    )
    return max(0.0, max(_ncc(in_p, in2_p), 0.0) - here) + max(0.0, displaced - here)


def _repeat(image: np.ndarray, box: Box) -> float:
    """The best match of a piece of the original inside the generated area (normalised
    cross-correlation, pieces wholly outside the original), beyond the photo's own
    self-similarity: the best match of the same piece elsewhere in the original. Looked
    for at most ``REPEAT_PX`` on the longer side: a repeated product is a large structure,
    and the search's cost grows with the image's area times the piece's."""
    import cv2

    H, W = image.shape[:2]
    k = min(1.0, REPEAT_PX / max(H, W))
    if k < 1.0:
        W, H = max(1, round(W * k)), max(1, round(H * k))
        image = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
        box = Box(round(box.x0 * k), round(box.y0 * k), round(box.x1 * k), round(box.y1 * k))
    grey = grey_of(image)
    gen_w = max(box.x0, W - box.x1)
    gen_h = max(box.y0, H - box.y1)
    best = 0.0
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
            piece = grey[y : y + th, x : x + tw]
            if piece.std() < 4:
                continue  # a plain piece matches anything plain
            ncc = cv2.matchTemplate(grey, piece, cv2.TM_CCOEFF_NORMED)
            ys, xs = np.mgrid[0 : ncc.shape[0], 0 : ncc.shape[1]]
            outside = (xs + tw <= box.x0) | (xs >= box.x1) | (ys + th <= box.y0) | (ys >= box.y1)
            far = (np.abs(xs - x) >= tw) | (np.abs(ys - y) >= th)
            within = (
                ~outside
                & far
                & (xs >= box.x0)
                & (xs + tw <= box.x1)
                & (ys >= box.y0)
                & (ys + th <= box.y1)
            )
            if not outside.any():
                continue
            there = float(ncc[outside].max())
            own = max(0.3, float(ncc[within].max()) if within.any() else 0.0)
            # relative to the headroom the photo's own self-similarity leaves
            best = max(best, (there - own) / (1.02 - own))
    return max(0.0, best)


# how a defect's values on several seams combine: the worst seam, or (structure: its
# evidence is weak on one seam and the misplaced surroundings are everywhere) their mean
MEAN_OVER_SEAMS = {"structure"}


def _combine(defect: str, values: list[float]) -> float:
    if not values:
        return 0.0
    return float(np.mean(values)) if defect in MEAN_OVER_SEAMS else float(max(values))


def score(image: np.ndarray, box: Box, feather: int = FEATHER) -> dict[str, float] | None:
    """The defect columns of one output (H x W x 3 uint8) whose original area is ``box``;
    None when nothing was generated."""
    import cv2

    H, W = image.shape[:2]
    if box.sides(W, H) == (False, False, False, False):
        return None
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] < 3:  # grey (with or without alpha): judged as the grey it displays
        image = np.repeat(image[..., :1], 3, axis=2)
    k = min(1.0, SCALE_PX / max(H, W))
    if k < 1.0:
        size = (max(1, round(W * k)), max(1, round(H * k)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        box = Box(round(box.x0 * k), round(box.y0 * k), round(box.x1 * k), round(box.y1 * k))
        feather = max(1, round(feather * k))
    image = np.ascontiguousarray(image[..., :3])
    found: dict[str, list[float]] = {k: [] for k in DEFECTS}
    for s, _ in _seams(image, box, feather):
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
            found[key].append(value)
    cols = {k: _combine(k, v) for k, v in found.items() if k != "repeat"}
    cols["repeat"] = _repeat(image, box)
    return cols


def distance(cols: dict[str, float], thresholds) -> float:
    """The largest defect column over its threshold: above 1 fails. ``thresholds``: a
    mapping or the config's ``quality.thresholds``."""
    get = thresholds.get if isinstance(thresholds, dict) else thresholds.__getattribute__
    return max(cols[k] / get(k) for k in DEFECTS)


COLUMNS = tuple(f"quality_{k}" for k in DEFECTS)  # the metadata's per-defect columns


def judge(image: np.ndarray, box: Box, thresholds, feather: int = FEATHER) -> dict:
    """The metadata's quality columns of one output: ``quality_<defect>`` each,
    ``quality_distance``, ``quality_pass`` and ``quality_defect`` (the worst column's
    defect where the row fails, else None); all None when nothing was generated."""
    cols = score(image, box, feather)
    if cols is None:
        return {
            **dict.fromkeys(COLUMNS),
            "quality_distance": None,
            "quality_pass": None,
            "quality_defect": None,
        }
    get = thresholds.get if isinstance(thresholds, dict) else thresholds.__getattribute__
    ratios = {k: cols[k] / get(k) for k in DEFECTS}
    worst = max(ratios, key=ratios.get)
    passed = ratios[worst] <= 1.0
    return {
        **{f"quality_{k}": stored(f"quality_{k}", v) for k, v in cols.items()},
        "quality_distance": stored("quality_distance", ratios[worst]),
        "quality_pass": passed,
        "quality_defect": None if passed else worst,
    }
