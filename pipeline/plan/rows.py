"""Manifest rows -> typed request columns, with defaults applied.

Vectorised over a pyarrow Table (Arrow compute kernels and NumPy; no per-row Python
on the common path). Every row gets a value for every request field; a value that
is missing or ill-typed marks the row ``invalid_request`` with a message naming the
column, never an exception. Per-value parsing only runs for columns stored with an
unexpected type (e.g. numbers written as strings) and messages are only formatted
for the rows that have a problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import ANCHORS, Config, parse_ratio
from ..io.done import FNV_OFFSET, FNV_PRIME, M64, hash64, splitmix64
from .cells import Problems, bool_column, column, enum_column, int_column, is_present, str_column
from .geometry import ANCHOR_AXES
from .product import backdrop_fields, subject_fields
from .sections import PlanSections
from .untrusted import caps, source_rules

MODES = ("high", "fast")
FORMATS = ("png", "jpeg", "webp")
FORMAT_ALIASES = {"jpg": "jpeg"}
ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$"


# ---------------------------------------------------------------- seeds


def derive_seed(run_seed: int, row_id: str) -> int:
    """Stable 63-bit seed from (run seed, id): splitmix64(FNV-1a(id) ^ splitmix64(run seed)).

    The same row gets the same seed in any batch, on any machine, in any run with the
    same run seed. ``derive_seeds`` computes the same thing over a whole column.
    """
    h = FNV_OFFSET
    for byte in row_id.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & M64
    return splitmix64(h ^ splitmix64(run_seed & M64)) & ((1 << 63) - 1)


def derive_seeds(run_seed: int, ids: pa.StringArray) -> np.ndarray:
    """``derive_seed`` over a string column (``io.done.hash64``: FNV-1a stepped over byte
    positions, so the cost is (longest id) NumPy passes, not one Python call per row)."""
    return (hash64(ids, run_seed) & np.uint64((1 << 63) - 1)).astype(np.int64)


# ---------------------------------------------------------------- requests


@dataclass
class Requests:
    """Typed request columns for a batch of manifest rows (all length n)."""

    ids: pa.StringArray
    image: pa.StringArray  # resolved URI, null where the row has image_bytes
    has_bytes: np.ndarray  # bool
    width: np.ndarray
    height: np.ndarray
    has_width: np.ndarray
    has_height: np.ndarray
    ratio_num: np.ndarray
    ratio_den: np.ndarray
    has_ratio: np.ndarray
    offset_x: np.ndarray
    offset_y: np.ndarray
    has_offset_x: np.ndarray
    has_offset_y: np.ndarray
    anchor: pa.StringArray  # canonical name (as given where unknown)
    anchor_h: np.ndarray
    anchor_v: np.ndarray
    auto_crop: np.ndarray
    mode: pa.StringArray
    fast: np.ndarray
    output_format: pa.StringArray
    prompt: pa.StringArray
    seed: np.ndarray  # int64
    num_variants: np.ndarray  # int64 >= 1
    src_w: np.ndarray  # from image_width/height, valid where has_src
    src_h: np.ndarray
    has_src: np.ndarray
    has_subject: np.ndarray  # bool: the product's box, all four columns valid
    subject_x0: np.ndarray  # int64 source px
    subject_y0: np.ndarray
    subject_x1: np.ndarray
    subject_y1: np.ndarray
    backdrop_kind: pa.StringArray  # the manifest's analysis (flat | gradient | scene), or null
    backdrop_color: pa.StringArray
    plain_sides: np.ndarray  # int8 bit mask of plain sides, -1 where not given
    problem: np.ndarray  # object: the request's first problem, as a message, or None
    problem_code: np.ndarray  # int16: its code (invalid_request, a cap's code), 0 for none
    bad_id: np.ndarray  # bool: fails the id rule
    refused: np.ndarray  # object: why the source may not be read (image_access_denied), or None
    table: pa.Table  # the batch as read, oversized cells cut down (what may travel on)


def _ratio_column(table: pa.Table, n: int):
    col = column(table, "aspect_ratio")
    a, b = np.ones(n, np.int64), np.ones(n, np.int64)
    present, bad = is_present(col, n), np.zeros(n, bool)
    if col is None:
        return a, b, present, bad
    # few distinct ratios in a catalogue: parse each distinct value once
    enc = col if pa.types.is_dictionary(col.type) else col.dictionary_encode()
    idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    parsed = []
    for v in enc.dictionary.to_pylist():
        try:
            r = parse_ratio(v)
            parsed.append((r.numerator, r.denominator, 0))
        except ValueError:
            parsed.append((1, 1, 1))
    if parsed:
        lut = np.array(parsed, dtype=np.int64)
        a, b = lut[idx, 0], lut[idx, 1]
        bad = present & lut[idx, 2].astype(bool)
    return a, b, present, bad


def resolve_images(image: pa.StringArray, root: str | None) -> pa.StringArray:
    """Relative ``image`` values under ``input.image_root`` (absolute URIs/paths kept)."""
    if not root:
        return image
    absolute = pc.or_(pc.match_substring(image, "://"), pc.starts_with(image, "/"))
    joined = pc.binary_join_element_wise(root.rstrip("/"), pc.utf8_ltrim(image, "/"), "/")
    return pc.if_else(absolute, image, joined)


def _choose(idx: np.ndarray, names: tuple[str, ...], given: pa.StringArray) -> pa.StringArray:
    """Canonical names where known, the given text where not (for messages)."""
    canon = pa.array(names, pa.string()).take(pa.array(np.maximum(idx, 0)))
    return pc.if_else(pa.array(idx >= 0), canon, given)


def normalise(table: pa.Table, cfg: Config | PlanSections) -> Requests:
    """Apply defaults and type every request field; problems become messages (the first
    problem of a row wins, so the steps run in the contract's order)."""
    n = table.num_rows
    d = cfg.defaults
    p = Problems(n)
    table = caps(table, cfg.limits, p)
    ids, missing_id = _ids(table, p)
    fields = {
        **_source(table, cfg.input.image_root, p),
        **_targets(table, d, p),
        **_placement(table, d, p),
        **_generation(table, cfg, ids, p),
        **_source_size(table, p),
        **subject_fields(table, p),
        **backdrop_fields(table, p),
    }
    # the id rule: invalid_id is its own code, after invalid_request
    id_ok = pc.match_substring_regex(ids, ID_PATTERN).to_numpy(zero_copy_only=False)
    bad_id = ~np.asarray(id_ok, dtype=bool) & ~missing_id
    refused = source_rules(fields["image"], table, cfg.input.image_root)
    return Requests(
        ids=ids,
        problem=p.msg,
        problem_code=p.code,
        bad_id=bad_id,
        refused=refused,
        table=table,
        **fields,
    )


def _ids(table: pa.Table, p: Problems) -> tuple[pa.StringArray, np.ndarray]:
    ids, _ = str_column(table, "id", None, numbers_ok=True)
    missing = ~is_present(ids, table.num_rows)
    p.add(missing, "id is missing; every row needs an id")
    return ids.fill_null(""), missing


def _source(table: pa.Table, image_root: str | None, p: Problems) -> dict:
    """Exactly one of image / image_bytes."""
    n = table.num_rows
    image, image_bad = str_column(table, "image", None)
    has_bytes = is_present(column(table, "image_bytes"), n)
    given = np.asarray(pc.fill_null(pc.not_equal(image, ""), False), dtype=bool)
    has_image = is_present(image, n) & given
    p.add(image_bad, "image must be a string URI")
    p.add(has_image & has_bytes, "give either image or image_bytes, not both")
    p.add(~has_image & ~has_bytes, "no source image: set image (a URI) or image_bytes")
    image = pc.if_else(pa.array(has_image), image, pa.scalar(None, pa.string()))
    return {"image": resolve_images(image, image_root), "has_bytes": has_bytes}


def _targets(table: pa.Table, d, p: Problems) -> dict:
    """Row targets, as a group, override the defaults' targets."""
    width, has_w, bad_w = int_column(table, "width")
    height, has_h, bad_h = int_column(table, "height")
    ra, rb, has_r, bad_r = _ratio_column(table, table.num_rows)
    row_target = has_w | has_h | has_r
    p.add(bad_w, "width must be an integer number of pixels")
    p.add(bad_h, "height must be an integer number of pixels")
    if bad_r.any():
        raw = column(table, "aspect_ratio")

        def bad_ratio(i):
            return f"aspect_ratio {raw[i].as_py()!r} is not a positive 'W:H' or number between 1:10000 and 10000:1"

        p.add(bad_r, bad_ratio)
    use = ~row_target
    if d.aspect_ratio is not None:
        r = parse_ratio(d.aspect_ratio)
        ra, rb = np.where(use, r.numerator, ra), np.where(use, r.denominator, rb)
        has_r = has_r | use
    elif d.width is not None:
        width, height = np.where(use, d.width, width), np.where(use, d.height, height)
        has_w, has_h = has_w | use, has_h | use
    p.add(has_w & has_h & has_r, "give either width+height or aspect_ratio, not both")
    p.add((has_w ^ has_h) & ~has_r, "width and height go together: give both, or an aspect_ratio")
    p.add(
        ~has_w & ~has_h & ~has_r,
        "no target: give width+height or aspect_ratio (or set one in defaults:)",
    )
    return {
        "width": width,
        "height": height,
        "has_width": has_w,
        "has_height": has_h,
        "ratio_num": ra,
        "ratio_den": rb,
        "has_ratio": has_r,
    }


def _placement(table: pa.Table, d, p: Problems) -> dict:
    ox, has_ox, bad_ox = int_column(table, "reference_offset_x")
    oy, has_oy, bad_oy = int_column(table, "reference_offset_y")
    p.add(bad_ox, "reference_offset_x must be an integer (pixels; may be negative)")
    p.add(bad_oy, "reference_offset_y must be an integer (pixels; may be negative)")
    anchor, anchor_bad = str_column(table, "anchor", d.anchor)
    anchor_idx = enum_column(anchor, ANCHORS)
    p.add(
        anchor_bad | (anchor_idx < 0),
        lambda i: f"anchor {anchor[i].as_py()!r} is not one of {', '.join(ANCHORS)}",
    )
    axes = np.array([ANCHOR_AXES[a] for a in ANCHORS], dtype=np.int8)[np.maximum(anchor_idx, 0)]
    auto_crop, bad_crop = bool_column(table, "auto_crop", d.auto_crop)
    p.add(bad_crop, "auto_crop must be true or false")
    return {
        "offset_x": ox,
        "offset_y": oy,
        "has_offset_x": has_ox,
        "has_offset_y": has_oy,
        "anchor": _choose(anchor_idx, ANCHORS, anchor),
        "anchor_h": axes[:, 0],
        "anchor_v": axes[:, 1],
        "auto_crop": auto_crop,
    }


def _generation(
    table: pa.Table, cfg: Config | PlanSections, ids: pa.StringArray, p: Problems
) -> dict:
    """Mode, format, prompt, seed, variants."""
    d = cfg.defaults
    mode, mode_bad = str_column(table, "mode", d.mode)
    mode_idx = enum_column(mode, MODES)
    p.add(mode_bad | (mode_idx < 0), lambda i: f"mode {mode[i].as_py()!r} is not 'high' or 'fast'")
    fmt, fmt_bad = str_column(table, "output_format", d.output_format)
    fmt_idx = enum_column(fmt, FORMATS, FORMAT_ALIASES)
    p.add(
        fmt_bad | (fmt_idx < 0),
        lambda i: f"output_format {fmt[i].as_py()!r} is not png, jpeg or webp",
    )
    prompt, prompt_bad = str_column(table, "prompt", d.prompt)
    p.add(prompt_bad, "prompt must be a string")
    seed, has_seed, bad_seed = int_column(table, "seed")
    p.add(bad_seed | (has_seed & (seed < 0)), "seed must be a non-negative integer")
    if not has_seed.all():
        seed = np.where(has_seed, seed, derive_seeds(cfg.runtime.seed, ids))
    nv, has_nv, bad_nv = int_column(table, "num_variants")
    in_range = (nv >= 1) & (nv <= 16)
    p.add(bad_nv | (has_nv & ~in_range), "num_variants must be an integer from 1 to 16")
    return {
        "mode": _choose(mode_idx, MODES, mode),
        "fast": mode_idx == 1,
        "output_format": _choose(fmt_idx, FORMATS, fmt),
        "prompt": prompt,
        "seed": seed,
        "num_variants": np.where(has_nv & ~bad_nv & in_range, nv, d.num_variants),
    }


def _source_size(table: pa.Table, p: Problems) -> dict:
    """The source's size, when the manifest knows it."""
    sw, has_sw, bad_sw = int_column(table, "image_width")
    sh, has_sh, bad_sh = int_column(table, "image_height")
    p.add(
        bad_sw | (has_sw & (sw <= 0)),
        "image_width must be a positive integer (or null to read it from the image)",
    )
    p.add(
        bad_sh | (has_sh & (sh <= 0)),
        "image_height must be a positive integer (or null to read it from the image)",
    )
    return {"src_w": sw, "src_h": sh, "has_src": has_sw & has_sh & (sw > 0) & (sh > 0)}
