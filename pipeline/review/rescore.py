"""``outpaint score SOURCE --out FILE``: the quality score of images made by anything (ours,
the hosted API's, another tool's).

SOURCE is a table (Parquet, CSV, TSV, JSON Lines) with ``id``, ``image`` and the original
area's box in canvas pixels (``visible_x0``, ``visible_y0``, ``visible_x1``,
``visible_y1``: the metadata's own columns), or the output URI of a finished run, whose
generated rows are rescored in place (e.g. after an upgrade of the score): their quality
columns in the metadata are replaced by a new part (latest wins); ``review_status`` and
where the images are stay as the gate or a reviewer left them.

FILE is Parquet: ``id``, ``quality_distance``, ``quality_pass``, ``quality_defect``, the
per-defect columns and ``score_error`` (why a row could not be scored: unreadable image,
no box).
"""

from __future__ import annotations

import io
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..common import storage
from ..common.box import Box
from ..config import ConfigError, InputConfig, QualityThresholds
from ..io import manifest as manifest_io
from ..io.headers import SourceLimits
from ..io.imageio import ImageError, decode
from ..io.metadata import METADATA
from ..io.outputs import OutputStore, new_run_id
from ..io.sources import read
from .score import COLUMNS, FEATHER, REGION_COLUMNS, judge

BOX = ("visible_x0", "visible_y0", "visible_x1", "visible_y1")
RESULT = pa.schema(
    [
        ("id", pa.string()),
        ("quality_distance", pa.float64()),
        ("quality_pass", pa.bool_()),
        ("quality_defect", pa.string()),
        *[(c, pa.float64()) for c in COLUMNS],
        *[(c, pa.int64()) for c in REGION_COLUMNS],
        ("score_error", pa.string()),
    ]
)
LIMITS = SourceLimits(1 << 30, 256 << 20)  # generous: these are finished outputs, not sources


def is_output(uri: str, storage_options: dict | None = None) -> bool:
    """Whether ``uri`` is a run's output folder (it has ``metadata/``)."""
    fs, path = storage.filesystem(uri, storage_options)
    return fs.isdir(storage.join(path, METADATA))


def _table(uri: str, storage_options: dict | None) -> pa.Table:
    fs, path = storage.filesystem(uri, storage_options)
    ext = posixpath.splitext(path.lower())[1]
    fmt = manifest_io.EXTENSIONS.get(ext, "parquet")
    table = manifest_io.read_file(fs, path, fmt)
    missing = [c for c in ("id", "image", *BOX) if c not in table.column_names]
    if missing:
        raise ConfigError(
            f"{uri}: missing column(s) {', '.join(missing)}: a score source needs id, image and "
            "the original area's box (visible_x0, visible_y0, visible_x1, visible_y1), or is "
            "a run's output URI"
        )
    return table


def _one(row: dict, thresholds: QualityThresholds, cfg: InputConfig) -> dict:
    out = {"id": None if row["id"] is None else str(row["id"])}
    try:
        box = Box(*(int(row[k]) for k in BOX))
    except (TypeError, ValueError):
        return {**out, "score_error": "no original area: visible_x0..visible_y1 must be integers"}
    try:
        pixels = decode(read(str(row["image"]), cfg), LIMITS, metadata=False).pixels
    except ImageError as e:
        return {**out, "score_error": f"{e.code}: {e.message}"}
    except Exception as e:  # noqa: BLE001 - this row only
        return {**out, "score_error": f"{type(e).__name__}: {e}"}
    if pixels.ndim == 2:
        pixels = pixels[..., None].repeat(3, axis=2)
    H, W = pixels.shape[:2]
    if not (0 <= box.x0 < box.x1 <= W and 0 <= box.y0 < box.y1 <= H):
        return {
            **out,
            "score_error": f"the box {tuple(box.__dict__.values())} is not inside {W}x{H}",
        }
    feather = row.get("feather_px")
    return {**out, **judge(pixels[..., :3], box, thresholds, int(feather or FEATHER))}


def score_rows(
    table: pa.Table,
    thresholds: QualityThresholds | None = None,
    storage_options: dict | None = None,
    threads: int = 8,
) -> pa.Table:
    """The score of each row of ``table`` (``id``, ``image``, the box; ``feather_px``
    optional), in the order given; decoding and scoring on ``threads`` threads."""
    thresholds = thresholds or QualityThresholds()
    cfg = InputConfig(manifest="-", storage_options=storage_options or {})
    rows = table.to_pylist()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        found = list(pool.map(lambda r: _one(r, thresholds, cfg), rows))
    return pa.Table.from_pylist(found, schema=RESULT)


def score(
    source: str,
    out: str | None = None,
    *,
    thresholds: QualityThresholds | None = None,
    storage_options: dict | None = None,
    threads: int = 8,
) -> pa.Table:
    """Score ``source`` (a table of images and boxes, or a run's output URI, rescored in
    place); the result written to ``out`` (Parquet) if given, and returned."""
    rescoring = is_output(source, storage_options)
    if rescoring:
        store = OutputStore(source, storage_options)
        meta = store.metadata.read()
        ok = pc.and_(pc.equal(meta.column("status"), "ok"), meta.column("generated"))
        meta = meta.filter(pc.and_(ok, pc.is_valid(meta.column("output_uri"))).fill_null(False))
        table = meta.select(["id", "output_uri", *BOX, "feather_px"]).rename_columns(
            ["id", "image", *BOX, "feather_px"]
        )
    else:
        table = _table(source, storage_options)
    result = score_rows(table, thresholds, storage_options, threads)
    if rescoring and meta.num_rows:
        _update(store, meta, result)
    if out is not None:
        fs, path = storage.filesystem(out, storage_options)
        buf = io.BytesIO()
        pq.write_table(result, buf)
        with fs.open(path, "wb") as f:
            f.write(buf.getvalue())
    return result


def _update(store: OutputStore, meta: pa.Table, result: pa.Table) -> None:
    """The metadata's quality columns replaced by ``result`` (a new part; latest wins)."""
    scored = pc.is_null(result.column("score_error"))
    for name in ("quality_distance", "quality_pass", "quality_defect", *COLUMNS, *REGION_COLUMNS):
        column = (
            pc.if_else(scored, result.column(name), meta.column(name))
            if name in meta.column_names
            else result.column(name)
        )
        if name in meta.column_names:
            meta = meta.set_column(
                meta.column_names.index(name), name, column.cast(meta.schema.field(name).type)
            )
        else:
            meta = meta.append_column(name, column)
    now = pa.array([time.time()] * meta.num_rows, pa.float64())
    meta = meta.set_column(meta.column_names.index("completed_at"), "completed_at", now)
    store.metadata.write_part(meta, f"{new_run_id()}-score")
