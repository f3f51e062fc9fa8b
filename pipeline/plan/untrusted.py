"""What an untrusted manifest row may not do (docs/security.md): make its row cost more
than the caps (a long text line, prompt or cell: the row's code, the value cut before it
goes anywhere), or point a run at sources outside ``input.image_root``."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.manifest import LINE_BYTES
from .cells import Problems, column

TRUSTED_CELLS = ("image_bytes",)  # capped by limits.max_source_bytes instead


def caps(table: pa.Table, limits, p: Problems) -> pa.Table:
    """A manifest row may not make its row cost more than the caps: an over-long text line,
    a prompt or any other cell over its cap is the row's code, and the oversized value is
    cut down before it goes anywhere (the metadata, the review page)."""
    if LINE_BYTES in table.column_names:
        sizes = table.column(LINE_BYTES).fill_null(0).to_numpy(zero_copy_only=False)
        limit = limits.max_manifest_line_bytes
        p.add(
            sizes > 0,
            lambda i: (
                f"manifest line is {sizes[i]:,} bytes, over limits.max_manifest_line_bytes = "
                f"{limit:,}; split or shorten it"
            ),
            "row_too_large",
        )
        table = table.drop_columns([LINE_BYTES])
    for name in table.column_names:
        col = column(table, name)
        if col is None or name in TRUSTED_CELLS:
            continue
        if not (
            pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type)
            or pa.types.is_binary(col.type)
            or pa.types.is_large_binary(col.type)
        ):
            continue
        if name == "prompt" and pa.types.is_string(col.type):
            chars = pc.utf8_length(col).fill_null(0).to_numpy(zero_copy_only=False)
            over = chars > limits.max_prompt_chars
            p.add(
                over,
                lambda i, c=chars: (
                    f"prompt is {c[i]:,} characters, over limits.max_prompt_chars = "
                    f"{limits.max_prompt_chars:,}"
                ),
                "prompt_too_long",
            )
        else:
            size = pc.binary_length(col).fill_null(0).to_numpy(zero_copy_only=False)
            over = size > limits.max_cell_bytes
            p.add(
                over,
                lambda i, c=name, b=size: (
                    f"column {c} holds {b[i]:,} bytes, over limits.max_cell_bytes = "
                    f"{limits.max_cell_bytes:,}"
                ),
                "cell_too_large",
            )
        if over.any():
            table = table.set_column(table.column_names.index(name), name, _cut(col, over))
    return table


def _cut(col: pa.Array, over: np.ndarray) -> pa.Array:
    """Oversized cells replaced: text by its first 64 characters and a digest (an id stays
    distinct), anything else by null."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return pc.if_else(pa.array(over), pa.scalar(None, col.type), col)
    values = np.array(col.to_pylist(), dtype=object)
    for i in np.flatnonzero(over):
        text = values[i]
        values[i] = f"{text[:64]}…{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    return pa.array(values, col.type)


_CLIMBS = r"(^|/)\.\.(/|$)"


def source_rules(image: pa.StringArray, table: pa.Table, image_root: str | None) -> np.ndarray:
    """Why a row's source may not be read (``image_access_denied``), or None: a relative
    value may not climb out of ``input.image_root``; when the root is remote, an absolute
    value must be an http(s) URL or lie under the root (no ``file://`` or other bucket
    smuggled in by an untrusted manifest)."""
    n = table.num_rows
    out = np.full(n, None, dtype=object)
    raw = column(table, "image")
    if raw is None or not (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)):
        return out
    raw = raw.cast(pa.string())
    has_scheme = pc.fill_null(pc.match_substring_regex(raw, r"^[A-Za-z][A-Za-z0-9+.-]*:"), False)
    absolute = pc.or_(has_scheme, pc.fill_null(pc.starts_with(raw, "/"), False))
    climbs = pc.and_(
        pc.invert(absolute), pc.fill_null(pc.match_substring_regex(raw, _CLIMBS), False)
    )
    for i in np.flatnonzero(np.asarray(climbs)):
        out[i] = (
            f"image {str(raw[i].as_py())[:200]!r} climbs out of input.image_root ('..'); give a path under it"
        )
    remote_root = bool(image_root) and "://" in image_root and not image_root.startswith("file://")
    if not remote_root:
        return out
    http = pc.fill_null(pc.match_substring_regex(raw, r"^https?://"), False)
    under = pc.fill_null(pc.starts_with(raw, image_root.rstrip("/") + "/"), False)
    outside = pc.and_(absolute, pc.invert(pc.or_(http, under)))
    for i in np.flatnonzero(np.asarray(outside)):
        what = str(raw[i].as_py())[:200]
        out[i] = (
            f"image {what!r} lies outside input.image_root ({image_root}) and is not an http(s) URL: "
            "a manifest may not point a remote run at other sources"
        )
    return out
