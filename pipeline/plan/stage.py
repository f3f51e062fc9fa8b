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
from ..io import headers, sources
from ..io.done import Prior, key_fingerprints
from ..io.manifest import ROW_INDEX
from ..parallel import map_chunks
from .flops import FLUX1_CONFIG, transformer_flops
from .geometry import GRID, GeometryInput, SizingRules, plan_geometry
from .hashing import request_hashes
from .messages import geometry_messages, id_message
from .rows import normalise

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
        (ROW_INDEX, pa.int64()),
    ]
)
GEOMETRY_COLUMNS = [f.name for f in PLAN_SCHEMA][7:22]


def plan_grid(cfg: Config) -> int:
    """Fast mode's alignment grid: the checkpoint's own for flux-fill (read from its VAE
    config, no weights), FLUX.1's 16 otherwise."""
    if cfg.model.backend != "flux-fill":
        return GRID
    from ..backends.flux import model_grid

    return model_grid(cfg.model.path, cfg.model.storage_options)


def duplicate_first_rows(ids, rows) -> dict[str, int]:
    """Ids that occur more than once -> the manifest row of their first occurrence. By
    128-bit fingerprints sorted with the rows (fixed-width arrays, ~40 bytes a row while
    it runs); only the duplicated ids become Python strings."""
    arr = (
        pa.array(list(ids), pa.string())
        if not isinstance(ids, (pa.Array, pa.ChunkedArray))
        else ids
    )
    n = len(arr)
    if n < 2:
        return {}
    rows = np.asarray(rows, dtype=np.int64)
    hi, lo = key_fingerprints(arr)
    order = np.lexsort((rows, lo, hi))  # by id, then manifest row: a group's first is its earliest
    same = np.ones(n - 1, bool)
    for key in (hi, lo):
        v = key[order]
        same &= v[1:] == v[:-1]
        del v
    del hi, lo
    if not same.any():
        return {}
    starts = np.flatnonzero(np.r_[True, ~same] & (np.r_[same, False] | np.r_[False, same]))
    at = order[starts]
    names = arr.take(pa.array(at)).to_pylist()
    return dict(zip(names, rows[at].tolist()))


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
)


def _local(image: pa.Array) -> np.ndarray:
    """Rows whose source is a local file (a stat or a header read costs no request)."""
    remote = pc.fill_null(pc.match_substring_regex(image, r"^[a-zA-Z][a-zA-Z0-9+.-]*://"), False)
    local_uri = pc.fill_null(pc.starts_with(image, "file://"), False)
    return np.asarray(pc.or_(pc.invert(remote), local_uri).to_numpy(zero_copy_only=False), bool)


def _versions(batch: pa.Table):
    if "image_version" not in batch.column_names:
        return None
    col = batch.column("image_version").combine_chunks()
    return None if pa.types.is_null(col.type) else col.cast(pa.string())


def _requests(batch: pa.Table, rows: np.ndarray) -> pa.Array:
    """JSON of the manifest's request values for ``rows`` (null elsewhere)."""
    import json

    out = np.full(batch.num_rows, None, dtype=object)
    idx = np.flatnonzero(rows)
    if len(idx):
        cols = [c for c in REQUEST_COLUMNS if c in batch.column_names]
        sub = batch.select(cols).take(pa.array(idx)).to_pylist()
        out[idx] = [json.dumps(r, default=str) for r in sub]
    return pa.array(out, pa.string())


class PlanStage:
    """Plans a batch of manifest rows (a ``pa.Table`` with ``manifest_row``).

    ``duplicates`` maps each id that occurs more than once in the whole manifest to
    the row of its first occurrence (``duplicate_first_rows``): duplicates are a
    property of the whole manifest, so they are found once, before batching.
    ``identify=True`` (runs, not dry runs) also learns each source's identity (size +
    ETag/mtime, a digest of inline bytes, or the manifest's ``image_version``) and adds
    ``source_identity`` and ``request_hash``, at the fewest requests: ``prior`` (what
    earlier runs left for these ids) gives sizes the manifest lacks, and only sources
    that may be done already are looked up remotely (listings where cheaper, else a HEAD
    each). A remote source whose size is still unknown is planned by the load stage,
    from the one GET that loads it (``REQUEST`` keeps what it needs).
    """

    def __init__(
        self,
        cfg: Config,
        duplicates: dict[str, int] | None = None,
        identify: bool = False,
        prior: Prior | None = None,
    ):
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
        self.limits = headers.SourceLimits(
            cfg.limits.max_source_pixels, cfg.limits.max_source_bytes
        )
        self.passthrough = list(cfg.output.passthrough_columns)
        self._dup_keys = pa.array(list(self.duplicates), pa.string())
        self.prior = prior if prior is not None else Prior.empty()
        self.stats = {"deferred": 0, "sizes_from_prior": 0, "version": 0}
        self.identity_stats = sources.IdentityStats()

    def __call__(self, batch: pa.Table) -> pa.Table:
        if isinstance(batch, dict):  # Ray may hand a dict of columns
            batch = pa.table(batch)
        n = batch.num_rows
        req = normalise(batch, self.cfg)
        rows = (
            batch.column(ROW_INDEX).to_numpy()
            if ROW_INDEX in batch.column_names
            else np.arange(n, dtype=np.int64)
        )

        request_code = np.where(req.problem != None, CODE["invalid_request"], 0).astype(np.int16)  # noqa: E711
        id_code = np.zeros(n, np.int16)
        id_msg = np.full(n, None, dtype=object)
        for i in np.flatnonzero(req.bad_id):
            id_code[i] = CODE["invalid_id"]
            id_msg[i] = id_message("invalid_id", req.ids[i].as_py(), None)
        if self.duplicates:
            maybe = np.asarray(
                pc.is_in(req.ids, value_set=self._dup_keys).to_numpy(zero_copy_only=False),
                dtype=bool,
            )
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
            image_msg[i] = (
                f"source is {src_w[i]}×{src_h[i]} = {src_w[i] * src_h[i]:,} px (image_width/height), "
                f"over limits.max_source_pixels = {self.limits.max_source_pixels:,}"
            )
        usable = (request_code == 0) & (id_code == 0) & (image_code == 0)
        identity = np.full(n, None, dtype=object)
        deferred = np.zeros(n, bool)
        from_prior = np.zeros(n, bool)
        candidate = np.zeros(n, bool)
        if self.identify:
            # a run: sizes from the manifest, else from this id's earlier ok row; a source
            # that would cost a request is read once, when the load stage GETs it
            at = self.prior.find(req.ids) if len(self.prior) else np.full(n, -1, np.int64)
            candidate = at >= 0  # done before: worth learning whether its source changed
            pw, ph = self.prior.sizes(at)
            from_prior = usable & ~req.has_src & (pw > 0) & (ph > 0)
            src_w, src_h = np.where(from_prior, pw, src_w), np.where(from_prior, ph, src_h)
            remote = ~req.has_bytes & ~_local(req.image)
            deferred = usable & ~req.has_src & ~from_prior & remote
            self.stats["deferred"] += int(deferred.sum())
            self.stats["sizes_from_prior"] += int(from_prior.sum())
            version = _versions(batch)
            if version is not None:  # the catalogue's own version of the source: no request at all
                has_v = (
                    np.asarray(pc.is_valid(version).to_numpy(zero_copy_only=False), bool)
                    & ~req.has_bytes
                )
                identity[has_v] = np.asarray(
                    pc.binary_join_element_wise(VERSION_PREFIX, version, "").to_pylist(),
                    dtype=object,
                )[has_v]
                self.stats["version"] += int((has_v & usable).sum())
        # sizes unknown (dry runs; local files and inline bytes in runs): read headers,
        # which also give the source's identity
        self._probe(
            batch,
            req,
            usable & ~req.has_src & ~from_prior & ~deferred,
            True,
            src_w,
            src_h,
            image_code,
            image_msg,
            identity,
        )

        def geometry():
            g = plan_geometry(
                GeometryInput(
                    src_w=np.where(deferred, 1, src_w),
                    src_h=np.where(deferred, 1, src_h),
                    width=req.width,
                    height=req.height,
                    has_width=req.has_width,
                    has_height=req.has_height,
                    ratio_num=req.ratio_num,
                    ratio_den=req.ratio_den,
                    has_ratio=req.has_ratio,
                    offset_x=req.offset_x,
                    offset_y=req.offset_y,
                    has_offset_x=req.has_offset_x,
                    has_offset_y=req.has_offset_y,
                    anchor_h=req.anchor_h,
                    anchor_v=req.anchor_v,
                    auto_crop=req.auto_crop,
                    fast=req.fast,
                    request_code=request_code,
                    id_code=id_code,
                    image_code=image_code,
                ),
                self.rules,
            )
            if deferred.any():  # geometry waits for the source's size (the load stage plans it)
                later = deferred & np.isin(g["code"], [0] + [CODE[c] for c in codes.GEOMETRY_CODES])
                g["code"] = np.where(later, 0, g["code"]).astype(np.int16)
                g["geometry_valid"] = g["geometry_valid"] & ~later
                g["generated"] = g["generated"] | later
            return g

        out = geometry()
        if self.identify:
            # runs: the identity of rows that passed and may be done already (local files,
            # inline bytes: always, it is cheap); rejected rows never touch their image
            need = (out["code"] == 0) & (identity == None) & ~deferred  # noqa: E711 - elementwise
            cheap = need & (req.has_bytes | _local(req.image))
            vanished = self._probe(
                batch, req, cheap, False, src_w, src_h, image_code, image_msg, identity
            )
            remote = need & ~cheap & candidate
            if remote.any():
                todo = np.flatnonzero(remote)
                ident, errors, st = sources.identities(
                    req.image.take(pa.array(todo)), self.cfg.input, self.cfg.input.header_threads
                )
                self.identity_stats.add(st)
                identity[todo] = ident
                for j, err in enumerate(errors):
                    if err is not None:
                        image_code[todo[j]], image_msg[todo[j]] = CODE[err.code], err.message
                        vanished = True
            if vanished:
                out = geometry()  # an image that vanished: its code comes before geometry
        table = self._table(batch, req, out, rows, src_w, src_h, id_msg, image_msg)
        if self.identify:
            table = table.append_column("source_identity", pa.array(identity, pa.string()))
            hashable = np.where(
                deferred, None, identity
            )  # no geometry yet: hashed when planned, at load
            hashes = request_hashes(table, hashable, self.cfg)
            table = table.append_column("request_hash", hashes)
            # what the load stage needs to plan a row again: only rows that will reach it
            # (a done row's sizes came from its own earlier run: it needs nothing)
            replan = (deferred | (from_prior & ~self.prior.done.contains(hashes))) & (
                out["code"] == 0
            )
            table = table.append_column(REQUEST, _requests(batch, replan))
            if "image_bytes" in batch.column_names:  # the loader needs them
                table = table.append_column(
                    "image_bytes", batch.column("image_bytes").cast(pa.large_binary())
                )
        return table

    def _probe(
        self, batch, req, need, want_header: bool, src_w, src_h, image_code, image_msg, identity
    ) -> bool:
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
        hw, hh, hc, hm, hid = headers.probe_many(
            images,
            blobs,
            np.full(len(todo), want_header),
            self.cfg.input.storage_options,
            self.limits,
            self.cfg.input.header_threads,
        )
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
        sparse = (
            (req.problem, code == CODE["invalid_request"]),
            (id_msg, (code == CODE["invalid_id"]) | (code == CODE["duplicate_id"])),
            (image_msg, np.isin(code, [CODE[c] for c in codes.IMAGE_CODES])),
        )
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


def plan_manifest(
    cfg: Config, table: pa.Table, batch_rows: int = 131_072, threads: int | None = None
) -> pa.Table:
    """Plan a whole manifest table (dry run / driver-side planning): batches of rows
    on a thread pool, results in manifest order."""
    stage = PlanStage(
        cfg, duplicate_first_rows(table.column("id").cast(pa.string()), table.column(ROW_INDEX))
    )
    parts = map_chunks(
        lambda s, e: stage(table.slice(s, e - s)), table.num_rows, batch_rows, threads
    )
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
    rel = transformer_flops(FLUX1_CONFIG, (BW * BH / 256.0), txt) / transformer_flops(
        FLUX1_CONFIG, 4096, txt
    )
    gpu_s = float((steps * rel * cfg.plan.seconds_per_step_at_1mp)[gen].sum())
    uniq, counts = np.unique(
        np.stack([BW[gen], BH[gen], fast[gen].astype(np.int64)], axis=1), axis=0, return_counts=True
    )
    shapes = {f"{w}x{h} {'fast' if f else 'high'}": int(c) for (w, h, f), c in zip(uniq, counts)}
    # rows whose canvas is mostly invented: the reference is small for it
    vis = (
        plan.column("visible_x1").fill_null(0).to_numpy()
        - plan.column("visible_x0").fill_null(0).to_numpy()
    ) * (
        plan.column("visible_y1").fill_null(0).to_numpy()
        - plan.column("visible_y0").fill_null(0).to_numpy()
    )
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
        # the hosted API: one task per generated row and variant
        "api_tasks": int(plan.column("num_variants").fill_null(1).to_numpy()[gen].sum()),
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
    lines.append(
        f"output: {s['output_megapixels']:,} MP; to generate: {g['high']:,} high + {g['fast']:,} fast; "
        f"{s['passthrough_ok']:,} need no generation"
    )
    if s["mostly_generated"]:
        lines.append(
            f"warning: {s['mostly_generated']:,} rows would be more than {s['warn_generated_share']:.0%} "
            f"generated (up to {s['max_generated_share']:.0%}): their reference is small for the canvas. "
            "To fill the canvas with the photo instead, set sizing.fit: contain and sizing.allow_upscale: "
            "true (the reference is scaled to sizing.fill_fraction of each side), or ask for a smaller "
            "canvas; plan.warn_generated_share sets this threshold"
        )
    if s["backend"] == "bfl-api":
        lines.append(
            f"API tasks: {s['api_tasks']:,} (one per generated row and variant; rows needing no generation "
            f"cost none), {s['output_megapixels']:,} MP out; the API reports each task's cost in credits"
        )
    if s["backend"] != "flux-fill":  # compiled shapes and GPU time are the diffusion model's
        return "\n".join(lines)
    if s["generated_shapes"]:
        top = ", ".join(f"{k} ({v:,})" for k, v in s["top_generated_shapes"].items())
        lines.append(f"generated shapes: {s['generated_shapes']:,} (most rows: {top})")
        if s["generated_shapes"] > s["max_shapes"]:
            lines.append(
                f"  more shapes than model.optimize.max_shapes ({s['max_shapes']}): compiled models "
                "fall back to dynamic shapes; a larger model.optimize.bucket_px (64, 128) groups them"
            )
    hours = s["estimated_gpu_seconds"] / 3600
    lines.append(
        f"estimated GPU time: {s['estimated_gpu_seconds']:,} s ({hours:,.2f} GPU-hours) at {s['estimate_basis']}"
    )
    return "\n".join(lines)
