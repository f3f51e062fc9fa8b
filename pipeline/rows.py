"""Manifest rows -> typed request columns, with defaults applied.

Vectorised over a pyarrow Table. Every row gets a value for every request field;
a value that is missing or ill-typed marks the row ``invalid_request`` with a
message naming the column, never an exception. Slow per-value parsing only runs
for columns stored with an unexpected type (e.g. numbers written as strings).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .config import ANCHORS, Config, parse_ratio
from .geometry import ANCHOR_AXES

MODES = ("high", "fast")
FORMATS = ("png", "jpeg", "webp")
FORMAT_ALIASES = {"jpg": "jpeg"}
ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$"


class _Problems:
    """The first problem per row, as a message; None where the row is fine."""

    def __init__(self, n: int):
        self.msg = np.full(n, None, dtype=object)

    def add(self, bad: np.ndarray, text) -> None:
        hit = np.flatnonzero(bad & (self.msg == None))  # noqa: E711 (elementwise)
        for i in hit:
            self.msg[i] = text(i) if callable(text) else text

    @property
    def any(self) -> np.ndarray:
        return self.msg != None  # noqa: E711


def _column(table: pa.Table, name: str):
    if name not in table.column_names:
        return None
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def int_column(table: pa.Table, name: str):
    """-> (values int64, present bool, bad bool). Integral floats and numeric strings pass."""
    n = table.num_rows
    col = _column(table, name)
    if col is None or pa.types.is_null(col.type):
        return np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool)
    present = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    t = col.type
    if pa.types.is_integer(t):
        return col.fill_null(0).to_numpy().astype(np.int64), present, np.zeros(n, bool)
    if pa.types.is_floating(t):
        v = col.fill_null(0).to_numpy().astype(np.float64)
        ok = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 2**62)
        return np.where(ok, v, 0).astype(np.int64), present, present & ~ok
    vals = np.zeros(n, np.int64)
    bad = np.zeros(n, bool)
    for i, v in enumerate(col.to_pylist()):
        if v is None:
            continue
        try:
            if isinstance(v, bool):
                raise ValueError
            f = float(v) if not isinstance(v, int) else v
            if f != int(f):
                raise ValueError
            vals[i] = int(f)
        except (ValueError, TypeError, OverflowError):
            bad[i] = True
    return vals, present, bad


def bool_column(table: pa.Table, name: str, default: bool):
    n = table.num_rows
    col = _column(table, name)
    if col is None or pa.types.is_null(col.type):
        return np.full(n, default), np.zeros(n, bool)
    if pa.types.is_boolean(col.type):
        return np.asarray(col.fill_null(default).to_numpy(zero_copy_only=False), dtype=bool), np.zeros(n, bool)
    vals, bad = np.full(n, default), np.zeros(n, bool)
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    for i, v in enumerate(col.to_pylist()):
        if v is None:
            continue
        w = words.get(str(v).strip().lower())
        if w is None:
            bad[i] = True
        else:
            vals[i] = w
    return vals, bad


def str_column(table: pa.Table, name: str, default: str | None):
    """-> (object array of str or default, bad bool) — non-string values are bad."""
    n = table.num_rows
    col = _column(table, name)
    if col is None or pa.types.is_null(col.type):
        return np.full(n, default, dtype=object), np.zeros(n, bool)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        vals = np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
        return np.where(vals == None, default, vals), np.zeros(n, bool)  # noqa: E711
    if pa.types.is_dictionary(col.type):
        return str_column(pa.table({name: col.cast(col.type.value_type)}), name, default)
    # numbers where strings are expected: ill-typed, unless it is the id (ints are fine ids)
    vals = np.asarray(col.to_pylist(), dtype=object)
    missing = vals == None  # noqa: E711
    return np.where(missing, default, vals.astype(str)), ~missing & (name != "id")


def enum_column(values: np.ndarray, allowed: tuple[str, ...], aliases: dict | None = None):
    """Strings -> index into ``allowed`` (-1 = unknown), case-insensitive."""
    lut = {a: i for i, a in enumerate(allowed)}
    for k, v in (aliases or {}).items():
        lut[k] = lut[v]
    uniq, inv = np.unique(np.asarray([str(v).strip().lower() for v in values], dtype=object).astype(str),
                          return_inverse=True) if len(values) else (np.array([]), np.array([], int))
    codes = np.array([lut.get(u, -1) for u in uniq], dtype=np.int64)
    return codes[inv] if len(values) else np.zeros(0, np.int64)


def derive_seed(run_seed: int, row_id: str) -> int:
    """Stable 63-bit seed from (run seed, id): same row, same seed, in any batch."""
    h = hashlib.blake2b(f"{run_seed}\x1f{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


@dataclass
class Requests:
    """Typed request columns for a batch of manifest rows (all length n)."""

    ids: np.ndarray             # object str
    image: np.ndarray           # object: resolved URI or None
    has_bytes: np.ndarray       # bool
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
    anchor: np.ndarray          # object str
    anchor_h: np.ndarray
    anchor_v: np.ndarray
    auto_crop: np.ndarray
    mode: np.ndarray            # object str ('high' where invalid)
    fast: np.ndarray
    output_format: np.ndarray   # object str
    prompt: np.ndarray          # object str
    seed: np.ndarray            # int64
    src_w: np.ndarray           # from image_width/height, valid where has_src
    src_h: np.ndarray
    has_src: np.ndarray
    problem: np.ndarray         # object: invalid_request message or None
    bad_id: np.ndarray          # bool: fails the id rule


def _ratio_column(table: pa.Table, n: int):
    col = _column(table, "aspect_ratio")
    a, b = np.ones(n, np.int64), np.ones(n, np.int64)
    present, bad = np.zeros(n, bool), np.zeros(n, bool)
    if col is None or pa.types.is_null(col.type):
        return a, b, present, bad
    # few distinct ratios in a catalogue: parse each distinct value once
    enc = col.dictionary_encode() if not pa.types.is_dictionary(col.type) else col
    idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    present = ~np.asarray(enc.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    parsed = []
    for v in enc.dictionary.to_pylist():
        try:
            r = parse_ratio(v)
            parsed.append((r.numerator, r.denominator, False))
        except ValueError:
            parsed.append((1, 1, True))
    if parsed:
        lut = np.array(parsed, dtype=np.int64)
        safe = np.where(present, idx, 0)
        a, b = lut[safe, 0], lut[safe, 1]
        bad = present & lut[safe, 2].astype(bool)
    return a, b, present, bad


def normalise(table: pa.Table, cfg: Config) -> Requests:
    """Apply defaults and type every request field; problems become messages."""
    n = table.num_rows
    d = cfg.defaults
    p = _Problems(n)

    ids, id_bad_type = str_column(table, "id", None)
    missing_id = ids == None  # noqa: E711
    ids = np.where(missing_id, "", ids)
    p.add(missing_id, "id is missing; every row needs an id")

    # --- source: exactly one of image / image_bytes
    image, image_bad = str_column(table, "image", None)
    bcol = _column(table, "image_bytes")
    has_bytes = (np.zeros(n, bool) if bcol is None or pa.types.is_null(bcol.type)
                 else ~np.asarray(bcol.is_null().to_numpy(zero_copy_only=False), dtype=bool))
    has_image = (image != None) & (image != "")  # noqa: E711
    p.add(image_bad, "image must be a string URI")
    p.add(has_image & has_bytes, "give either image or image_bytes, not both")
    p.add(~has_image & ~has_bytes, "no source image: set image (a URI) or image_bytes")
    root = cfg.input.image_root
    image = np.array([storage.resolve(v, root) if isinstance(v, str) and v else None for v in image],
                     dtype=object) if n else image

    # --- targets: row targets, as a group, override the defaults' targets
    width, has_w, bad_w = int_column(table, "width")
    height, has_h, bad_h = int_column(table, "height")
    ra, rb, has_r, bad_r = _ratio_column(table, n)
    row_target = has_w | has_h | has_r | bad_w | bad_h | bad_r
    p.add(bad_w, "width must be an integer number of pixels")
    p.add(bad_h, "height must be an integer number of pixels")
    if bad_r.any():
        raw = _column(table, "aspect_ratio").to_pylist()
        p.add(bad_r, lambda i: f"aspect_ratio {raw[i]!r} is not a positive 'W:H' or number between 1:10000 and 10000:1")
    if d.aspect_ratio is not None:
        r = parse_ratio(d.aspect_ratio)
        use = ~row_target
        ra, rb = np.where(use, r.numerator, ra), np.where(use, r.denominator, rb)
        has_r = has_r | use
    elif d.width is not None:
        use = ~row_target
        width, height = np.where(use, d.width, width), np.where(use, d.height, height)
        has_w, has_h = has_w | use, has_h | use
    p.add(has_w & has_h & has_r, "give either width+height or aspect_ratio, not both")
    p.add((has_w ^ has_h) & ~has_r, "width and height go together: give both, or an aspect_ratio")
    p.add(~has_w & ~has_h & ~has_r, "no target: give width+height or aspect_ratio (or set one in defaults:)")

    # --- placement
    ox, has_ox, bad_ox = int_column(table, "reference_offset_x")
    oy, has_oy, bad_oy = int_column(table, "reference_offset_y")
    p.add(bad_ox, "reference_offset_x must be an integer (pixels; may be negative)")
    p.add(bad_oy, "reference_offset_y must be an integer (pixels; may be negative)")
    anchor, anchor_bad_t = str_column(table, "anchor", d.anchor)
    anchor_idx = enum_column(anchor, ANCHORS)
    p.add(anchor_bad_t | (anchor_idx < 0), lambda i: f"anchor {anchor[i]!r} is not one of {', '.join(ANCHORS)}")
    axes = np.array([ANCHOR_AXES[a] for a in ANCHORS], dtype=np.int8)
    safe_anchor = np.where(anchor_idx < 0, 0, anchor_idx)
    auto_crop, bad_crop = bool_column(table, "auto_crop", d.auto_crop)
    p.add(bad_crop, "auto_crop must be true or false")

    # --- mode, format, prompt, seed
    mode, mode_bad_t = str_column(table, "mode", d.mode)
    mode_idx = enum_column(mode, MODES)
    p.add(mode_bad_t | (mode_idx < 0), lambda i: f"mode {mode[i]!r} is not 'high' or 'fast'")
    fmt, fmt_bad_t = str_column(table, "output_format", d.output_format)
    fmt_idx = enum_column(fmt, FORMATS, FORMAT_ALIASES)
    p.add(fmt_bad_t | (fmt_idx < 0), lambda i: f"output_format {fmt[i]!r} is not png, jpeg or webp")
    prompt, prompt_bad = str_column(table, "prompt", d.prompt)
    p.add(prompt_bad, "prompt must be a string")
    seed, has_seed, bad_seed = int_column(table, "seed")
    p.add(bad_seed | (has_seed & ((seed < 0))), "seed must be a non-negative integer")
    run_seed = cfg.runtime.seed
    seed = np.array([s if hs else derive_seed(run_seed, i) for s, hs, i in zip(seed.tolist(), has_seed, ids)],
                    dtype=np.int64) if n else seed

    # --- known source size
    sw, has_sw, bad_sw = int_column(table, "image_width")
    sh, has_sh, bad_sh = int_column(table, "image_height")
    p.add(bad_sw | (has_sw & (sw <= 0)), "image_width must be a positive integer (or null to read it from the image)")
    p.add(bad_sh | (has_sh & (sh <= 0)), "image_height must be a positive integer (or null to read it from the image)")

    # --- id rule (invalid_id is its own code, after invalid_request)
    id_ok = (np.asarray(pc.match_substring_regex(pa.array(ids.tolist(), pa.string()), ID_PATTERN)
                        .to_numpy(zero_copy_only=False), dtype=bool) if n else np.zeros(0, bool))
    bad_id = ~id_ok & ~missing_id & ~id_bad_type

    modes = np.array(MODES, dtype=object)
    fmts = np.array(FORMATS, dtype=object)
    return Requests(
        ids=ids, image=image, has_bytes=has_bytes,
        width=width, height=height, has_width=has_w, has_height=has_h,
        ratio_num=ra, ratio_den=rb, has_ratio=has_r,
        offset_x=ox, offset_y=oy, has_offset_x=has_ox, has_offset_y=has_oy,
        anchor=np.where(anchor_idx < 0, anchor, np.array(ANCHORS, dtype=object)[safe_anchor]),
        anchor_h=axes[safe_anchor, 0], anchor_v=axes[safe_anchor, 1], auto_crop=auto_crop,
        mode=np.where(mode_idx < 0, mode, modes[np.maximum(mode_idx, 0)]), fast=mode_idx == 1,
        output_format=np.where(fmt_idx < 0, fmt, fmts[np.maximum(fmt_idx, 0)]),
        prompt=prompt, seed=seed,
        src_w=sw, src_h=sh, has_src=has_sw & has_sh & (sw > 0) & (sh > 0),
        problem=p.msg, bad_id=bad_id,
    )
