"""The planning stage: manifest rows -> placements, statuses and reject codes.

``PlanStage`` is a small typed stage: setup in ``__init__``, a pure
``__call__(batch: pa.Table) -> pa.Table`` usable as a Ray Data ``map_batches``
function or called directly (``outpaint plan`` does the latter). A batch is planned in
steps over one state object (``Batch``): the rows' ids, sizes and identities, then the
geometry, then the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..backends import spec_of
from ..common import codes
from ..common.codes import CODE
from ..common.parallel import map_chunks
from ..config import Config
from ..io import headers, sources
from ..io.done import EarlierRuns
from ..io.manifest import ROW_INDEX
from .columns import GEOMETRY_COLUMNS, PLAN_SCHEMA, REQUEST, REQUEST_COLUMNS, VERSION_PREFIX
from .duplicates import duplicate_first_rows
from .geometry import GRID, GeometryInput, SizingRules, plan_geometry
from .hashing import request_hashes
from .messages import geometry_messages, id_message
from .product import plan_routes, sides_bits
from .rows import Requests, normalise
from .sections import PlanSections


def plan_grid(cfg: Config | PlanSections) -> int:
    """Fast mode's alignment grid: a checkpoint's own (read from its VAE config, no
    weights), FLUX.1's 16 otherwise."""
    spec = spec_of(cfg.model)
    return GRID if spec.grid is None else spec.grid(cfg.model)


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
    out = np.full(batch.num_rows, None, dtype=object)
    idx = np.flatnonzero(rows)
    if len(idx):
        cols = [c for c in REQUEST_COLUMNS if c in batch.column_names]
        sub = batch.select(cols).take(pa.array(idx)).to_pylist()
        out[idx] = [json.dumps(r, default=str) for r in sub]
    return pa.array(out, pa.string())


@dataclass
class Batch:
    """One batch's state while it is planned: what each step learns, per row, as arrays."""

    table: pa.Table
    req: Requests
    rows: np.ndarray  # manifest_row
    src_w: np.ndarray
    src_h: np.ndarray
    request_code: np.ndarray  # int16 code index per row (0: none)
    id_code: np.ndarray
    image_code: np.ndarray
    id_msg: np.ndarray  # object: messages of id and image codes
    image_msg: np.ndarray
    identity: np.ndarray  # object: the source's identity (None: not learnt)
    deferred: np.ndarray  # bool: a remote source of unknown size, planned when loaded
    from_earlier: np.ndarray  # bool: the size came from the id's earlier ok row
    candidate: np.ndarray  # bool: done before, so worth learning whether its source changed

    @classmethod
    def of(cls, table: pa.Table, cfg: PlanSections) -> Batch:
        n = table.num_rows
        req = normalise(table, cfg)
        has_rows = ROW_INDEX in table.column_names
        rows = table.column(ROW_INDEX).to_numpy() if has_rows else np.arange(n, dtype=np.int64)
        request_code = req.problem_code
        none = np.full(n, None, dtype=object)
        no = np.zeros(n, bool)
        return cls(
            req.table,
            req,
            rows,
            req.src_w.copy(),
            req.src_h.copy(),
            request_code.astype(np.int16),
            np.zeros(n, np.int16),
            np.zeros(n, np.int16),
            none.copy(),
            none.copy(),
            none.copy(),
            no.copy(),
            no.copy(),
            no.copy(),
        )

    @property
    def usable(self) -> np.ndarray:
        """Rows with nothing against them yet."""
        return (self.request_code == 0) & (self.id_code == 0) & (self.image_code == 0)

    @property
    def subject_anchor(self) -> np.ndarray:
        return np.asarray(pc.equal(self.req.anchor, "subject").fill_null(False), bool)

    @property
    def by_subject(self) -> np.ndarray:
        """Rows placed by their product's box (anchor: subject, a valid box)."""
        return self.subject_anchor & self.req.has_subject & (self.request_code == 0)

    def image_failed(self, i: int, code: str, message: str) -> None:
        self.image_code[i] = CODE[code]
        self.image_msg[i] = message

    def geometry_input(self) -> GeometryInput:
        r = self.req
        return GeometryInput(
            # a deferred row's size is not known yet: planned with a placeholder, then undone
            src_w=np.where(self.deferred, 1, self.src_w),
            src_h=np.where(self.deferred, 1, self.src_h),
            width=r.width,
            height=r.height,
            has_width=r.has_width,
            has_height=r.has_height,
            ratio_num=r.ratio_num,
            ratio_den=r.ratio_den,
            has_ratio=r.has_ratio,
            offset_x=r.offset_x,
            offset_y=r.offset_y,
            has_offset_x=r.has_offset_x,
            has_offset_y=r.has_offset_y,
            anchor_h=r.anchor_h,
            anchor_v=r.anchor_v,
            auto_crop=r.auto_crop,
            fast=r.fast,
            subject=self.by_subject,
            subject_x0=r.subject_x0,
            subject_y0=r.subject_y0,
            subject_x1=r.subject_x1,
            subject_y1=r.subject_y1,
            request_code=self.request_code,
            id_code=self.id_code,
            image_code=self.image_code,
        )


class PlanStage:
    """Plans a batch of manifest rows (a ``pa.Table`` with ``manifest_row``).

    ``duplicates`` maps each id that occurs more than once in the whole manifest to
    the row of its first occurrence (``duplicate_first_rows``): duplicates are a
    property of the whole manifest, so they are found once, before batching.
    ``identify=True`` (runs, not dry runs) also learns each source's identity (size +
    ETag/mtime, a digest of inline bytes, or the manifest's ``image_version``) and adds
    ``source_identity`` and ``request_hash``, at the fewest requests: ``earlier`` (what
    earlier runs left for these ids) gives sizes the manifest lacks, and only sources
    that may be done already are looked up remotely (listings where cheaper, else a HEAD
    each). A remote source whose size is still unknown is planned by the load stage,
    from the one GET that loads it (``REQUEST`` keeps what it needs).
    """

    def __init__(
        self,
        cfg: Config | PlanSections,
        duplicates: dict[str, int] | None = None,
        identify: bool = False,
        earlier: EarlierRuns | None = None,
    ):
        cfg = PlanSections.of(cfg)  # the sections it reads: what it keeps and is pickled with
        self.cfg = cfg
        self.duplicates = duplicates or {}
        self.identify = identify
        self.rules = SizingRules(
            max_pixels=cfg.sizing.max_pixels,
            fit_contain=cfg.sizing.fit == "contain",
            fill_fraction=cfg.sizing.fill_fraction,
            allow_upscale=cfg.sizing.allow_upscale,
            grid=plan_grid(cfg),
            subject_fill=cfg.sizing.subject_fill,
            require_subject_fill=cfg.sizing.require_subject_fill,
            min_side=cfg.sizing.min_side or 0,
        )
        self.limits = headers.SourceLimits.of(cfg.limits)
        self.passthrough = list(cfg.output.passthrough_columns)
        self._dup_keys = pa.array(list(self.duplicates), pa.string())
        self.earlier = earlier if earlier is not None else EarlierRuns.empty()
        self.stats = {"deferred": 0, "sizes_from_prior": 0, "version": 0}
        self.identity_stats = sources.IdentityStats()

    def __call__(self, table: pa.Table) -> pa.Table:
        if isinstance(table, dict):  # Ray may hand a dict of columns
            table = pa.table(table)
        b = Batch.of(table, self.cfg)
        self._check_ids(b)
        for i in np.flatnonzero(b.req.refused != None):  # noqa: E711 - elementwise
            b.image_failed(i, "image_access_denied", b.req.refused[i])
        self._check_known_sizes(b)
        if self.identify:
            self._sizes_from_earlier(b)
            self._catalogue_versions(b)
        # sizes unknown (dry runs; local files and inline bytes in runs): read headers,
        # which also give the source's identity
        self._probe(b, b.usable & ~b.req.has_src & ~b.from_earlier & ~b.deferred, want_header=True)
        _check_subjects(b)
        out = self._geometry(b)
        if self.identify and self._identify(b, out):
            out = self._geometry(b)  # an image that vanished: its code comes before geometry
        planned = self._table(b, out)
        return self._with_identity(b, out, planned) if self.identify else planned

    def _check_ids(self, b: Batch) -> None:
        """``invalid_id``, then ``duplicate_id`` for every row after an id's first."""
        for i in np.flatnonzero(b.req.bad_id):
            b.id_code[i] = CODE["invalid_id"]
            b.id_msg[i] = id_message("invalid_id", b.req.ids[i].as_py(), None)
        if not self.duplicates:
            return
        maybe = pc.is_in(b.req.ids, value_set=self._dup_keys).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(np.asarray(maybe, bool) & (b.id_code == 0)):
            rid = b.req.ids[i].as_py()
            first = self.duplicates[rid]
            if b.rows[i] != first:
                b.id_code[i] = CODE["duplicate_id"]
                b.id_msg[i] = id_message("duplicate_id", rid, first)

    def _check_known_sizes(self, b: Batch) -> None:
        """Sizes given in the manifest: the source-pixel limit applies without touching the image."""
        limit = self.limits.max_source_pixels
        over = b.req.has_src & (b.src_w * b.src_h > limit)
        for i in np.flatnonzero(over):
            w, h = b.src_w[i], b.src_h[i]
            message = f"source is {w}×{h} = {w * h:,} px (image_width/height), over limits.max_source_pixels = {limit:,}"
            b.image_failed(i, "image_too_large", message)

    def _sizes_from_earlier(self, b: Batch) -> None:
        """A run: sizes from the manifest, else from this id's earlier ok row; a source
        that would cost a request is read once, when the load stage GETs it."""
        n = b.table.num_rows
        at = self.earlier.find(b.req.ids) if len(self.earlier) else np.full(n, -1, np.int64)
        b.candidate = at >= 0
        pw, ph = self.earlier.sizes(at)
        usable = b.usable
        b.from_earlier = usable & ~b.req.has_src & (pw > 0) & (ph > 0)
        b.src_w = np.where(b.from_earlier, pw, b.src_w)
        b.src_h = np.where(b.from_earlier, ph, b.src_h)
        remote = ~b.req.has_bytes & ~_local(b.req.image)
        b.deferred = usable & ~b.req.has_src & ~b.from_earlier & remote
        self.stats["deferred"] += int(b.deferred.sum())
        self.stats["sizes_from_prior"] += int(b.from_earlier.sum())

    def _catalogue_versions(self, b: Batch) -> None:
        """``image_version``: the catalogue's own version of the source, no request at all."""
        version = _versions(b.table)
        if version is None:
            return
        has = (
            np.asarray(pc.is_valid(version).to_numpy(zero_copy_only=False), bool) & ~b.req.has_bytes
        )
        joined = pc.binary_join_element_wise(VERSION_PREFIX, version, "").to_pylist()
        b.identity[has] = np.asarray(joined, dtype=object)[has]
        self.stats["version"] += int((has & b.usable).sum())

    def _geometry(self, b: Batch) -> dict[str, np.ndarray]:
        g = plan_geometry(b.geometry_input(), self.rules)
        if b.deferred.any():  # geometry waits for the source's size (the load stage plans it)
            later = b.deferred & np.isin(g["code"], [0] + [CODE[c] for c in codes.GEOMETRY_CODES])
            g["code"] = np.where(later, 0, g["code"]).astype(np.int16)
            g["geometry_valid"] = g["geometry_valid"] & ~later
            g["generated"] = g["generated"] | later
        return g

    def _identify(self, b: Batch, out: dict) -> bool:
        """Runs: the identity of rows that passed and may be done already (local files,
        inline bytes: always, it is cheap); rejected rows never touch their image. Returns
        whether an image turned out missing (its code comes before the geometry's)."""
        need = (out["code"] == 0) & (b.identity == None) & ~b.deferred  # noqa: E711 - elementwise
        cheap = need & (b.req.has_bytes | _local(b.req.image))
        vanished = self._probe(b, cheap, want_header=False)
        remote = need & ~cheap & b.candidate
        if not remote.any():
            return vanished
        todo = np.flatnonzero(remote)
        cfg = self.cfg.input
        identities, errors, stats = sources.identities(
            b.req.image.take(pa.array(todo)), cfg, cfg.header_threads
        )
        self.identity_stats.add(stats)
        b.identity[todo] = identities
        for j, err in enumerate(errors):
            if err is not None:
                b.image_failed(todo[j], err.code, err.message)
                vanished = True
        return vanished

    def _probe(self, b: Batch, need: np.ndarray, want_header: bool) -> bool:
        """Probe the rows in ``need`` (in parallel): their sizes (headers), identities and
        image codes. Returns whether any row got an image code."""
        if not need.any():
            return False
        todo = np.flatnonzero(need)
        images = b.req.image.take(pa.array(todo)).to_pylist()
        blobs = None
        if b.req.has_bytes[todo].any():
            col = b.table.column("image_bytes")
            blobs = [col[int(i)].as_py() if b.req.has_bytes[i] else None for i in todo]
        cfg = self.cfg.input
        wants = np.full(len(todo), want_header)
        limits = self.limits

        def http(uri: str, want: bool):
            return sources.http_header(uri, cfg, limits, want)

        found = headers.probe_many(
            images, blobs, wants, cfg.storage_options, limits, cfg.header_threads, http=http
        )
        widths, heights, found_codes, messages, identities = found
        if want_header:
            b.src_w[todo], b.src_h[todo] = widths, heights
        b.identity[todo] = identities
        bad = np.flatnonzero(found_codes != None)  # noqa: E711 - elementwise
        for j in bad:
            b.image_failed(todo[j], found_codes[j], messages[j])
        return bool(len(bad))

    def _messages(self, b: Batch, out: dict) -> pa.Array:
        """Every row's message: one Arrow piece per source, gathered into row order with one take."""
        n = b.table.num_rows
        code = out["code"]
        pieces, where = [], []
        sparse = (
            (b.req.problem, np.isin(code, [CODE[c] for c in codes.REQUEST_CODES])),
            (b.id_msg, (code == CODE["invalid_id"]) | (code == CODE["duplicate_id"])),
            (b.image_msg, np.isin(code, [CODE[c] for c in codes.IMAGE_CODES])),
        )
        for texts, mask in sparse:
            idx = np.flatnonzero(mask)
            pieces.append(pa.array(texts[idx], pa.string()))
            where.append(idx)
        for c in codes.GEOMETRY_CODES:
            idx = np.flatnonzero(code == CODE[c])
            if len(idx):
                pieces.append(geometry_messages(c, out, idx, self.rules))
                where.append(idx)
        total = sum(len(p) for p in pieces)
        order = np.full(n, total, dtype=np.int64)  # -> the trailing null
        order[np.concatenate(where)] = np.arange(total)
        return pa.concat_arrays(pieces + [pa.nulls(1, pa.string())]).take(pa.array(order))

    def _table(self, b: Batch, out: dict) -> pa.Table:
        req, code = b.req, out["code"]
        valid = out["geometry_valid"]
        known_src = valid | (b.src_w > 0)
        steps = np.where(req.fast, self.cfg.model.steps_fast, self.cfg.model.steps)
        ok = code == 0
        routes = self._routes(b, out, ok)
        steps = np.where(np.asarray(pc.equal(routes, "backdrop").fill_null(False), bool), 0, steps)
        cols = {
            "id": req.ids,
            "status": codes.status_array(code),
            "error_code": codes.code_array(code),
            "error_message": self._messages(b, out),
            "image": req.image,
            "source_width": pa.array(b.src_w, mask=~known_src),
            "source_height": pa.array(b.src_h, mask=~known_src),
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
            "route": routes,
            "backdrop_kind": req.backdrop_kind,
            "backdrop_color": req.backdrop_color,
            "placement_note": _placement_notes(b, ok),
            ROW_INDEX: pa.array(b.rows.astype(np.int64)),
        }
        table = pa.table(cols, schema=PLAN_SCHEMA)
        for c in self.passthrough:
            table = table.append_column(c, b.table.column(c))
        return table

    def _routes(self, b: Batch, out: dict, ok: np.ndarray) -> pa.Array:
        """Where each generated row goes, as far as planning can tell (product.plan_routes)."""
        W, H = out["canvas_width"], out["canvas_height"]
        needs = sides_bits(
            out["visible_x0"] > 0,
            out["visible_y0"] > 0,
            out["visible_x1"] < W,
            out["visible_y1"] < H,
        )
        req = b.req
        return plan_routes(
            self.cfg.model.route, out["generated"], ok, req.backdrop_kind, req.plain_sides, needs
        )

    def _with_identity(self, b: Batch, out: dict, table: pa.Table) -> pa.Table:
        """Runs: each row's source identity and request hash, and what the load stage
        needs to plan a row again (only rows that will reach it: a done row's sizes came
        from its own earlier run)."""
        table = table.append_column("source_identity", pa.array(b.identity, pa.string()))
        hashable = np.where(
            b.deferred, None, b.identity
        )  # no geometry yet: hashed when planned, at load
        hashes = request_hashes(table, hashable, self.cfg)
        table = table.append_column("request_hash", hashes)
        again = b.deferred | (b.from_earlier & ~self.earlier.done.contains(hashes))
        table = table.append_column(REQUEST, _requests(b.table, again & (out["code"] == 0)))
        if "image_bytes" in b.table.column_names:  # the loader needs them
            table = table.append_column(
                "image_bytes", b.table.column("image_bytes").cast(pa.large_binary())
            )
        return table


def _check_subjects(b: Batch) -> None:
    """A product's box must lie inside its source (known only once the size is)."""
    r = b.req
    known = (b.src_w > 0) & (b.src_h > 0) & ~b.deferred
    outside = (
        r.has_subject & known & b.usable & ((r.subject_x1 > b.src_w) | (r.subject_y1 > b.src_h))
    )
    for i in np.flatnonzero(outside):
        b.request_code[i] = CODE["invalid_request"]
        r.problem[i] = (
            f"subject box ({r.subject_x0[i]}, {r.subject_y0[i]}, {r.subject_x1[i]}, "
            f"{r.subject_y1[i]}) reaches past the {b.src_w[i]}×{b.src_h[i]} source; boxes are in "
            "the source's pixels, after EXIF rotation"
        )


def _placement_notes(b: Batch, ok: np.ndarray) -> pa.Array:
    """anchor: subject without a box: centred, and said so."""
    fallback = ok & b.subject_anchor & ~b.req.has_subject
    notes = np.where(
        fallback,
        "anchor subject: no subject_x0..subject_y1 for this row, so centred; "
        "outpaint manifest --analyze finds the product's box",
        None,
    )
    return pa.array(notes, pa.string())


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
