"""The plan's columns: what planning writes for each row, in the metadata's order, and
what it keeps of a row's own request for the load stage to plan it again."""

from __future__ import annotations

import pyarrow as pa

from ..io.manifest import ROW_INDEX

# Plan columns, in order (docs/contracts.md metadata names). Passthrough columns follow.
PLAN_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("image", pa.string()),
        ("source_width", pa.int64()),
        ("source_height", pa.int64()),
        ("canvas_width", pa.int64()),
        ("canvas_height", pa.int64()),
        ("scale", pa.float64()),
        ("reference_width", pa.int64()),
        ("reference_height", pa.int64()),
        ("offset_x", pa.int64()),
        ("offset_y", pa.int64()),
        ("visible_x0", pa.int64()),
        ("visible_y0", pa.int64()),
        ("visible_x1", pa.int64()),
        ("visible_y1", pa.int64()),
        ("pad_left", pa.int64()),
        ("pad_top", pa.int64()),
        ("aligned_width", pa.int64()),
        ("aligned_height", pa.int64()),
        ("mode", pa.string()),
        ("output_format", pa.string()),
        ("anchor", pa.string()),
        ("auto_crop", pa.bool_()),
        ("generated", pa.bool_()),
        ("seed", pa.int64()),
        ("num_variants", pa.int64()),
        ("prompt", pa.string()),
        ("steps", pa.int64()),
        ("route", pa.string()),
        ("backdrop_kind", pa.string()),
        ("backdrop_color", pa.string()),
        ("placement_note", pa.string()),
        (ROW_INDEX, pa.int64()),
    ]
)
GEOMETRY_COLUMNS = [f.name for f in PLAN_SCHEMA][7:22]


VERSION_PREFIX = "version="  # the identity of a row with image_version: the catalogue's own word
REQUEST = "request_json"  # a row's own request (manifest values) for the load stage to plan it once its size is known
# manifest columns that request_json keeps (inline bytes never travel this way)
REQUEST_COLUMNS = (
    "id",
    "image",
    "width",
    "height",
    "aspect_ratio",
    "reference_offset_x",
    "reference_offset_y",
    "auto_crop",
    "anchor",
    "mode",
    "output_format",
    "prompt",
    "seed",
    "num_variants",
    "image_version",
    "subject_x0",
    "subject_y0",
    "subject_x1",
    "subject_y1",
    "backdrop_kind",
    "backdrop_color",
    "backdrop_sides",
)
