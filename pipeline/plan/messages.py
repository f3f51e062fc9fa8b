"""Human error messages for geometry rejects: what went wrong and what to change.

Built per code over all the rows with that code at once (Arrow string kernels), so
a manifest where every row is rejected still plans at column speed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .geometry import MAX_REF_ASPECT, MIN_SIDE


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


def geometry_messages(code: str, out: dict, idx: np.ndarray, max_pixels: int) -> pa.Array:
    """Messages for rows ``idx`` of ``plan_geometry`` output ``out``, all with ``code``."""

    def col(name):
        return out[name][idx]

    W, H = col("canvas_width"), col("canvas_height")
    w, h = col("reference_width"), col("reference_height")
    x, y = col("offset_x"), col("offset_y")
    vw, vh = col("visible_x1") - col("visible_x0"), col("visible_y1") - col("visible_y0")
    limit = f"{max_pixels:,}"
    if code == "canvas_too_small":
        return cat(
            "canvas ",
            _dims(W, H),
            f" is under the {MIN_SIDE} px minimum on a side; "
            f"use a width and height of at least {MIN_SIDE}",
        )
    if code == "canvas_too_large":
        over = cat(
            "canvas ",
            _dims(W, H),
            " = ",
            commas(W * H),
            f" px exceeds the {limit} px limit; reduce width or height",
        )
        no_scale = cat(
            "no scale of the ",
            _dims(w, h),
            " reference gives a canvas of this aspect ratio "
            f"within {limit} px; use a less extreme aspect_ratio",
        )
        return pc.if_else(pa.array(max_pixels < W * H), over, no_scale)
    if code == "out_of_bounds":
        return cat(
            "reference ",
            _dims(w, h),
            " at (",
            _s(x),
            ", ",
            _s(y),
            ") extends past the ",
            _dims(W, H),
            " canvas; move it inside (reference_offset_x/y) or set auto_crop: true to crop it",
        )
    if code == "no_overlap":
        return cat(
            "reference ",
            _dims(w, h),
            " at (",
            _s(x),
            ", ",
            _s(y),
            ") lies entirely outside the ",
            _dims(W, H),
            " canvas, so nothing of the image would remain; fix reference_offset_x/y",
        )
    if code == "reference_too_small":
        return cat(
            "the visible reference is ",
            _dims(vw, vh),
            f", under the {MIN_SIDE} px per side that fast "
            "mode needs; use mode: high or a larger source",
        )
    if code == "reference_aspect":
        ratio = pc.round(pa.array(np.maximum(vw, vh) / np.maximum(1, np.minimum(vw, vh))), 2).cast(
            pa.string()
        )
        return cat(
            "the visible reference is ",
            _dims(vw, vh),
            " (",
            ratio,
            f":1), over fast mode's {MAX_REF_ASPECT}:1 limit; use mode: high",
        )
    if code == "aligned_canvas_too_large":
        aw, ah = col("aligned_width"), col("aligned_height")
        return cat(
            "fast mode aligns the reference to the 16 px latent grid, making the canvas ",
            _dims(aw, ah),
            " = ",
            commas(aw * ah),
            f" px, over the {limit} px limit; place the reference at an offset "
            "that is a multiple of 16, reduce the canvas, or use mode: high",
        )
    return pa.array([code] * len(idx), pa.string())


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
