"""The planning stage: manifest rows -> placements, statuses and reject codes.

``PlanStage`` is a small typed stage: setup in ``__init__``, a pure
``__call__(batch: pa.Table) -> pa.Table`` usable as a Ray Data ``map_batches``
function or called directly (``outpaint plan`` does the latter).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import codes
from ..codes import CODE
from ..config import Config
from ..io import headers
from ..io.manifest import ROW_INDEX
from ..parallel import map_chunks
from .flops import FLUX1_CONFIG, transformer_flops
from .geometry import GRID, GeometryInput, SizingRules, plan_geometry
from .hashing import request_hashes
from .messages import geometry_messages, id_message
from .rows import normalise

# Plan columns, in order (docs/contracts.md metadata names). Passthrough columns follow.
PLAN_SCHEMA = pa.schema([
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
    (ROW_INDEX, pa.int64()),
])
GEOMETRY_COLUMNS = [f.name for f in PLAN_SCHEMA][7:22]


def plan_grid(cfg: Config) -> int:
    """Fast mode's alignment grid: the checkpoint's own for flux-fill (read from its VAE
    config, no weights), FLUX.1's 16 otherwise."""
    if cfg.model.backend != "flux-fill":
        return GRID
    from ..backends.flux import model_grid

    return model_grid(cfg.model.path, cfg.model.storage_options)


def duplicate_first_rows(ids, rows) -> dict[str, int]:
    """Ids that occur more than once -> the manifest row of their first occurrence."""
    arr = pa.array(list(ids) if not isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids, pa.string())
    enc = arr.dictionary_encode() if isinstance(arr, pa.Array) else arr.combine_chunks().dictionary_encode()
    idx = enc.indices.to_numpy(zero_copy_only=False)
    counts = np.bincount(idx, minlength=len(enc.dictionary))
    dup_codes = np.flatnonzero(counts > 1)
    if not len(dup_codes):
        return {}
    rows = np.asarray(rows)
    sel = np.isin(idx, dup_codes)
    first: dict[str, int] = {}
    names = enc.dictionary.to_pylist()
    for c, r in sorted(zip(idx[sel].tolist(), rows[sel].tolist()), key=lambda t: (t[0], t[1])):
        first.setdefault(names[c], r)
    return first


class PlanStage:
    """Plans a batch of manifest rows (a ``pa.Table`` with ``manifest_row``).

    ``duplicates`` maps each id that occurs more than once in the whole manifest to
    the row of its first occurrence (``duplicate_first_rows``): duplicates are a
    property of the whole manifest, so they are found once, before batching.
    ``identify=True`` (runs, not dry runs) also fetches each source's identity
    (size + ETag/mtime, or a digest of inline bytes) and adds ``request_hash``.
    """

    def __init__(self, cfg: Config, duplicates: dict[str, int] | None = None, identify: bool = False):
        self.cfg = cfg
        self.duplicates = duplicates or {}
        self.identify = identify
        self.rules = SizingRules(
            max_pixels=cfg.sizing.max_pixels,
            fit_contain=cfg.sizing.fit == "contain",
            fill_fraction=cfg.sizing.fill_fraction,
            allow_upscale=cfg.sizing.allow_upscale,
            grid=plan_grid(cfg),
        )
        self.limits = headers.SourceLimits(cfg.limits.max_source_pixels, cfg.limits.max_source_bytes)
        self.passthrough = list(cfg.output.passthrough_columns)
        self._dup_keys = pa.array(list(self.duplicates), pa.string())

    def __call__(self, batch: pa.Table) -> pa.Table:
        if isinstance(batch, dict):  # Ray may hand a dict of columns
            batch = pa.table(batch)
        n = batch.num_rows
        req = normalise(batch, self.cfg)
        rows = (batch.column(ROW_INDEX).to_numpy() if ROW_INDEX in batch.column_names
                else np.arange(n, dtype=np.int64))

        request_code = np.where(req.problem != None, CODE["invalid_request"], 0).astype(np.int16)  # noqa: E711
        id_code = np.zeros(n, np.int16)
        id_msg = np.full(n, None, dtype=object)
        for i in np.flatnonzero(req.bad_id):
            id_code[i] = CODE["invalid_id"]
            id_msg[i] = id_message("invalid_id", req.ids[i].as_py(), None)
        if self.duplicates:
            maybe = np.asarray(pc.is_in(req.ids, value_set=self._dup_keys).to_numpy(zero_copy_only=False), dtype=bool)
            for i in np.flatnonzero(maybe & (id_code == 0)):
                rid = req.ids[i].as_py()
                first = self.duplicates[rid]
                if rows[i] != first:
                    id_code[i] = CODE["duplicate_id"]
                    id_msg[i] = id_message("duplicate_id", rid, first)

        src_w, src_h = req.src_w.copy(), req.src_h.copy()
        image_code = np.zeros(n, np.int16)
        image_msg = np.full(n, None, dtype=object)
        # known sizes: the source-pixel limit applies without touching the image
        over = req.has_src & (src_w * src_h > self.limits.max_source_pixels)
        for i in np.flatnonzero(over):
            image_code[i] = CODE["image_too_large"]
            image_msg[i] = (f"source is {src_w[i]}×{src_h[i]} = {src_w[i] * src_h[i]:,} px (image_width/height), "
                            f"over limits.max_source_pixels = {self.limits.max_source_pixels:,}")
        usable = (request_code == 0) & (id_code == 0) & (image_code == 0)
        identity = np.full(n, None, dtype=object)
        # sizes unknown: read headers (which also give the source's identity)
        self._probe(batch, req, usable & ~req.has_src, True, src_w, src_h, image_code, image_msg, identity)

        def geometry():
            return plan_geometry(GeometryInput(
                src_w=src_w, src_h=src_h, width=req.width, height=req.height,
                has_width=req.has_width, has_height=req.has_height,
                ratio_num=req.ratio_num, ratio_den=req.ratio_den, has_ratio=req.has_ratio,
                offset_x=req.offset_x, offset_y=req.offset_y,
                has_offset_x=req.has_offset_x, has_offset_y=req.has_offset_y,
                anchor_h=req.anchor_h, anchor_v=req.anchor_v, auto_crop=req.auto_crop, fast=req.fast,
                request_code=request_code, id_code=id_code, image_code=image_code,
            ), self.rules)

        out = geometry()
        if self.identify:
            # runs: the identity of rows that passed (size + ETag/mtime, a digest of inline
            # bytes); rejected rows never touch their image
            need = (out["code"] == 0) & (identity == None)  # noqa: E711 - elementwise
            if self._probe(batch, req, need, False, src_w, src_h, image_code, image_msg, identity):
                out = geometry()  # an image that vanished: its code comes before geometry
        table = self._table(batch, req, out, rows, src_w, src_h, id_msg, image_msg)
        if self.identify:
            table = table.append_column("request_hash", request_hashes(table, identity, self.cfg))
            if "image_bytes" in batch.column_names:  # the loader needs them
                table = table.append_column("image_bytes", batch.column("image_bytes").cast(pa.large_binary()))
        return table

    def _probe(self, batch, req, need, want_header: bool, src_w, src_h, image_code, image_msg, identity) -> bool:
        """Probe the rows in ``need`` (in parallel); fills sizes (headers), identities and
        image codes in place. Returns whether any row got an image code."""
        if not need.any():
            return False
        todo = np.flatnonzero(need)
        images = req.image.take(pa.array(todo)).to_pylist()
        blobs = None
        if req.has_bytes[todo].any():
            col = batch.column("image_bytes")
            blobs = [col[int(i)].as_py() if req.has_bytes[i] else None for i in todo]
        hw, hh, hc, hm, hid = headers.probe_many(images, blobs, np.full(len(todo), want_header),
                                                 self.cfg.input.storage_options, self.limits,
                                                 self.cfg.input.header_threads)
        if want_header:
            src_w[todo], src_h[todo] = hw, hh
        identity[todo] = hid
        bad = np.flatnonzero(hc != None)  # noqa: E711
        for j in bad:
            image_code[todo[j]] = CODE[hc[j]]
            image_msg[todo[j]] = hm[j]
        return bool(len(bad))

    def _table(self, batch, req, out, rows, src_w, src_h, id_msg, image_msg) -> pa.Table:
        n = batch.num_rows
        code = out["code"]
        # messages: one Arrow piece per source, gathered into row order with one take
        pieces, where = [], []
        sparse = ((req.problem, code == CODE["invalid_request"]),
                  (id_msg, (code == CODE["invalid_id"]) | (code == CODE["duplicate_id"])),
                  (image_msg, np.isin(code, [CODE[c] for c in codes.IMAGE_CODES])))
        for texts, mask in sparse:
            idx = np.flatnonzero(mask)
            pieces.append(pa.array(texts[idx], pa.string()))
            where.append(idx)
        for c in codes.GEOMETRY_CODES:
            idx = np.flatnonzero(code == CODE[c])
            if len(idx):
                pieces.append(geometry_messages(c, out, idx, self.rules.max_pixels))
                where.append(idx)
        total = sum(len(p) for p in pieces)
        order = np.full(n, total, dtype=np.int64)  # -> the trailing null
        order[np.concatenate(where)] = np.arange(total)
        msg = pa.concat_arrays(pieces + [pa.nulls(1, pa.string())]).take(pa.array(order))
        valid = out["geometry_valid"]
        known_src = valid | (src_w > 0)
        steps = np.where(req.fast, self.cfg.model.steps_fast, self.cfg.model.steps)
        cols = {
            "id": req.ids,
            "status": codes.status_array(code),
            "error_code": codes.code_array(code),
            "error_message": msg,
            "image": req.image,
            "source_width": pa.array(src_w, mask=~known_src),
            "source_height": pa.array(src_h, mask=~known_src),
            **{name: pa.array(out[name], mask=~valid) for name in GEOMETRY_COLUMNS},
            "mode": req.mode,
            "output_format": req.output_format,
            "anchor": req.anchor,
            "auto_crop": pa.array(req.auto_crop),
            "generated": pa.array(out["generated"]),
            "seed": pa.array(req.seed),
            "num_variants": pa.array(req.num_variants.astype(np.int64)),
            "prompt": req.prompt,
            "steps": pa.array(np.where(out["generated"], steps, 0).astype(np.int64)),
            ROW_INDEX: pa.array(rows.astype(np.int64)),
        }
        table = pa.table(cols, schema=PLAN_SCHEMA)
        for c in self.passthrough:
            table = table.append_column(c, batch.column(c))
        return table


def plan_manifest(cfg: Config, table: pa.Table, batch_rows: int = 131_072, threads: int | None = None) -> pa.Table:
    """Plan a whole manifest table (dry run / driver-side planning): batches of rows
    on a thread pool, results in manifest order."""
    stage = PlanStage(cfg, duplicate_first_rows(table.column("id").cast(pa.string()), table.column(ROW_INDEX)))
    parts = map_chunks(lambda s, e: stage(table.slice(s, e - s)), table.num_rows, batch_rows, threads)
    return pa.concat_tables(parts)


def summarise(plan: pa.Table, cfg: Config) -> dict:
    """Counts per status and code, output megapixels, and an estimate of GPU cost."""
    status = plan.column("status").to_numpy(zero_copy_only=False)
    code = plan.column("error_code").to_numpy(zero_copy_only=False)
    ok = status == codes.OK
    by_status = {s: int((status == s).sum()) for s in (codes.OK, codes.REJECTED, codes.FAILED)}
    by_code: dict[str, int] = {}
    for c in code[~ok]:
        by_code[c] = by_code.get(c, 0) + 1
    W = plan.column("canvas_width").fill_null(0).to_numpy()
    H = plan.column("canvas_height").fill_null(0).to_numpy()
    AW = plan.column("aligned_width").fill_null(0).to_numpy()
    AH = plan.column("aligned_height").fill_null(0).to_numpy()
    gen = plan.column("generated").to_numpy(zero_copy_only=False) & ok
    steps = plan.column("steps").to_numpy()
    fast = plan.column("mode").to_numpy(zero_copy_only=False) == "fast"
    # What the model generates: the aligned canvas rounded up to model.optimize.bucket_px,
    # priced per step relative to a 1024x1024 canvas by FLUX.1's FLOP count (attention's
    # quadratic share makes a 4 MP canvas cost 5.6x a 1 MP one, not 4x).
    b = cfg.model.optimize.bucket_px
    BW, BH = -(-AW // b) * b, -(-AH // b) * b
    txt = cfg.model.max_sequence_length
    rel = transformer_flops(FLUX1_CONFIG, (BW * BH / 256.0), txt) / transformer_flops(FLUX1_CONFIG, 4096, txt)
    gpu_s = float((steps * rel * cfg.plan.seconds_per_step_at_1mp)[gen].sum())
    uniq, counts = np.unique(np.stack([BW[gen], BH[gen], fast[gen].astype(np.int64)], axis=1), axis=0,
                             return_counts=True)
    shapes = {f"{w}x{h} {'fast' if f else 'high'}": int(c) for (w, h, f), c in zip(uniq, counts)}
    # rows whose canvas is mostly invented: the reference is small for it
    vis = ((plan.column("visible_x1").fill_null(0).to_numpy() - plan.column("visible_x0").fill_null(0).to_numpy())
           * (plan.column("visible_y1").fill_null(0).to_numpy() - plan.column("visible_y0").fill_null(0).to_numpy()))
    share = 1.0 - vis / np.maximum(W * H, 1)
    mostly = gen & (share > cfg.plan.warn_generated_share)
    return {
        "rows": int(plan.num_rows),
        "backend": cfg.model.backend,
        "mostly_generated": int(mostly.sum()),
        "warn_generated_share": cfg.plan.warn_generated_share,
        "max_generated_share": round(float(share[gen].max()), 4) if gen.any() else 0.0,
        "by_status": by_status,
        "by_code": dict(sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0]))),
        "output_megapixels": round(float((W * H)[ok].sum()) / 1e6, 3),
        "generated": {"high": int((gen & ~fast).sum()), "fast": int((gen & fast).sum())},
        "passthrough_ok": int((ok & ~gen).sum()),
        "generated_shapes": len(shapes),
        "top_generated_shapes": dict(sorted(shapes.items(), key=lambda kv: (-kv[1], kv[0]))[:5]),
        "max_shapes": cfg.model.optimize.max_shapes,
        "estimated_gpu_seconds": round(gpu_s, 1),
        "estimate_basis": f"{cfg.plan.seconds_per_step_at_1mp} s per step at 1024x1024 (plan.seconds_per_step_at_1mp)",
    }


def format_summary(s: dict) -> str:
    lines = [f"rows: {s['rows']:,}"]
    for k, v in s["by_status"].items():
        lines.append(f"  {k:<10} {v:>10,}")
    if s["by_code"]:
        lines.append("by code:")
        for k, v in s["by_code"].items():
            lines.append(f"  {k:<26} {v:>10,}")
    g = s["generated"]
    lines.append(f"output: {s['output_megapixels']:,} MP; to generate: {g['high']:,} high + {g['fast']:,} fast; "
                 f"{s['passthrough_ok']:,} need no generation")
    if s["mostly_generated"]:
        lines.append(f"warning: {s['mostly_generated']:,} rows would be more than {s['warn_generated_share']:.0%} "
                     f"generated (up to {s['max_generated_share']:.0%}): their reference is small for the canvas. "
                     "To fill the canvas with the photo instead, set sizing.fit: contain and sizing.allow_upscale: "
                     "true (the reference is scaled to sizing.fill_fraction of each side), or ask for a smaller "
                     "canvas; plan.warn_generated_share sets this threshold")
    if s["backend"] != "flux-fill":  # compiled shapes and GPU time are the diffusion model's
        return "\n".join(lines)
    if s["generated_shapes"]:
        top = ", ".join(f"{k} ({v:,})" for k, v in s["top_generated_shapes"].items())
        lines.append(f"generated shapes: {s['generated_shapes']:,} (most rows: {top})")
        if s["generated_shapes"] > s["max_shapes"]:
            lines.append(f"  more shapes than model.optimize.max_shapes ({s['max_shapes']}): compiled models "
                         "fall back to dynamic shapes; a larger model.optimize.bucket_px (64, 128) groups them")
    hours = s["estimated_gpu_seconds"] / 3600
    lines.append(f"estimated GPU time: {s['estimated_gpu_seconds']:,} s ({hours:,.2f} GPU-hours) at {s['estimate_basis']}")
    return "\n".join(lines)
