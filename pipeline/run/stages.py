"""The per-row stages after planning. Each is a small class: setup in ``__init__``,
a pure ``__call__(batch: pa.Table) -> pa.Table`` that Ray Data maps over blocks and
tests call directly. Rows that are not ``ok`` pass through untouched, so every
manifest row reaches the metadata; a row's failure never raises out of a stage.

Between stages, pixels travel as raw bytes (``large_binary``) with their sizes
implied by the plan's geometry columns: the reference as the model sees it (sRGB),
and, where the output keeps another colour space, as the output stores it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import codes, storage
from ..backends import Job, RowError, keeps_reference, make_backend, warmup_shapes
from ..config import Config
from ..io import color, provenance, sources
from ..io.headers import SourceLimits
from ..io.headers import inspect as inspect_header
from ..io.imageio import ImageError, decode, encode, resize
from ..io.manifest import ROW_INDEX
from ..io.outputs import OutputStore, image_name
from ..plan.hashing import HASHED_FIELDS, model_name, request_hashes
from ..plan.stage import GEOMETRY_COLUMNS, REQUEST, VERSION_PREFIX, PlanStage
from ..review import quality
from ..review.compose import (
    crop_box,
    effective_feather,
    extend_alpha,
    feathered_paste,
    flatten_alpha,
    generated_sides,
    match_colors,
    paste_back,
)

PIXELS = pa.large_binary()

# Final metadata columns added after planning (docs/contracts.md, Outputs), in order.
# colour and labels (docs/contracts.md, "Colour and labels"): the load stage names the
# source's profile and what became of it; the write stage the label it wrote
COLOR_FIELDS = [
    ("color_profile", pa.string()),
    ("color_transform", pa.string()),
    ("color_note", pa.string()),
    ("output_profile", pa.string()),
]
OUTPUT_FIELDS = [
    ("request_hash", pa.string()),
    ("output_uri", pa.string()),
    ("output_uris", pa.list_(pa.string())),
    ("output_bytes", pa.int64()),
    *COLOR_FIELDS,
    ("digital_source_type", pa.string()),
    ("fill_color", pa.string()),
    ("feather_px", pa.int64()),
    ("seam_score", pa.float64()),
    ("texture_score", pa.float64()),
    ("quality_distance", pa.float64()),
    ("ref_max_abs_diff", pa.int64()),
    ("ref_mean_abs_diff", pa.float64()),
    ("fill_leakage", pa.float64()),
    ("fill_leak_flag", pa.bool_()),
    ("model", pa.string()),
    ("load_ms", pa.float64()),
    ("generate_ms", pa.float64()),
    ("encode_ms", pa.float64()),
    ("write_ms", pa.float64()),
    ("run_id", pa.string()),
    ("worker_node", pa.string()),
    ("completed_at", pa.float64()),
]
# GPU backends: the model actor (host:pid) and its cumulative busy clock when this
# row's batch finished; the run reports loop / wall per actor ("GPUs busy")
BUSY_FIELDS = [
    ("model_actor", pa.string()),
    ("model_loop_s", pa.float64()),
    ("model_wall_s", pa.float64()),
]
# the hosted API: the row's task and what it cost; the API actor's counters when the row
# finished (tasks in flight, credits spent so far), for the run's progress line
API_FIELDS = [
    ("api_task_id", pa.string()),
    ("cost_credits", pa.float64()),
    ("api_note", pa.string()),
]
API_COUNTERS = [("api_active", pa.int64()), ("api_spent", pa.float64())]
OUTPUT_FIELDS += BUSY_FIELDS + API_FIELDS + API_COUNTERS
# what the load stage hands the write stage (model backends: through Arrow), never in the
# metadata: the reference (model's view; the output's where it differs), the output's
# colour space, and the source metadata the output carries
CARRIED = [
    ("ref_pixels", PIXELS),
    ("ref_out_pixels", PIXELS),
    ("ref_alpha", PIXELS),
    ("out_icc", pa.large_binary()),
    ("tag_srgb", pa.bool_()),
    ("out_channels", pa.int8()),
    ("rights_exif", pa.large_binary()),
    ("rights_xmp", pa.list_(pa.string())),
    ("source_bytes", pa.large_binary()),
    ("source_format", pa.string()),
]  # C2PA's parent ingredient
DROPPED_COLUMNS = (*dict(CARRIED), "out_pixels", "image_bytes", REQUEST)
# what planning a row at load sets (its size known only then)
PLANNED = (
    "status",
    "error_code",
    "error_message",
    "source_width",
    "source_height",
    *GEOMETRY_COLUMNS,
    "generated",
    "steps",
)


def bulk_metadata(plan: pa.Table, run_id: str, completed_at: float) -> pa.Table:
    """Final metadata for planned rows that need no image work (rejected, failed while
    planning), built columnar: the same columns as the write stage's rows."""
    n = plan.num_rows
    keep = [
        c for c in plan.column_names if c not in DROPPED_COLUMNS and c not in dict(OUTPUT_FIELDS)
    ]
    node = _node_id()
    set_to = {
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "worker_node": pa.repeat(pa.scalar(node, pa.string()), n),
        "completed_at": pa.array(np.full(n, completed_at)),
    }
    if "request_hash" in plan.column_names:
        set_to["request_hash"] = plan.column("request_hash")
    cols = [plan.column(c) for c in keep] + [
        set_to.get(name, pa.nulls(n, t)) for name, t in OUTPUT_FIELDS
    ]
    fields = [plan.schema.field(c) for c in keep] + [pa.field(name, t) for name, t in OUTPUT_FIELDS]
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def _node_id() -> str | None:
    """The Ray node this row was written on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001
        return None


def _version() -> str:
    from .. import __version__

    return __version__


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


def _fail(row: dict, code: str, message: str) -> None:
    row["status"] = codes.status_of(code)
    row["error_code"] = code
    row["error_message"] = message
    row["generated"] = False
    row["steps"] = 0


def _todo(row: dict) -> bool:
    return row["status"] == codes.OK


def _with(
    schema: pa.Schema,
    rows: list[dict],
    added: Sequence[tuple[str, pa.DataType]] = (),
    dropped: Sequence[str] = (),
) -> pa.Table:
    """Rows back to Arrow: the input schema, less ``dropped``, plus ``added`` (in that order).
    Keys not in the schema (in-memory arrays like ``_ref``) are left out."""
    fields = [f for f in schema if f.name not in dropped and f.name not in dict(added)]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields + [pa.field(n, t) for n, t in added]))


def visible_crop(row: dict) -> tuple[int, int, int, int]:
    return crop_box(
        row["offset_x"],
        row["offset_y"],
        row["visible_x0"],
        row["visible_y0"],
        row["visible_x1"],
        row["visible_y1"],
    )


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


class LoadStage:
    """Fetch + decode + orient + scale + crop + colour: the visible reference as bytes."""

    ADDS = [*CARRIED, ("load_ms", pa.float64()), *COLOR_FIELDS]

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.limits = SourceLimits(cfg.limits.max_source_pixels, cfg.limits.max_source_bytes)
        self._planner: PlanStage | None = None

    def __getstate__(self):  # Ray tasks build their own planner
        return {**self.__dict__, "_planner": None}

    def _fetch(self, row: dict) -> tuple[bytes, str]:
        """The source's bytes and identity, in one request (inline bytes: their digest)."""
        if row.get("image_bytes") is not None:
            data = row["image_bytes"]
            return data, "sha256=" + hashlib.sha256(data).hexdigest()
        return sources.fetch(row["image"], self.cfg.input)

    @property
    def planner(self) -> PlanStage:
        if self._planner is None:
            self._planner = PlanStage(self.cfg)
        return self._planner

    def prepare(self, rows: list[dict], fetched: list[tuple[bytes, str]]) -> None:
        """Planning and request hashes of fetched rows, one vectorised call each for the
        whole block (a first run over remote sources defers every row to here). Planned
        now: rows whose source size triage did not know (a remote source, new) or took
        from an earlier run, from the size their bytes declare; a rejected or unreadable
        row stops here with its code. Hashed now: rows triage had no identity for, and
        rows whose source changed since (a manifest's ``image_version`` stands for the
        source's identity and is kept)."""
        requests, replanned = [], []
        for row, (data, _) in zip(rows, fetched):
            if row.get(REQUEST) is None:
                continue
            hd = inspect_header(
                io.BytesIO(data), len(data), row["image"] or "image_bytes", self.limits
            )
            if hd.code:
                _fail(row, hd.code, hd.message)
            elif row["canvas_width"] is None or (hd.width, hd.height) != (
                row["source_width"],
                row["source_height"],
            ):
                requests.append(
                    {
                        **json.loads(row[REQUEST]),
                        "image_width": hd.width,
                        "image_height": hd.height,
                        ROW_INDEX: row[ROW_INDEX],
                    }
                )
                replanned.append(row)
        if requests:
            planned = self.planner(pa.Table.from_pylist(requests))
            by_row = dict(zip(planned.column(ROW_INDEX).to_pylist(), range(planned.num_rows)))
            cols = {name: planned.column(name).to_pylist() for name in PLANNED}
            for row in replanned:
                i = by_row[row[ROW_INDEX]]
                for name in PLANNED:
                    row[name] = cols[name][i]
                if row["status"] != codes.OK:
                    row["steps"] = 0
        rehash, identities = [], []
        for row, (_, identity) in zip(rows, fetched):
            if not _todo(row):
                continue
            known = row.get("source_identity")
            if known is not None and known.startswith(VERSION_PREFIX):
                identity = known
            if row["request_hash"] is None or identity != known:
                row["source_identity"] = identity
                rehash.append(row)
                identities.append(identity)
        if rehash:
            table = pa.Table.from_pylist([{k: row[k] for k in HASHED_FIELDS} for row in rehash])
            for row, h in zip(
                rehash,
                request_hashes(table, np.array(identities, dtype=object), self.cfg).to_pylist(),
            ):
                row["request_hash"] = h

    def load(self, row: dict, fetched: tuple[bytes, str] | None = None) -> Reference | None:
        """The row's reference; None when planning it here rejected it. ``fetched``: its
        bytes and identity, already ``prepare``d (``load_rows``); default: fetched here."""
        what = row["image"] or "image_bytes"
        o = self.cfg.output
        if fetched is None:
            fetched = self._fetch(row)
            self.prepare([row], [fetched])
        if not _todo(row):
            return None
        data = fetched[0]
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
        if alpha is not None:
            alpha = resize(alpha, w, h)
        x0, y0, x1, y1 = visible_crop(row)
        crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
        alpha = None if alpha is None else np.ascontiguousarray(alpha[y0:y1, x0:x1])
        plan = color.plan(
            img.color,
            "L" if crop.shape[2] == 1 else "RGB",
            o.color,
            row["output_format"],
            o.color_intent,
        )
        model = plan.to_model(crop)
        return Reference(
            model,
            plan.to_output(crop, model),
            alpha,
            plan,
            img.rights,
            data if o.c2pa is not None else None,
            img.format,
        )

    def _fetch_or_error(self, row: dict):
        try:
            return self._fetch(row)
        except ImageError as e:
            return e

    def load_rows(self, rows: list[dict]) -> None:
        """Sets ``_ref`` (a ``Reference``), ``load_ms`` and the colour columns on each row to do.
        Remote sources of a block are fetched concurrently, one GET each."""
        todo = [row for row in rows if _todo(row)]
        for row in rows:
            row["_ref"] = row["load_ms"] = None
            for name, _ in COLOR_FIELDS:
                row[name] = None
        local = all(
            row.get("image_bytes") is not None or storage.is_local(row["image"]) for row in todo
        )
        t0 = time.perf_counter()
        fetched = storage.map_io(self._fetch_or_error, todo, self.cfg.input.header_threads, local)
        for row, got in zip(todo, fetched):
            if isinstance(got, ImageError):
                _fail(row, got.code, got.message)
        ok = [(row, got) for row, got in zip(todo, fetched) if _todo(row)]
        self.prepare([row for row, _ in ok], [got for _, got in ok])
        fetch_ms = _ms(t0) / max(1, len(todo))  # fetching and preparing, shared by the block's rows
        for row in todo:
            row["load_ms"] = round(fetch_ms, 3)
        for row, got in ok:
            if not _todo(row):
                continue
            t0 = time.perf_counter()
            try:
                ref = row["_ref"] = self.load(row, got)
                if ref is not None:
                    src = ref.color.source
                    row["color_profile"], row["color_transform"] = (
                        src.description,
                        ref.color.transform_name,
                    )
                    row["color_note"], row["output_profile"] = src.note, ref.color.output_profile
            except ImageError as e:
                _fail(row, e.code, e.message)
            except MemoryError:
                _fail(row, "image_too_large", f"{row['image']}: out of memory while decoding")
            row["load_ms"] = round(_ms(t0) + fetch_ms, 3)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        self.load_rows(rows)
        for row in rows:
            row.update(to_columns(row.pop("_ref")))
        return _with(batch.schema, rows, self.ADDS)


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
    vh, vw = _visible_shape(row)
    model = _from_bytes(row["ref_pixels"], (vh, vw, 3))
    c = row.get("out_channels") or 3
    out = (
        model
        if row.get("ref_out_pixels") is None
        else _from_bytes(row["ref_out_pixels"], (vh, vw, c))
    )
    alpha = _from_bytes(row.get("ref_alpha"), (vh, vw))
    space = color.OutputSpace(
        row.get("out_icc"), bool(row.get("tag_srgb")), "L" if c == 1 else "RGB", intent
    )
    rights = provenance.Rights(row.get("rights_exif"), tuple(row.get("rights_xmp") or ()))
    return Reference(
        model,
        out,
        alpha,
        color.ColorPlan(color.SourceColor(None, "srgb", ""), "RGB", space, ""),
        rights,
        row.get("source_bytes"),
        row.get("source_format") or "",
    )


def _visible_shape(row: dict) -> tuple[int, int]:
    return row["visible_y1"] - row["visible_y0"], row["visible_x1"] - row["visible_x0"]


def _from_bytes(data: bytes | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if data is None else np.frombuffer(data, dtype=np.uint8).reshape(shape)


class OutpaintStage:
    """Run the backend in batches: one generated canvas per row and variant. Pasting
    the reference back happens after, in the write stage's CPU tasks.

    Heavy setup (the backend, weights) once per instance: as a Ray actor for backends
    that need one, otherwise inside fused CPU tasks.
    """

    ADDS = [
        ("out_pixels", pa.list_(PIXELS)),
        ("generate_ms", pa.float64()),
        ("fill_color", pa.string()),
        ("model", pa.string()),
        *BUSY_FIELDS,
        *API_FIELDS,
        *API_COUNTERS,
    ]

    def __init__(
        self, cfg: Config, prompts: list[str] | None = None, backend=None, lazy: bool = False
    ):
        """``backend``: an already built one (benchmarks); default: built from ``cfg.model``,
        here (model actors: created only when rows need generating) or, ``lazy``, on the
        first row that needs it (fused CPU tasks, whose rows may need none)."""
        self.cfg = cfg
        self.prompts = prompts
        self._backend = backend
        self._lock = threading.Lock()  # concurrent calls of one actor build it once
        if backend is None and not lazy:
            self.backend  # noqa: B018 - load now: a model that cannot load fails the actor, not rows
        self.api = cfg.model.backend == "bfl-api"
        # the API backend runs a call's rows concurrently, each on its own task: all at once
        self.batch_size = 1 << 30 if self.api else cfg.runtime.batch_size
        self.model = model_name(cfg)
        self.actor = f"{socket.gethostname()}:{os.getpid()}"

    def __getstate__(self):  # fused CPU tasks receive the stage pickled: no lock, no model
        return {**self.__dict__, "_lock": None, "_backend": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def backend(self):
        with self._lock:
            if self._backend is None:
                self._backend = make_backend(
                    self.cfg.model,
                    prompts=self.prompts,
                    warmup=warmup_shapes(self.cfg),
                    batch_size=self.cfg.runtime.batch_size,
                    output=self.cfg.output,
                )
        return self._backend

    def _run(self, items: list[tuple[dict, int]]) -> list[np.ndarray | Exception]:
        """Outpaint (row, variant) pairs in one backend call; isolate failures. What the
        backend says of each row (fill, API task, cost) goes on the row, failed or not."""
        jobs = [
            Job(
                ref=row["_ref"].model,
                width=row["canvas_width"],
                height=row["canvas_height"],
                x0=row["visible_x0"],
                y0=row["visible_y0"],
                seed=variant_seed(row["seed"], k),
                prompt=row["prompt"] or "",
                mode=row["mode"],
                steps=row["steps"],
                pad_left=row["pad_left"],
                pad_top=row["pad_top"],
                row_id=row["id"],
                key=(row.get("request_hash") or row["id"]) + (f"-{k}" if k else ""),
            )
            for row, k in items
        ]
        try:
            results: list = list(self.backend.outpaint(jobs))
        except Exception as e:  # noqa: BLE001 - isolate the failing rows below
            if len(items) > 1:  # one bad row must not fail its batch: retry singly
                return [r for item in items for r in self._run([item])]
            results = [e]
        for (row, _), job, res in zip(items, jobs, results):
            row["fill_color"] = job.fill_color
            for name, value in {**(job.info or {}), **(getattr(res, "info", None) or {})}.items():
                if value is not None or row.get(name) is None:
                    row[name] = value
        return results

    def outpaint_rows(self, rows: list[dict]) -> None:
        """Sets ``_out`` (one H x W x 3 sRGB array per variant; None where nothing is
        generated: the output is the reference), ``generate_ms``, ``fill_color``, ``model``."""
        work: list[tuple[dict, int]] = []
        for row in rows:
            for name in (
                "_out",
                "generate_ms",
                "fill_color",
                "model",
                *dict(BUSY_FIELDS),
                *dict(API_FIELDS),
                *dict(API_COUNTERS),
            ):
                row[name] = None
            if not _todo(row):
                continue
            row["model"] = self.model
            n = row.get("num_variants") or 1
            row["_out"] = [None] * n
            row["generate_ms"] = 0.0
            if row["generated"]:
                work += [(row, k) for k in range(n)]
        for start in range(0, len(work), self.batch_size):
            items = work[start : start + self.batch_size]
            t0 = time.perf_counter()
            results = self._run(items)
            per_item = _ms(t0) / len(items)
            for (row, k), res in zip(items, results):
                row["generate_ms"] += per_item
                if row["status"] != codes.OK:
                    continue
                if isinstance(res, RowError):
                    _fail(row, res.code, res.message)
                    row["_out"] = None
                    continue
                if isinstance(res, Exception):
                    _fail(
                        row,
                        "generation_failed",
                        f"the {self.cfg.model.backend} backend failed on this row: "
                        f"{type(res).__name__}: {res}",
                    )
                    row["_out"] = None
                    continue
                assert res.shape == (row["canvas_height"], row["canvas_width"], 3)
                row["_out"][k] = res
        if self.api and work:  # the hosted API takes no seed: a row's seed is not what made it
            active, spent = self.backend.snapshot()
            for row, _ in work:
                row["seed"], row["api_active"], row["api_spent"] = None, active, spent
        busy = getattr(self._backend, "busy", None)
        if busy is not None and work:
            loop_s, wall_s = busy.snapshot()
            for row, _ in work:
                row["model_actor"], row["model_loop_s"], row["model_wall_s"] = (
                    self.actor,
                    loop_s,
                    wall_s,
                )

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            row["_ref"] = from_columns(row, self.cfg.output.color_intent)
        self.outpaint_rows(rows)
        for row in rows:
            out = row.pop("_out")
            row.pop("_ref")
            row["out_pixels"] = (
                None if out is None else [None if o is None else o.tobytes() for o in out]
            )
        return _with(batch.schema, rows, self.ADDS)


def variant_seed(seed: int, k: int) -> int:
    """Variant k of a row: seed + k (variant 0 is the row's own seed)."""
    return (int(seed) + k) % (1 << 63)


class WriteStage:
    """Paste back, convert into the output's colour space, encode (png/jpeg/webp, with
    profile, EXIF and label) and write each ok row's image; emit its metadata row.

    Runs in CPU tasks after the model stage, so the GPU never waits on compression.
    """

    DROPS = DROPPED_COLUMNS

    def __init__(self, cfg: Config, store: OutputStore, run_id: str):
        self.cfg = cfg
        self.store = store
        self.run_id = run_id
        self.enc = cfg.output.encoding
        self.keeps_reference = keeps_reference(cfg.model)
        self.source_type = provenance.source_type_uri(
            cfg.output.digital_source_type, cfg.model.backend
        )
        self.credentials = (
            provenance.ContentCredentials(cfg.output.c2pa, _version())
            if cfg.output.c2pa is not None
            else None
        )

    def composite(self, row: dict, generated: np.ndarray) -> np.ndarray:
        """The generated canvas (sRGB) in the output's space with the reference back in:
        exact, apart from the feather band."""
        ref: Reference = row["_ref"]
        vx0, vy0 = row["visible_x0"], row["visible_y0"]
        sides = generated_sides(
            row["canvas_width"],
            row["canvas_height"],
            vx0,
            vy0,
            row["visible_x1"],
            row["visible_y1"],
        )
        if self.cfg.output.color_match:
            generated = match_colors(generated, ref.model, vx0, vy0, sides)
        generated = ref.color.output.from_model(generated)
        if self.keeps_reference:  # blending V with itself: skip the work
            return paste_back(generated, ref.out, vx0, vy0)
        return feathered_paste(generated, ref.out, vx0, vy0, sides, self.cfg.output.feather_px)

    def write(self, row: dict) -> None:
        ref: Reference = row["_ref"]
        W, H = row["canvas_width"], row["canvas_height"]
        alpha = extend_alpha(ref.alpha, W, H, row["visible_x0"], row["visible_y0"])
        finals = (
            [self.composite(row, g) for g in row["_out"]]
            if row["generated"]
            else [ref.out] * len(row["_out"])
        )  # nothing generated: the reference is the output
        label = self.source_type if row["generated"] else None
        rights = ref.rights if self.cfg.output.keep_metadata else None
        xmp, exif, icc = (
            provenance.xmp_packet(rights, label),
            rights.exif if rights else None,
            ref.color.output.embed,
        )
        row["digital_source_type"] = label.rsplit("/", 1)[-1] if label else None
        names = (
            [image_name(row["id"], row["output_format"])]
            if len(finals) == 1
            else [image_name(row["id"], row["output_format"], k) for k in range(len(finals))]
        )
        t0 = time.perf_counter()
        encoded = [
            encode(
                pixels,
                row["output_format"],
                alpha,
                jpeg_quality=self.enc.jpeg_quality,
                webp_quality=self.enc.webp_quality,
                webp_lossless=self.enc.webp_lossless,
                png_compress_level=self.enc.png_compress_level,
                icc=icc,
                exif=exif,
                xmp=xmp,
            )
            for pixels in finals
        ]
        if self.credentials is not None and label:
            try:  # every variant signed before any is written
                encoded = [
                    self.credentials.sign(
                        data, row["output_format"], label, ref.source, ref.source_format, name
                    )
                    for name, data in zip(names, encoded)
                ]
            except Exception as e:  # noqa: BLE001 - this row only; nothing written for it
                _fail(row, "generation_failed", f"C2PA signing failed: {type(e).__name__}: {e}")
                return
        row["encode_ms"] = _ms(t0)
        t0 = time.perf_counter()
        uris = [self.store.write_image(name, data) for name, data in zip(names, encoded)]
        row["write_ms"] = _ms(t0)
        row["output_bytes"] = sum(len(d) for d in encoded)
        row["output_uri"], row["output_uris"] = uris[0], uris
        self.measure(row, finals[0], encoded[0])

    def measure(self, row: dict, final: np.ndarray, encoded: bytes) -> None:
        """Quality metrics of what was written (lossy formats: measured after decoding);
        fill leakage on what the model returned (its fill colour is an sRGB one)."""
        out = final
        if row["output_format"] != "png":
            out = decode(encoded, SourceLimits(1 << 40, 1 << 40), metadata=False).pixels
        ref: Reference = row["_ref"]
        vx0, vy0, vx1, vy1 = (
            row["visible_x0"],
            row["visible_y0"],
            row["visible_x1"],
            row["visible_y1"],
        )
        sides = generated_sides(row["canvas_width"], row["canvas_height"], vx0, vy0, vx1, vy1)
        gen = row["generated"]
        feather = effective_feather(self.cfg.output.feather_px, vy1 - vy0, vx1 - vx0) if gen else 0
        row["feather_px"] = feather
        row["seam_score"] = quality.seam_score(out, vx0, vy0, vx1, vy1, sides) if gen else None
        row["texture_score"] = (
            quality.texture_score(out, vx0, vy0, vx1, vy1, sides) if gen else None
        )
        row["quality_distance"] = quality.quality_distance(row["seam_score"], row["texture_score"])
        row["ref_max_abs_diff"], row["ref_mean_abs_diff"] = quality.fidelity(
            out, ref.out, vx0, vy0, sides, feather
        )
        leak = (
            quality.fill_leakage(row["_out"][0], vx0, vy0, vx1, vy1, row.get("fill_color"))
            if gen
            else None
        )
        row["fill_leakage"] = leak
        row["fill_leak_flag"] = None if leak is None else leak > quality.LEAK_FLAG

    def write_rows(self, rows: list[dict], schema: pa.Schema) -> pa.Table:
        """Write each ok row's image, then return the metadata rows (no pixels)."""
        node = _node_id()
        for row in rows:
            row["worker_node"] = node
            for name, _ in OUTPUT_FIELDS:
                row.setdefault(name, None)
            row["feather_px"] = None
            if _todo(row):
                self.write(row)
            # metadata after the image: this row's metadata only exists once it is written
            row["run_id"] = self.run_id
            row["completed_at"] = time.time()
        return _with(schema, rows, OUTPUT_FIELDS, dropped=self.DROPS)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        intent = self.cfg.output.color_intent
        for row in rows:
            shape = (row["canvas_height"], row["canvas_width"], 3)
            outs = row.get("out_pixels")
            row["_out"] = None if outs is None else [_from_bytes(b, shape) for b in outs]
            row["_ref"] = from_columns(row, intent)
        return self.write_rows(rows, batch.schema)


class ProcessStage:
    """Load -> outpaint -> write in one step, pixels kept as arrays in memory.

    For backends that run in plain CPU tasks: the stages would be fused into one
    Ray task anyway, so passing pixels through Arrow between them is pure copying.
    """

    def __init__(self, cfg: Config, store: OutputStore, run_id: str):
        self.load = LoadStage(cfg)
        self.outpaint = OutpaintStage(cfg, lazy=True)
        self.write = WriteStage(cfg, store, run_id)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        self.load.load_rows(rows)
        self.outpaint.outpaint_rows(rows)
        return self.write.write_rows(rows, batch.schema)
