"""Placement geometry as pure, vectorised functions over NumPy columns (no I/O).

Implements docs/contracts.md's geometry contract for whole columns at once: canvas from an
explicit size or an aspect ratio, scaling to the pixel budget, anchors and offsets,
auto-crop, every check in contract order, fast-mode latent alignment and "nothing
to outpaint". ``pipeline.plan.geometry_ref`` holds a per-row implementation of the same
rules, used as the tests' oracle and the benchmark's baseline.

All arithmetic is exact int64: ratios are integer pairs ``a:b``, scales are integer
multiples of 1/10000, and products that could overflow are clamped first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..common.codes import CODE

GRID = 16
MIN_SIDE = 64  # canvas and (fast) reference minimum side
MAX_REF_ASPECT = 8  # fast mode: longer/shorter side of the visible reference
SCALE_DEN = 10_000  # scale is a multiple of 1/SCALE_DEN
_COORD_CLAMP = 1 << 40  # offsets beyond this are out of bounds anyway; keeps int64 safe

# anchor -> (horizontal, vertical), each 0 = start, 1 = centre, 2 = end
ANCHOR_AXES = {
    "center": (1, 1),
    "left": (0, 1),
    "right": (2, 1),
    "top": (1, 0),
    "bottom": (1, 2),
    "top-left": (0, 0),
    "top-right": (2, 0),
    "bottom-left": (0, 2),
    "bottom-right": (2, 2),
    "subject": (1, 1),  # placed by its box where known (plan.subject), else as the centre
}


@dataclass(frozen=True)
class SizingRules:
    max_pixels: int = 4_194_304
    fit_contain: bool = False
    fill_fraction: float = 0.8
    allow_upscale: bool = False
    grid: int = GRID  # fast-mode alignment: the checkpoint's (FLUX.1: 16 = VAE x8, 2x2 packing)
    subject_fill: float = 0.85  # anchor: subject: the box's longer side / the canvas's shorter
    require_subject_fill: bool = False  # a box that would need enlarging: preset_too_small
    min_side: int = 0  # a canvas's shorter side under this: preset_too_small (0: no minimum)

    @property
    def fill_k(self) -> int:
        """subject_fill as an integer multiple of 1/SCALE_DEN."""
        return max(1, round(self.subject_fill * SCALE_DEN))


DEFAULT_RULES = SizingRules()


@dataclass
class GeometryInput:
    """Column arrays of equal length ``n``; masks say where a nullable value is present."""

    src_w: np.ndarray  # int64 source size (after EXIF rotation); ignored where code set
    src_h: np.ndarray
    width: np.ndarray  # int64 explicit canvas, valid where has_width/has_height
    height: np.ndarray
    has_width: np.ndarray  # bool
    has_height: np.ndarray
    ratio_num: np.ndarray  # int64 a of a:b, valid where has_ratio
    ratio_den: np.ndarray
    has_ratio: np.ndarray
    offset_x: np.ndarray  # int64, valid where has_offset_x
    offset_y: np.ndarray
    has_offset_x: np.ndarray
    has_offset_y: np.ndarray
    anchor_h: np.ndarray  # int8 0/1/2
    anchor_v: np.ndarray
    auto_crop: np.ndarray  # bool
    fast: np.ndarray  # bool: mode == fast
    # anchor: subject with the product's box (source px): placed and scaled by the box
    subject: np.ndarray = field(default=None)  # type: ignore[assignment]  # bool
    subject_x0: np.ndarray = field(default=None)  # type: ignore[assignment]
    subject_y0: np.ndarray = field(default=None)  # type: ignore[assignment]
    subject_x1: np.ndarray = field(default=None)  # type: ignore[assignment]
    subject_y1: np.ndarray = field(default=None)  # type: ignore[assignment]
    # Codes found before geometry, by precedence group (0 = none): request errors
    # from reading the row, id errors, image errors (header / source limits).
    request_code: np.ndarray = field(default=None)  # type: ignore[assignment]
    id_code: np.ndarray = field(default=None)  # type: ignore[assignment]
    image_code: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        n = len(self.src_w)
        for name in ("request_code", "id_code", "image_code"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(n, dtype=np.int16))
        if self.subject is None:
            self.subject = np.zeros(n, dtype=bool)
        for name in ("subject_x0", "subject_y0", "subject_x1", "subject_y1"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(n, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.src_w)

    def slice(self, start: int, stop: int) -> GeometryInput:
        return GeometryInput(**{f: getattr(self, f)[start:stop] for f in self.__dataclass_fields__})


def ceil_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return -((-a) // b)


def ceil_grid(a: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Exact ceil to a multiple of ``grid``."""
    return (a + (grid - 1)) // grid * grid


def area(w: np.ndarray, h: np.ndarray, limit: int) -> np.ndarray:
    """``w*h`` exact up to ``limit+1`` squared; anything bigger compares as over ``limit``."""
    cap = limit + 1
    return np.minimum(w, cap) * np.minimum(h, cap)


def aspect_canvas(w, h, a, b):
    """Smallest canvas of ratio a:b holding w x h; equals the contract's two branches.

    (``w/h < r``: ``H = h``, ``W = ceil(h r)`` >= w; else ``W = w``, ``H = ceil(w / r)`` >= h.)
    """
    return np.maximum(w, ceil_div(h * a, b)), np.maximum(h, ceil_div(w * b, a))


def fits(W, H, fast, max_pixels: int, grid: int = GRID):
    """Auto-sized canvas fits the budget; in fast mode even after worst-case alignment."""
    ok = area(W, H, max_pixels) <= max_pixels
    fast_ok = (
        area(ceil_grid(W + grid - 1, grid), ceil_grid(H + grid - 1, grid), max_pixels) <= max_pixels
    )
    return ok & (~fast | fast_ok)


def _fits_at(k, w0, h0, a, b, fast, max_pixels: int, grid: int = GRID):
    w = w0 * k // SCALE_DEN
    h = h0 * k // SCALE_DEN
    W, H = aspect_canvas(w, h, a, b)
    return fits(W, H, fast, max_pixels, grid)


def _bisect(lo, hi, w0, h0, a, b, fast, max_pixels: int, grid: int = GRID):
    """Largest k in [lo, hi] that fits, given that lo fits or lo == 0 (none does)."""
    while True:
        active = np.flatnonzero(lo < hi)
        if not len(active):
            return lo
        low, high = lo[active], hi[active]
        mid = (low + high + 1) // 2
        good = _fits_at(
            mid, w0[active], h0[active], a[active], b[active], fast[active], max_pixels, grid
        )
        lo[active] = np.where(good, mid, low)
        hi[active] = np.where(good, high, mid - 1)


def _largest_root(qa, qb, qc):
    """Largest root of qa s^2 + qb s + qc (qa > 0); -inf where there is none."""
    disc = qb * qb - 4 * qa * qc
    with np.errstate(invalid="ignore"):
        return np.where(disc >= 0, (-qb + np.sqrt(np.maximum(disc, 0))) / (2 * qa), -np.inf)


def _scale_to_budget(w0, h0, a, b, fast, max_pixels: int, grid: int = GRID):
    """Largest k in [1, 9999] such that the canvas of floor(w0 k/1e4) x floor(h0 k/1e4) fits.

    The canvas grows monotonically with k, so a binary search is exact. To save
    passes it starts from a bracket that is provably right: at scale s each canvas
    side lies in (s*Wc - max(1, r), s*Wc + 1), Wc the real-valued canvas at scale 1
    (and fast alignment adds grid-1 .. 2*grid-2 px), so (s*Wc + 1 [+ 2g-2])(...) <= budget
    guarantees a fit and (s*Wc - max(1, r) [+ g-1])(...) > budget guarantees none.
    Returns k, 0 where none fits.
    """
    top = SCALE_DEN - 1
    r = a / b
    Wc = np.maximum(w0, h0 * r)
    Hc = np.maximum(h0, w0 / r)
    grow_hi = np.where(
        fast, 2.0 * grid - 1, 1.0
    )  # worst-case growth of a side: fits for sure below
    gw = np.where(fast, grid - 1.0, 0.0) - np.maximum(
        1.0, r
    )  # least growth: over budget for sure above
    gh = np.where(fast, grid - 1.0, 0.0) - np.maximum(1.0, 1.0 / r)
    qa = Wc * Hc
    s_fit = _largest_root(qa, grow_hi * (Wc + Hc), grow_hi * grow_hi - max_pixels)
    s_over = _largest_root(qa, gw * Hc + gh * Wc, gw * gh - max_pixels)
    # the over-budget bound only holds where both sides stay positive
    s_over = np.where((s_over * Wc + gw > 0) & (s_over * Hc + gh > 0), s_over, np.inf)
    # one unit of slack each way absorbs floating-point error in the roots
    lo = np.clip(np.floor(s_fit * SCALE_DEN) - 1, 0, top).astype(np.int64)
    hi = np.clip(np.ceil(np.minimum(s_over, 1.0) * SCALE_DEN) + 1, 0, top).astype(np.int64)
    hi = np.maximum(hi, lo)
    return _bisect(lo, hi, w0, h0, a, b, fast, max_pixels, grid)


def _contain_scale(w0, h0, W, H, rules: SizingRules):
    """``sizing.fit: contain``: reference within fill_fraction of each side, as k/1e4."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.minimum(rules.fill_fraction * W / w0, rules.fill_fraction * H / h0)
    k = np.floor(s * SCALE_DEN + 1e-6)
    if not rules.allow_upscale:
        k = np.minimum(k, SCALE_DEN)
    return np.clip(np.nan_to_num(k, nan=SCALE_DEN), 1, 1 << 30).astype(np.int64)


def _anchor(pos_axis, free):
    """0 = start, 1 = centre (floor division, as the contract), 2 = end."""
    return np.where(pos_axis == 0, 0, np.where(pos_axis == 1, free // 2, free))


class _Codes:
    """Each row's first failure: a later check never overwrites an earlier code."""

    def __init__(self, n: int):
        self.code = np.zeros(n, dtype=np.int16)

    def reject(self, cond: np.ndarray, name: str) -> None:
        self.code[(self.code == 0) & cond] = CODE[name]

    def carry(self, given: np.ndarray) -> None:
        """Codes found before geometry (ids, images), in their place in the order."""
        self.code = np.where((self.code == 0) & (given > 0), given, self.code).astype(np.int16)


def _request_checks(g: GeometryInput, codes_: _Codes) -> np.ndarray:
    """1. request errors (read-time ones first, then the targets), ids, image errors;
    returns the rows still alive."""
    size_any = g.has_width | g.has_height
    both = size_any & g.has_ratio
    neither = ~(size_any | g.has_ratio)
    half = size_any & ~(g.has_width & g.has_height)
    codes_.carry(g.request_code)  # invalid_request, or a cap's code
    codes_.reject(both | neither | half, "invalid_request")
    codes_.carry(g.id_code)
    codes_.carry(g.image_code)
    return codes_.code == 0


def _canvas(g: GeometryInput, rules: SizingRules, alive: np.ndarray):
    """2. canvas and reference size: (W, H, w, h, scale k/1e4, rows no scale can fit)."""
    n, i64, MAX, G = len(g), np.int64, rules.max_pixels, rules.grid
    w0 = np.where(alive, g.src_w, 1).astype(i64)
    h0 = np.where(alive, g.src_h, 1).astype(i64)
    is_ratio = alive & g.has_ratio
    a = np.where(is_ratio, g.ratio_num, 1).astype(i64)
    b = np.where(is_ratio, g.ratio_den, 1).astype(i64)
    k = np.full(n, SCALE_DEN, dtype=i64)
    W0, H0 = aspect_canvas(w0, h0, a, b)
    W = np.where(is_ratio, W0, g.width).astype(i64)
    H = np.where(is_ratio, H0, g.height).astype(i64)
    need = is_ratio & ~fits(W0, H0, g.fast, MAX, G)
    unscalable = np.zeros(n, dtype=bool)
    if need.any():
        idx = np.flatnonzero(need)
        ks = _scale_to_budget(w0[idx], h0[idx], a[idx], b[idx], g.fast[idx], MAX, G)
        # none fits, or the largest that fits leaves the reference 0 px on a side
        found = (ks > 0) & (w0[idx] * ks // SCALE_DEN >= 1) & (h0[idx] * ks // SCALE_DEN >= 1)
        k[idx[found]] = ks[found]
        unscalable[idx[~found]] = True
    if rules.fit_contain:
        explicit = alive & ~g.has_ratio
        k = np.where(explicit, _contain_scale(w0, h0, W, H, rules), k)
    w = np.maximum(w0 * k // SCALE_DEN, 1)
    h = np.maximum(h0 * k // SCALE_DEN, 1)
    scaled = is_ratio & (k != SCALE_DEN)
    Ws, Hs = aspect_canvas(w, h, a, b)
    W, H = np.where(scaled, Ws, W), np.where(scaled, Hs, H)
    short = np.zeros(n, dtype=bool)
    if rules.min_side:
        W, H, k, unscalable, short = _min_side(g, rules, alive, W, H, k, unscalable, a, b)
    if (alive & g.subject).any():
        W, H, k, unscalable, short = _by_subject(g, rules, alive, W, H, k, unscalable, short, a, b)
    w = np.maximum(w0 * k // SCALE_DEN, 1)
    h = np.maximum(h0 * k // SCALE_DEN, 1)
    return W, H, w, h, k, unscalable, short


def _largest_k(lo, hi, ok):
    """Per row, the largest k in [lo, hi] with ``ok(k, rows)`` (monotone: true up to some k),
    lo where none is (the caller checks lo)."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        active = np.flatnonzero(lo < hi)
        if not len(active):
            return lo
        mid = (lo[active] + hi[active] + 1) // 2
        good = ok(mid, active)
        lo[active] = np.where(good, mid, lo[active])
        hi[active] = np.where(good, hi[active], mid - 1)


def _min_side(g, rules: SizingRules, alive, W, H, k, unscalable, a, b):
    """``sizing.min_side`` for rows not placed by a subject: an aspect-ratio canvas is
    enlarged to it when upscaling is allowed; any other canvas under it is preset_too_small."""
    M, D = rules.min_side, SCALE_DEN
    under = alive & ~g.subject & (np.minimum(W, H) < M)
    grow = under & g.has_ratio & bool(rules.allow_upscale)
    if grow.any():
        idx = np.flatnonzero(grow)
        w0, h0, ai, bi = g.src_w[idx], g.src_h[idx], a[idx], b[idx]

        def canvas_at(kk, rows):
            return aspect_canvas(w0[rows] * kk // D, h0[rows] * kk // D, ai[rows], bi[rows])

        # the canvas grows with k: the smallest k reaching the minimum, by bisection from above
        top = np.full(len(idx), 1 << 24, dtype=np.int64)  # 1678x: any source reaches it
        rows = np.arange(len(idx))
        least = _smallest_k(k[idx], top, lambda kk, r: np.minimum(*canvas_at(kk, r)) >= M, rows)
        Wn, Hn = canvas_at(least, rows)
        k[idx], W[idx], H[idx] = least, Wn, Hn
        unscalable[idx] |= ~fits(Wn, Hn, g.fast[idx], rules.max_pixels, rules.grid)
    short = under & ~grow
    return W, H, k, unscalable, short


def _smallest_k(lo, hi, ok, rows):
    """Per row, the smallest k in [lo, hi] with ``ok`` (monotone: false, then true)."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        active = np.flatnonzero(lo < hi)
        if not len(active):
            return lo
        mid = (lo[active] + hi[active]) // 2
        good = ok(mid, rows[active])
        hi[active] = np.where(good, mid, hi[active])
        lo[active] = np.where(good, lo[active], mid + 1)


def _subject_canvas(m, kk, a, b, F):
    """A ratio canvas whose shorter side the box (longer side ``m`` at scale kk) spans at F/1e4."""
    S = np.maximum(ceil_div(m * kk, F), 1)
    wide = a >= b
    return np.where(wide, ceil_div(S * a, b), S), np.where(wide, S, ceil_div(S * b, a))


def _by_subject(g, rules: SizingRules, alive, W, H, k, unscalable, short, a, b):
    """anchor: subject with a box: the scale (explicit canvases) or the canvas (ratios) that
    makes the box's longer side span subject_fill of the canvas's shorter side."""
    D, F, M = SCALE_DEN, rules.fill_k, rules.min_side
    rows = alive & g.subject
    m = np.maximum(np.maximum(g.subject_x1 - g.subject_x0, g.subject_y1 - g.subject_y0), 1).astype(
        np.int64
    )
    # explicit canvas: k = F * min(W, H) / m, enlarging only when allowed
    explicit = rows & ~g.has_ratio
    want = F * np.minimum(W, H) // m
    needs_up = explicit & (want > D) & (not rules.allow_upscale)
    k = np.where(explicit, np.maximum(np.where(needs_up, D, want), 1), k)
    short = np.where(
        explicit, (np.minimum(W, H) < M) | (needs_up & bool(rules.require_subject_fill)), short
    )
    # ratio: the canvas from the box at full scale, scaled down to the budget where needed
    ratio = np.flatnonzero(rows & g.has_ratio)
    if len(ratio):
        mi, ai, bi, fast = m[ratio], a[ratio], b[ratio], g.fast[ratio]
        kk = np.full(len(ratio), D, dtype=np.int64)
        if M and rules.allow_upscale:  # enlarged to the minimum side
            kk = np.maximum(kk, (M - 1) * F // mi + 1)

        def fit(kv, r):
            Wk, Hk = _subject_canvas(mi[r], kv, ai[r], bi[r], F)
            return fits(Wk, Hk, fast[r], rules.max_pixels, rules.grid)

        over = ~fit(kk, np.arange(len(ratio)))
        if over.any():
            o = np.flatnonzero(over)
            kk[o] = _largest_k(np.zeros(len(o), np.int64), kk[o] - 1, lambda kv, r: fit(kv, o[r]))
        Wr, Hr = _subject_canvas(mi, np.maximum(kk, 1), ai, bi, F)
        src_gone = (g.src_w[ratio] * kk // D < 1) | (g.src_h[ratio] * kk // D < 1)
        unscalable[ratio] = (kk == 0) | src_gone
        k[ratio], W[ratio], H[ratio] = np.maximum(kk, 1), Wr, Hr
        short[ratio] = np.minimum(Wr, Hr) < M
    return W, H, k, unscalable, short


def _place(g: GeometryInput, W, H, w, h):
    """3. placement: the offsets, else the product's box centred (anchor: subject with a
    box), else the anchor."""
    ox = np.clip(g.offset_x, -_COORD_CLAMP, _COORD_CLAMP).astype(np.int64)
    oy = np.clip(g.offset_y, -_COORD_CLAMP, _COORD_CLAMP).astype(np.int64)
    ax, ay = _anchor(g.anchor_h, W - w), _anchor(g.anchor_v, H - h)
    if g.subject.any():
        w0, h0 = np.maximum(g.src_w, 1), np.maximum(g.src_h, 1)
        # the box's centre, scaled as the reference is, on the canvas's centre (floor division)
        sx = (W * w0 - (g.subject_x0 + g.subject_x1) * w) // (2 * w0)
        sy = (H * h0 - (g.subject_y0 + g.subject_y1) * h) // (2 * h0)
        ax, ay = np.where(g.subject, sx, ax), np.where(g.subject, sy, ay)
    x = np.where(g.has_offset_x, ox, ax).astype(np.int64)
    y = np.where(g.has_offset_y, oy, ay).astype(np.int64)
    return x, y


def _visible(g, alive, codes_: _Codes, too_large, short, W, H, x, y, w, h):
    """4. the canvas checks, then the visible box V = R ∩ C (auto_crop) or out_of_bounds."""
    codes_.reject(alive & ((W < MIN_SIDE) | (H < MIN_SIDE)), "canvas_too_small")
    codes_.reject(too_large, "canvas_too_large")
    codes_.reject(alive & short, "preset_too_small")
    inside = (x >= 0) & (y >= 0) & (x + w <= W) & (y + h <= H)
    vx0, vy0 = np.maximum(x, 0), np.maximum(y, 0)
    vx1, vy1 = np.minimum(x + w, W), np.minimum(y + h, H)
    empty = (vx0 >= vx1) | (vy0 >= vy1)
    codes_.reject(alive & ~inside & ~g.auto_crop, "out_of_bounds")
    codes_.reject(alive & ~inside & empty, "no_overlap")
    return [np.where(empty, 0, v) for v in (vx0, vy0, vx1, vy1)]


def _fast_checks(g, alive, codes_: _Codes, rules: SizingRules, W, H, box):
    """5. fast mode: the reference's own limits and the aligned canvas."""
    vx0, vy0, vx1, vy1 = box
    G, MAX = rules.grid, rules.max_pixels
    vw, vh = vx1 - vx0, vy1 - vy0
    fast = alive & g.fast
    pad_left = np.where(fast, (-vx0) % G, 0).astype(np.int64)
    pad_top = np.where(fast, (-vy0) % G, 0).astype(np.int64)
    aligned_w, aligned_h = ceil_grid(W + pad_left, G), ceil_grid(H + pad_top, G)
    short, long = np.minimum(vw, vh), np.maximum(vw, vh)
    codes_.reject(fast & (short < MIN_SIDE), "reference_too_small")
    codes_.reject(fast & (long > MAX_REF_ASPECT * short), "reference_aspect")
    codes_.reject(fast & (area(aligned_w, aligned_h, MAX) > MAX), "aligned_canvas_too_large")
    return pad_left, pad_top, aligned_w, aligned_h


def plan_geometry(g: GeometryInput, rules: SizingRules = DEFAULT_RULES) -> dict[str, np.ndarray]:
    """Plan every row. Returns columns (int64 unless noted):

    ``code`` (int16 index into ``codes.CODES``), ``geometry_valid`` (bool: the
    geometry columns mean something), ``canvas_width/height``, ``scale`` (float64),
    ``reference_width/height`` (scaled source), ``offset_x/y``, ``visible_x0/y0/x1/y1``,
    ``pad_left/top``, ``aligned_width/height``, ``generated`` (bool).
    """
    codes_ = _Codes(len(g))
    alive = _request_checks(g, codes_)
    W, H, w, h, k, unscalable, short = _canvas(g, rules, alive)
    x, y = _place(g, W, H, w, h)
    too_large = alive & (unscalable | (area(W, H, rules.max_pixels) > rules.max_pixels))
    box = _visible(g, alive, codes_, too_large, short, W, H, x, y, w, h)
    pad_left, pad_top, aligned_w, aligned_h = _fast_checks(g, alive, codes_, rules, W, H, box)
    vx0, vy0, vx1, vy1 = box
    generated = ~((vx0 == 0) & (vy0 == 0) & (vx1 == W) & (vy1 == H))
    return {
        "code": codes_.code,
        "geometry_valid": alive,
        "canvas_width": W,
        "canvas_height": H,
        "scale": k / SCALE_DEN,
        "reference_width": w,
        "reference_height": h,
        "offset_x": x,
        "offset_y": y,
        "visible_x0": vx0,
        "visible_y0": vy0,
        "visible_x1": vx1,
        "visible_y1": vy1,
        "pad_left": pad_left,
        "pad_top": pad_top,
        "aligned_width": aligned_w,
        "aligned_height": aligned_h,
        "generated": generated & alive & (codes_.code == 0),
    }


def plan_geometry_threaded(
    g: GeometryInput,
    rules: SizingRules = DEFAULT_RULES,
    chunk: int = 131_072,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """``plan_geometry`` over cache-sized chunks on a thread pool (NumPy releases the
    GIL in its kernels), for planning large manifests on several cores."""
    from ..common.parallel import map_chunks

    parts = map_chunks(lambda s, e: plan_geometry(g.slice(s, e), rules), len(g), chunk, threads)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
