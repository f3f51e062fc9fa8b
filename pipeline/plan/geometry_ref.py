"""A straightforward per-row implementation of the geometry contract.

Written from docs/contracts.md's text, branch by branch, independently of the vectorised
``pipeline.plan.geometry``: the property tests check the two agree on every row, and
``benchmarks/plan_throughput.py`` uses this as the per-row baseline.
"""

from __future__ import annotations

from .geometry import GRID, MAX_REF_ASPECT, MIN_SIDE, SCALE_DEN, SizingRules


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _ceil_grid(v: int, grid: int = GRID) -> int:
    return _ceil_div(v, grid) * grid


def _canvas_for_ratio(w: int, h: int, a: int, b: int) -> tuple[int, int]:
    if w * b < h * a:  # w/h < a/b: keep the height, widen
        return _ceil_div(h * a, b), h
    return w, _ceil_div(w * b, a)  # keep the width, heighten


def _fits(W: int, H: int, fast: bool, max_pixels: int, grid: int = GRID) -> bool:
    if max_pixels < W * H:
        return False
    aligned = _ceil_grid(W + grid - 1, grid) * _ceil_grid(H + grid - 1, grid)
    return not (fast and aligned > max_pixels)


def _request_code(row: dict) -> str | None:
    """The request's own problems, then the id's and the image's, in the contract's order."""
    has_size = row.get("width") is not None or row.get("height") is not None
    ratio = row.get("ratio")
    if row.get("request_code"):
        return row["request_code"]
    if (has_size and ratio is not None) or (not has_size and ratio is None):
        return "invalid_request"
    if has_size and (row.get("width") is None or row.get("height") is None):
        return "invalid_request"
    return row.get("id_code") or row.get("image_code") or None


def _largest_scale(w0: int, h0: int, a: int, b: int, fast: bool, rules: SizingRules) -> int:
    """Binary search for the largest k/10000 < 1 whose canvas fits (0: none does)."""
    lo, hi = 0, SCALE_DEN - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        ws, hs = w0 * mid // SCALE_DEN, h0 * mid // SCALE_DEN
        if _fits(*_canvas_for_ratio(ws, hs, a, b), fast, rules.max_pixels, rules.grid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _smallest(lo: int, hi: int, ok) -> int:
    """The smallest k in [lo, hi] with ``ok`` (false, then true)."""
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def _largest(lo: int, hi: int, ok) -> int:
    """The largest k in [lo, hi] with ``ok`` (true, then false); lo when none is."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _subject_sizes(row: dict, rules: SizingRules):
    """anchor: subject with a box: (W, H, w, h, k, code, short). An explicit canvas scales
    the reference so the box's longer side spans subject_fill of the canvas's shorter side;
    an aspect ratio takes the canvas from the box instead (shorter side = box / fill)."""
    w0, h0, fast = row["src_w"], row["src_h"], bool(row.get("fast"))
    x0, y0, x1, y1 = row["subject"]
    m, F, D, M = max(x1 - x0, y1 - y0, 1), rules.fill_k, SCALE_DEN, rules.min_side
    if row.get("ratio") is None:
        W, H = row["width"], row["height"]
        want = F * min(W, H) // m
        up = want > D and not rules.allow_upscale
        k = max(D if up else want, 1)
        short = min(W, H) < M or (up and rules.require_subject_fill)
        return W, H, max(w0 * k // D, 1), max(h0 * k // D, 1), k, None, short
    a, b = row["ratio"]

    def canvas(k: int) -> tuple[int, int]:
        S = max(_ceil_div(m * k, F), 1)
        return (_ceil_div(S * a, b), S) if a >= b else (S, _ceil_div(S * b, a))

    def fit(k: int) -> bool:
        return _fits(*canvas(k), fast, rules.max_pixels, rules.grid)

    k = D
    if M and rules.allow_upscale:
        k = max(k, (M - 1) * F // m + 1)
    if not fit(k):
        k = _largest(0, k - 1, lambda v: v > 0 and fit(v))
    code = "canvas_too_large" if k == 0 or w0 * k // D < 1 or h0 * k // D < 1 else None
    k = max(k, 1)
    W, H = canvas(k)
    return W, H, max(w0 * k // D, 1), max(h0 * k // D, 1), k, code, min(W, H) < M


def _min_side(row: dict, rules: SizingRules, sizes):
    """sizing.min_side for rows not placed by a box: an aspect-ratio canvas enlarged to
    it when upscaling is allowed, anything else under it preset_too_small."""
    W, H, w, h, k, code = sizes
    M = rules.min_side
    if not M or min(W, H) >= M:
        return (*sizes, False)
    if row.get("ratio") is None or not rules.allow_upscale:
        return (*sizes, True)
    w0, h0, (a, b) = row["src_w"], row["src_h"], row["ratio"]

    def canvas(v: int) -> tuple[int, int]:
        return _canvas_for_ratio(w0 * v // SCALE_DEN, h0 * v // SCALE_DEN, a, b)

    k = _smallest(k, 1 << 24, lambda v: min(canvas(v)) >= M)
    W, H = canvas(k)
    if not _fits(W, H, bool(row.get("fast")), rules.max_pixels, rules.grid):
        code = code or "canvas_too_large"
    return W, H, max(w0 * k // SCALE_DEN, 1), max(h0 * k // SCALE_DEN, 1), k, code, False


def _sizes(row: dict, rules: SizingRules):
    """(W, H, w, h, k, code, short): the canvas, the scaled reference and its scale,
    ``canvas_too_large`` where no scale fits, and whether it misses sizing.min_side or
    the subject's fill (preset_too_small)."""
    if row.get("subject") is not None:
        return _subject_sizes(row, rules)
    return _min_side(row, rules, _plain_sizes(row, rules))


def _plain_sizes(row: dict, rules: SizingRules):
    w0, h0, fast = row["src_w"], row["src_h"], bool(row.get("fast"))
    if row.get("ratio") is None:
        W, H = row["width"], row["height"]
        if not rules.fit_contain:
            return W, H, w0, h0, SCALE_DEN, None
        s = min(rules.fill_fraction * W / w0, rules.fill_fraction * H / h0)
        k = int(s * SCALE_DEN + 1e-6)
        k = max(min(k, SCALE_DEN) if not rules.allow_upscale else k, 1)
        return W, H, max(w0 * k // SCALE_DEN, 1), max(h0 * k // SCALE_DEN, 1), k, None
    a, b = row["ratio"]
    W, H = _canvas_for_ratio(w0, h0, a, b)
    if _fits(W, H, fast, rules.max_pixels, rules.grid):
        return W, H, w0, h0, SCALE_DEN, None
    k = _largest_scale(w0, h0, a, b, fast, rules)
    if k == 0 or w0 * k // SCALE_DEN == 0 or h0 * k // SCALE_DEN == 0:
        return (
            W,
            H,
            w0,
            h0,
            SCALE_DEN,
            "canvas_too_large",
        )  # nothing fits, or only a 0-px reference would
    w, h = w0 * k // SCALE_DEN, h0 * k // SCALE_DEN
    return (*_canvas_for_ratio(w, h, a, b), w, h, k, None)


def _fast_code(vw: int, vh: int, aligned: int, rules: SizingRules) -> str | None:
    if min(vw, vh) < MIN_SIDE:
        return "reference_too_small"
    if max(vw, vh) > MAX_REF_ASPECT * min(vw, vh):
        return "reference_aspect"
    return "aligned_canvas_too_large" if aligned > rules.max_pixels else None


def plan_row(row: dict, rules: SizingRules | None = None) -> dict:
    """``row`` keys: src_w, src_h, width, height, ratio (tuple a, b or None), offset_x,
    offset_y (None = anchor), anchor ((h, v) each 0/1/2), subject (the product's box
    (x0, y0, x1, y1) in source px, anchor: subject; None = none), auto_crop, fast, and
    request_code / id_code / image_code (code names or None). Returns ``code``
    (name or None) and, when geometry was computed, the geometry columns."""
    rules = rules or SizingRules()
    early = _request_code(row)
    if early:
        return {"code": early}
    W, H, w, h, k, code, short = _sizes(row, rules)
    ah, av = row.get("anchor", (1, 1))
    x, y = [0, (W - w) // 2, W - w][ah], [0, (H - h) // 2, H - h][av]
    if row.get("subject") is not None:  # the box's centre, scaled, on the canvas's centre
        x0, y0, x1, y1 = row["subject"]
        w0, h0 = row["src_w"], row["src_h"]
        x, y = (W * w0 - (x0 + x1) * w) // (2 * w0), (H * h0 - (y0 + y1) * h) // (2 * h0)
    x = row["offset_x"] if row.get("offset_x") is not None else x
    y = row["offset_y"] if row.get("offset_y") is not None else y
    if W < MIN_SIDE or H < MIN_SIDE:
        code = "canvas_too_small"
    elif code is None and rules.max_pixels < W * H:
        code = "canvas_too_large"
    if code is None and short:
        code = "preset_too_small"
    vx0, vy0, vx1, vy1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    inside = x >= 0 and y >= 0 and x + w <= W and y + h <= H
    if code is None and not inside:
        if not row.get("auto_crop"):
            code = "out_of_bounds"
        elif vx0 >= vx1 or vy0 >= vy1:
            code = "no_overlap"
    if vx0 >= vx1 or vy0 >= vy1:
        vx0 = vy0 = vx1 = vy1 = 0
    fast, G = bool(row.get("fast")), rules.grid
    pad_left, pad_top = ((-vx0) % G, (-vy0) % G) if fast else (0, 0)
    aw, ah_ = _ceil_grid(W + pad_left, G), _ceil_grid(H + pad_top, G)
    if code is None and fast:
        code = _fast_code(vx1 - vx0, vy1 - vy0, aw * ah_, rules)
    whole = vx0 == 0 and vy0 == 0 and vx1 == W and vy1 == H
    return {
        "code": code,
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
        "aligned_width": aw,
        "aligned_height": ah_,
        "generated": code is None and not whole,
    }


def columns_from_rows(rows: list[dict]):
    """Per-row dicts (``plan_row``'s format) -> ``GeometryInput`` columns."""
    import numpy as np

    from ..common.codes import CODE
    from .geometry import GeometryInput

    def ints(key, default=0):
        return np.array(
            [r.get(key) if r.get(key) is not None else default for r in rows], dtype=np.int64
        )

    def has(key):
        return np.array([r.get(key) is not None for r in rows], dtype=bool)

    def code(key):
        return np.array([CODE[r[key]] if r.get(key) else 0 for r in rows], dtype=np.int16)

    ratio = [r.get("ratio") for r in rows]
    anchor = [r.get("anchor", (1, 1)) for r in rows]
    subject = [r.get("subject") or (0, 0, 0, 0) for r in rows]
    return GeometryInput(
        src_w=ints("src_w", 1),
        src_h=ints("src_h", 1),
        width=ints("width"),
        height=ints("height"),
        has_width=has("width"),
        has_height=has("height"),
        ratio_num=np.array([q[0] if q else 1 for q in ratio], dtype=np.int64),
        ratio_den=np.array([q[1] if q else 1 for q in ratio], dtype=np.int64),
        has_ratio=np.array([q is not None for q in ratio], dtype=bool),
        offset_x=ints("offset_x"),
        offset_y=ints("offset_y"),
        has_offset_x=has("offset_x"),
        has_offset_y=has("offset_y"),
        anchor_h=np.array([a[0] for a in anchor], dtype=np.int8),
        anchor_v=np.array([a[1] for a in anchor], dtype=np.int8),
        auto_crop=np.array([bool(r.get("auto_crop")) for r in rows]),
        fast=np.array([bool(r.get("fast")) for r in rows]),
        subject=np.array([r.get("subject") is not None for r in rows], dtype=bool),
        subject_x0=np.array([q[0] for q in subject], dtype=np.int64),
        subject_y0=np.array([q[1] for q in subject], dtype=np.int64),
        subject_x1=np.array([q[2] for q in subject], dtype=np.int64),
        subject_y1=np.array([q[3] for q in subject], dtype=np.int64),
        request_code=code("request_code"),
        id_code=code("id_code"),
        image_code=code("image_code"),
    )
