"""Human error messages for geometry rejects: what went wrong and what to change.

Built per code over all the rows with that code at once (Arrow string kernels), so
a manifest where every row is rejected still plans at column speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .geometry import MAX_REF_ASPECT, MIN_SIDE, SizingRules


def _s(v) -> pa.Array:
    return pa.array(np.asarray(v)).cast(pa.string())


def _zfill3(v) -> pa.Array:
    return pc.utf8_lpad(_s(v), 3, "0")


def commas(v) -> pa.Array:
    """Integers -> strings with thousands separators (``4194304`` -> ``4,194,304``)."""
    v = np.asarray(v, dtype=np.int64)
    neg = pa.array(v < 0)
    v = np.abs(v)
    rest = v // 1000
    out = pc.if_else(pa.array(rest > 0), _zfill3(v % 1000), _s(v % 1000))
    while (rest > 0).any():
        group, nxt = rest % 1000, rest // 1000
        text = pc.if_else(pa.array(nxt > 0), _zfill3(group), _s(group))
        out = pc.if_else(pa.array(rest > 0), cat(text, ",", out), out)
        rest = nxt
    return pc.if_else(neg, cat("-", out), out)


def cat(*parts) -> pa.Array:
    """Concatenate string constants and string arrays elementwise (Arrow, UTF-8)."""
    return pc.binary_join_element_wise(*parts, "")


def _dims(a, b) -> np.ndarray:
    return cat(_s(a), "×", _s(b))


@dataclass
class _Rejected:
    """The geometry of the rows rejected with one code (arrays of the rows' values)."""

    W: np.ndarray
    H: np.ndarray
    w: np.ndarray
    h: np.ndarray
    x: np.ndarray
    y: np.ndarray
    vw: np.ndarray  # the visible box
    vh: np.ndarray
    aw: np.ndarray  # the aligned canvas (fast mode)
    ah: np.ndarray
    max_pixels: int
    rules: SizingRules

    @classmethod
    def of(cls, out: dict, idx: np.ndarray, rules: SizingRules) -> _Rejected:
        def col(name):
            return out[name][idx]

        vw = col("visible_x1") - col("visible_x0")
        vh = col("visible_y1") - col("visible_y0")
        return cls(
            col("canvas_width"),
            col("canvas_height"),
            col("reference_width"),
            col("reference_height"),
            col("offset_x"),
            col("offset_y"),
            vw,
            vh,
            col("aligned_width"),
            col("aligned_height"),
            rules.max_pixels,
            rules,
        )

    @property
    def limit(self) -> str:
        return f"{self.max_pixels:,}"


def _canvas_too_small(r: _Rejected) -> pa.Array:
    return cat(
        "canvas ",
        _dims(r.W, r.H),
        f" is under the {MIN_SIDE} px minimum on a side; "
        f"use a width and height of at least {MIN_SIDE}",
    )


def _canvas_too_large(r: _Rejected) -> pa.Array:
    over = cat(
        "canvas ",
        _dims(r.W, r.H),
        " = ",
        commas(r.W * r.H),
        f" px exceeds the {r.limit} px limit; reduce width or height",
    )
    no_scale = cat(
        "no scale of the ",
        _dims(r.w, r.h),
        " reference gives a canvas of this aspect ratio "
        f"within {r.limit} px; use a less extreme aspect_ratio",
    )
    return pc.if_else(pa.array(r.max_pixels < r.W * r.H), over, no_scale)


def _placed(r: _Rejected, where: str, advice: str) -> pa.Array:
    """ "reference WxH at (x, y) {where} the WxH canvas{advice}"."""
    at = cat("reference ", _dims(r.w, r.h), " at (", _s(r.x), ", ", _s(r.y), ") ")
    return cat(at, where, " the ", _dims(r.W, r.H), " canvas", advice)


def _out_of_bounds(r: _Rejected) -> pa.Array:
    advice = "; move it inside (reference_offset_x/y) or set auto_crop: true to crop it"
    return _placed(r, "extends past", advice)


def _no_overlap(r: _Rejected) -> pa.Array:
    advice = ", so nothing of the image would remain; fix reference_offset_x/y"
    return _placed(r, "lies entirely outside", advice)


def _reference_too_small(r: _Rejected) -> pa.Array:
    return cat(
        "the visible reference is ",
        _dims(r.vw, r.vh),
        f", under the {MIN_SIDE} px per side that fast "
        "mode needs; use mode: high or a larger source",
    )


def _reference_aspect(r: _Rejected) -> pa.Array:
    ratio = np.maximum(r.vw, r.vh) / np.maximum(1, np.minimum(r.vw, r.vh))
    shown = pc.round(pa.array(ratio), 2).cast(pa.string())
    return cat(
        "the visible reference is ",
        _dims(r.vw, r.vh),
        " (",
        shown,
        f":1), over fast mode's {MAX_REF_ASPECT}:1 limit; use mode: high",
    )


def _aligned_canvas_too_large(r: _Rejected) -> pa.Array:
    return cat(
        "fast mode aligns the reference to the 16 px latent grid, making the canvas ",
        _dims(r.aw, r.ah),
        " = ",
        commas(r.aw * r.ah),
        f" px, over the {r.limit} px limit; place the reference at an offset "
        "that is a multiple of 16, reduce the canvas, or use mode: high",
    )


def _preset_too_small(r: _Rejected) -> pa.Array:
    M = r.rules.min_side
    under = cat(
        "canvas ",
        _dims(r.W, r.H),
        f" is under sizing.min_side = {M:,} px on its shorter side: the source is too small to "
        "reach it without enlarging; use a larger source or sizing.allow_upscale: true",
    )
    fill = cat(
        f"the product's box would have to be enlarged to span {r.rules.subject_fill:.0%} of the ",
        _dims(r.W, r.H),
        " canvas's shorter side (sizing.subject_fill); use a larger source, a smaller canvas or "
        "sizing.allow_upscale: true",
    )
    return pc.if_else(pa.array(np.minimum(r.W, r.H) < M), under, fill)


MESSAGES = {
    "canvas_too_small": _canvas_too_small,
    "canvas_too_large": _canvas_too_large,
    "out_of_bounds": _out_of_bounds,
    "no_overlap": _no_overlap,
    "reference_too_small": _reference_too_small,
    "reference_aspect": _reference_aspect,
    "aligned_canvas_too_large": _aligned_canvas_too_large,
    "preset_too_small": _preset_too_small,
}


def geometry_messages(code: str, out: dict, idx: np.ndarray, rules: SizingRules) -> pa.Array:
    """Messages for rows ``idx`` of ``plan_geometry`` output ``out``, all with ``code``."""
    build = MESSAGES.get(code)
    if build is None:
        return pa.array([code] * len(idx), pa.string())
    return build(_Rejected.of(out, idx, rules))


def id_message(code: str, row_id: str, first_row: int | None) -> str:
    shown = repr(row_id if len(row_id) <= 60 else row_id[:57] + "...")
    if code == "duplicate_id":
        return (
            f"id {shown} already appears in manifest row {first_row}; ids must be unique "
            "(only the first is processed)"
        )
    return (
        f"id {shown} is not allowed: use 1-200 characters of A-Z a-z 0-9 . _ - "
        "not starting with '.' (the id names the output files)"
    )
