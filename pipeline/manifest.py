"""Manifest reading and schema checks (DESIGN.md, "Manifest").

A manifest is Parquet: one file, a directory or a glob on any fsspec URI. The schema
is checked once, before any work: unknown columns fail the run with a message that
names them. Per-row problems (bad values) are not schema errors: they become
``invalid_request`` rows in planning.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .config import Config, ConfigError

ROW_INDEX = "manifest_row"  # added on read: global row number, for duplicate-id precedence

# column -> what it holds (for messages); types are checked per value while planning
COLUMNS: dict[str, str] = {
    "id": "string",
    "image": "string URI",
    "image_bytes": "binary",
    "width": "int",
    "height": "int",
    "aspect_ratio": "'W:H' string or float",
    "reference_offset_x": "int",
    "reference_offset_y": "int",
    "auto_crop": "bool",
    "anchor": "string",
    "mode": "'high' | 'fast'",
    "output_format": "'png' | 'jpeg' | 'webp'",
    "prompt": "string",
    "seed": "int",
    "num_variants": "int",
    "image_width": "int",
    "image_height": "int",
}

# Common names from other tools -> what to use instead.
HINTS = {
    "bbox_x1": "use reference_offset_x (the reference's left edge on the canvas)",
    "bbox_y1": "use reference_offset_y (the reference's top edge on the canvas)",
    "bbox_x0": "use reference_offset_x (the reference's left edge on the canvas)",
    "bbox_y0": "use reference_offset_y (the reference's top edge on the canvas)",
    "x": "use reference_offset_x", "y": "use reference_offset_y",
    "offset_x": "use reference_offset_x", "offset_y": "use reference_offset_y",
    "ratio": "use aspect_ratio", "aspect": "use aspect_ratio",
    "canvas_width": "use width", "canvas_height": "use height",
    "url": "use image", "uri": "use image", "path": "use image", "image_url": "use image",
    "format": "use output_format", "quality": "use mode",
}


def check_schema(schema: pa.Schema, cfg: Config, source: str = "") -> None:
    """Raise ``ConfigError`` for a manifest schema the run cannot use."""
    where = f"manifest {source}: " if source else "manifest: "
    names = [n for n in schema.names if n != ROW_INDEX]
    passthrough = set(cfg.output.passthrough_columns)
    unknown = [n for n in names if n not in COLUMNS and n not in passthrough]
    if unknown:
        parts = []
        for n in unknown:
            hint = HINTS.get(n.lower())
            parts.append(f"`{n}` ({hint})" if hint else f"`{n}`")
        raise ConfigError(
            where + "unknown column" + ("s " if len(unknown) > 1 else " ") + ", ".join(parts)
            + "; add it to output.passthrough_columns to copy it to the metadata"
        )
    missing_pt = [c for c in cfg.output.passthrough_columns if c not in names]
    if missing_pt:
        raise ConfigError(where + f"output.passthrough_columns names {missing_pt} but the manifest has no such column")
    clash = [c for c in cfg.output.passthrough_columns if c in COLUMNS]
    if clash:
        raise ConfigError(f"output.passthrough_columns: {clash} are manifest columns already in the metadata; remove them")
    if "id" not in names:
        raise ConfigError(where + "no `id` column; every row needs a unique id")
    if "image" not in names and "image_bytes" not in names:
        raise ConfigError(where + "no `image` or `image_bytes` column; each row needs its source image")
    d = cfg.defaults
    has_target = {"width", "height", "aspect_ratio"} & set(names)
    if not has_target and d.aspect_ratio is None and d.width is None:
        raise ConfigError(
            where + "no `width`/`height` or `aspect_ratio` column and no target in `defaults:`; "
            "set defaults.aspect_ratio (e.g. '1:1') or defaults.width/height"
        )
    for col in ("image_bytes",):
        if col in names:
            t = schema.field(col).type
            if not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_null(t)):
                raise ConfigError(where + f"column `{col}` must be binary, is {t}")


def files(cfg: Config):
    try:
        return storage.retry(storage.expand, cfg.input.manifest, cfg.input.storage_options, attempts=3)
    except FileNotFoundError as e:
        raise ConfigError(f"input.manifest: {e}") from None
    except Exception as e:  # noqa: BLE001 - credentials, network, permissions: stop before any work
        raise ConfigError(f"input.manifest {cfg.input.manifest} cannot be read: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None


def read_schema(cfg: Config) -> pa.Schema:
    fs, paths = files(cfg)
    schemas = [pq.read_schema(p, filesystem=fs) for p in paths]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ConfigError(f"input.manifest: the files' schemas disagree: {e}") from None
    check_schema(schema, cfg, cfg.input.manifest)
    return schema


def read(cfg: Config, columns: list[str] | None = None) -> pa.Table:
    """Whole manifest as one table, in file order, with a ``manifest_row`` column."""
    fs, paths = files(cfg)
    tables = []
    for p in paths:
        t = pq.read_table(p, filesystem=fs, columns=None)
        check_schema(t.schema, cfg, storage.unstrip(fs, p))
        if columns is not None:
            t = t.select([c for c in columns if c in t.column_names])
        tables.append(t)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.append_column(ROW_INDEX, pa.array(range(table.num_rows), type=pa.int64()))
