"""The load stage: fetch, decode, orient, scale, crop and colour-manage each work row's
source into the visible reference, as the model sees it (sRGB) and as the output
stores it. A remote source of unknown size is planned here, from the one GET that
loads it; a source that changed since triage is hashed again here."""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..common import storage
from ..config import Config, InputConfig, LimitsConfig, OutputConfig
from ..io import color, provenance, sources
from ..io.headers import SourceLimits
from ..io.headers import inspect as inspect_header
from ..io.imageio import ImageError, decode, resize
from ..io.manifest import ROW_INDEX
from ..plan.columns import REQUEST, VERSION_PREFIX
from ..plan.hashing import HASHED_FIELDS, request_hashes
from ..plan.stage import PlanSections, PlanStage
from ..review.compose import flatten_alpha
from .records import CARRIED, COLOR_FIELDS, PLANNED, Record, RowStage, elapsed_ms, todo


@dataclass
class Reference:
    """A row's loaded reference: as the model sees it (sRGB) and as the output stores it."""

    model: np.ndarray  # vh x vw x 3 uint8, sRGB
    out: np.ndarray  # vh x vw x C uint8 in the output's space (often ``model`` itself)
    alpha: np.ndarray | None
    color: color.ColorPlan
    rights: provenance.Rights | None
    source: bytes | None = (
        None  # the encoded source (output.c2pa: the manifest's parent ingredient)
    )
    source_format: str = ""


class Replanner:
    """What the load stage needs of planning: a row planned again from the size its
    bytes declare, and request hashes of what was really fetched. It holds planning's
    sections (defaults, sizing, the model's grid...); the stage does not."""

    def __init__(self, cfg: Config | PlanSections):
        self.cfg = PlanSections.of(cfg)
        self._planner: PlanStage | None = None

    def __getstate__(self):  # Ray tasks build their own planner
        return {**self.__dict__, "_planner": None}

    def plan(self, requests: list[dict]) -> pa.Table:
        if self._planner is None:
            self._planner = PlanStage(self.cfg)
        return self._planner(pa.Table.from_pylist(requests))

    def hashes(self, rows: list[dict], identities: list[str]) -> list[str | None]:
        table = pa.Table.from_pylist([{k: row[k] for k in HASHED_FIELDS} for row in rows])
        return request_hashes(table, np.array(identities, dtype=object), self.cfg).to_pylist()


class LoadStage(RowStage):
    """Fetch + decode + orient + scale + crop + colour: each work row's ``Reference``."""

    ADDS = [*CARRIED, ("load_ms", pa.float64()), *COLOR_FIELDS]
    RESETS = ("load_ms", *dict(COLOR_FIELDS))

    def __init__(
        self, source: InputConfig, limits: LimitsConfig, output: OutputConfig, replan: Replanner
    ):
        self.source = source
        self.limits = SourceLimits.of(limits)
        self.output = output
        self.replan = replan

    @classmethod
    def from_config(cls, cfg: Config) -> LoadStage:
        return cls(cfg.input, cfg.limits, cfg.output, Replanner(cfg))

    def fetch(self, row: dict) -> tuple[bytes, str]:
        """The source's bytes and identity, in one request (inline bytes: their digest)."""
        if row.get("image_bytes") is not None:
            data = row["image_bytes"]
            return data, "sha256=" + hashlib.sha256(data).hexdigest()
        return sources.fetch(row["image"], self.source)

    def _fetch_or_error(self, rec: Record):
        try:
            return self.fetch(rec.row)
        except ImageError as e:
            return e

    def prepare(self, records: list[Record], fetched: list[tuple[bytes, str]]) -> None:
        """Planning and request hashes of fetched rows, one vectorised call each for the
        whole block (a first run over remote sources defers every row to here)."""
        self._plan_from_headers(records, [data for data, _ in fetched])
        self._hash_what_was_fetched(records, [identity for _, identity in fetched])

    def _plan_from_headers(self, records: list[Record], data: list[bytes]) -> None:
        """Rows whose source size triage did not know (a remote source, new) or took from
        an earlier run: planned from the size their bytes declare; a rejected or unreadable
        row stops here with its code."""
        requests, replanned = [], []
        for rec, blob in zip(records, data):
            row = rec.row
            if row.get(REQUEST) is None:
                continue
            hd = inspect_header(
                io.BytesIO(blob), len(blob), row["image"] or "image_bytes", self.limits
            )
            if hd.code:
                rec.fail(hd.code, hd.message)
                continue
            if row["canvas_width"] is not None and (hd.width, hd.height) == (
                row["source_width"],
                row["source_height"],
            ):
                continue  # planned with the right size
            request = json.loads(row[REQUEST])
            request.update(
                image_width=hd.width, image_height=hd.height, **{ROW_INDEX: row[ROW_INDEX]}
            )
            requests.append(request)
            replanned.append(rec)
        if not requests:
            return
        planned = self.replan.plan(requests)
        at = dict(zip(planned.column(ROW_INDEX).to_pylist(), range(planned.num_rows)))
        columns = {name: planned.column(name).to_pylist() for name in PLANNED}
        for rec in replanned:
            i = at[rec.row[ROW_INDEX]]
            rec.row.update({name: columns[name][i] for name in PLANNED})
            if not rec.todo:
                rec.row["steps"] = 0

    def _hash_what_was_fetched(self, records: list[Record], identities: list[str]) -> None:
        """Rows triage had no identity for, and rows whose source changed since, hashed
        now (a manifest's ``image_version`` stands for the source's identity and is kept)."""
        rehash, fetched = [], []
        for rec, identity in zip(records, identities):
            if not rec.todo:
                continue
            known = rec.row.get("source_identity")
            if known is not None and known.startswith(VERSION_PREFIX):
                identity = known
            if rec.row["request_hash"] is None or identity != known:
                rec.row["source_identity"] = identity
                rehash.append(rec.row)
                fetched.append(identity)
        if rehash:
            for row, h in zip(rehash, self.replan.hashes(rehash, fetched)):
                row["request_hash"] = h

    def load(self, row: dict, fetched: tuple[bytes, str] | None = None) -> Reference | None:
        """A row's reference; None when planning it here rejected it. ``fetched``: its bytes
        and identity, already ``prepare``d (``process``); default: fetched here."""
        rec = Record(row)
        if fetched is None:
            fetched = self.fetch(row)
            self.prepare([rec], [fetched])
        return self._decode(rec, fetched[0]) if rec.todo else None

    def _decode(self, rec: Record, data: bytes) -> Reference:
        row, o = rec.row, self.output
        what = row["image"] or "image_bytes"
        w, h = row["reference_width"], row["reference_height"]
        img = decode(
            data, self.limits, what, target=(w, h), keep_gps=o.keep_gps, metadata=o.keep_metadata
        )
        if img.size != (row["source_width"], row["source_height"]):
            raise ImageError(
                "image_unreadable",
                f"{what} decodes to {img.size[0]}×{img.size[1]} but its header said "
                f"{row['source_width']}×{row['source_height']}; re-export it",
            )
        pixels, alpha = img.pixels, img.alpha
        if alpha is not None and (o.alpha == "flatten" or row["output_format"] == "jpeg"):
            pixels, alpha = flatten_alpha(pixels, alpha, o.background), None
        pixels = resize(pixels, w, h)
        alpha = None if alpha is None else resize(alpha, w, h)
        # the visible box in the scaled reference's own coordinates
        inner = rec.box.shifted(-row["offset_x"], -row["offset_y"])
        crop = np.ascontiguousarray(pixels[inner.region])
        alpha = None if alpha is None else np.ascontiguousarray(alpha[inner.region])
        stored = "L" if crop.shape[2] == 1 else "RGB"
        plan = color.plan(img.color, stored, o.color, row["output_format"], o.color_intent)
        model = plan.to_model(crop)
        source = data if o.c2pa is not None else None
        return Reference(
            model, plan.to_output(crop, model), alpha, plan, img.rights, source, img.format
        )

    def process(self, records: list[Record]) -> None:
        """Sets ``ref`` on each record to do, with ``load_ms`` and the colour columns.
        Remote sources of a block are fetched concurrently, one GET each."""
        work = todo(records)
        local = all(
            rec.row.get("image_bytes") is not None or storage.is_local(rec.row["image"])
            for rec in work
        )
        t0 = time.perf_counter()
        fetched = storage.map_io(self._fetch_or_error, work, self.source.header_threads, local)
        for rec, got in zip(work, fetched):
            if isinstance(got, ImageError):
                rec.fail(got.code, got.message)
        ok = [(rec, got) for rec, got in zip(work, fetched) if rec.todo]
        self.prepare([rec for rec, _ in ok], [got for _, got in ok])
        fetch_ms = elapsed_ms(t0) / max(
            1, len(work)
        )  # fetching and preparing, shared by the block's rows
        for rec in work:
            rec.row["load_ms"] = round(fetch_ms, 3)
        for rec, (data, _) in ok:
            if rec.todo:
                self._load_one(rec, data, fetch_ms)

    def _load_one(self, rec: Record, data: bytes, fetch_ms: float) -> None:
        t0 = time.perf_counter()
        try:
            ref = rec.ref = self._decode(rec, data)
            src = ref.color.source
            rec.row.update(color_profile=src.description, color_transform=ref.color.transform_name)
            rec.row.update(color_note=src.note, output_profile=ref.color.output_profile)
        except ImageError as e:
            rec.fail(e.code, e.message)
        except MemoryError:
            rec.fail("image_too_large", f"{rec.row['image']}: out of memory while decoding")
        rec.row["load_ms"] = round(elapsed_ms(t0) + fetch_ms, 3)

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = self.records(batch)
        self.process(records)
        for rec in records:
            rec.row.update(to_columns(rec.ref))
        return self.table(batch.schema, records)


def to_columns(ref: Reference | None) -> dict:
    """A ``Reference`` as the ``CARRIED`` columns (between a model actor's stages)."""
    if ref is None:
        return dict.fromkeys(dict(CARRIED))
    space, rights = ref.color.output, ref.rights
    return {
        "ref_pixels": ref.model.tobytes(),
        "ref_out_pixels": None if ref.out is ref.model else ref.out.tobytes(),
        "ref_alpha": None if ref.alpha is None else ref.alpha.tobytes(),
        "out_icc": space.icc,
        "tag_srgb": space.tag_srgb,
        "out_channels": 1 if space.mode == "L" else 3,
        "rights_exif": rights.exif if rights else None,
        "rights_xmp": list(rights.xmp) if rights else None,
        "source_bytes": ref.source,
        "source_format": ref.source_format,
    }


def from_columns(row: dict, intent: str) -> Reference | None:
    """The ``CARRIED`` columns of a row back to a ``Reference`` (its colour plan reduced to
    what the write stage needs: the output space)."""
    if row.get("ref_pixels") is None:
        return None
    shape = (row["visible_y1"] - row["visible_y0"], row["visible_x1"] - row["visible_x0"])
    model = from_bytes(row["ref_pixels"], (*shape, 3))
    channels = row.get("out_channels") or 3
    stored = row.get("ref_out_pixels")
    out = model if stored is None else from_bytes(stored, (*shape, channels))
    alpha = from_bytes(row.get("ref_alpha"), shape)
    mode = "L" if channels == 1 else "RGB"
    space = color.OutputSpace(row.get("out_icc"), bool(row.get("tag_srgb")), mode, intent)
    rights = provenance.Rights(row.get("rights_exif"), tuple(row.get("rights_xmp") or ()))
    plan = color.ColorPlan(color.SourceColor(None, "srgb", ""), "RGB", space, "")
    return Reference(
        model, out, alpha, plan, rights, row.get("source_bytes"), row.get("source_format") or ""
    )


def from_bytes(data: bytes | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if data is None else np.frombuffer(data, dtype=np.uint8).reshape(shape)
