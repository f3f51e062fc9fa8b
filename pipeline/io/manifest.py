"""Manifest reading and schema checks (docs/contracts.md, "Manifest").

A manifest is Parquet, CSV, TSV or JSON Lines (by extension, or ``input.format``):
one file, a directory or a glob on any fsspec URI. The schema is checked once, before
any work: unknown columns fail the run with a message that names them; a file that is
not a readable table is one line naming it. Per-row problems (bad values) are not
schema errors: they become ``invalid_request`` rows in planning.

At catalogue scale the driver never holds the manifest: ``scan`` reads only the ``id``
column (for the duplicate rule and row numbers) and cuts the files into slices, and
workers read their slice with ``read_slice``.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from ..common import retries, storage
from ..config import Config, ConfigError, InputConfig, LimitsConfig

ROW_INDEX = "manifest_row"  # added on read: global row number, for duplicate-id precedence
# added on read of a text manifest whose line is over limits.max_manifest_line_bytes: the
# line is read as its id alone and this column holds its size (planning rejects the row)
LINE_BYTES = "__line_bytes"
INTERNAL = (ROW_INDEX, LINE_BYTES)

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
    "image_version": "string: the source's version as the catalogue knows it (ETag, updated_at)",
    "subject_x0": "int: the product's box in the source, px (anchor: subject)",
    "subject_y0": "int",
    "subject_x1": "int",
    "subject_y1": "int",
    "backdrop_kind": "'flat' | 'gradient' | 'scene' (outpaint manifest --analyze)",
    "backdrop_color": "'#rrggbb'",
    "backdrop_sides": "letters of the plain sides: l, t, r, b",
}

# Common names from other tools -> what to use instead.
HINTS = {
    "bbox_x1": "use reference_offset_x (the reference's left edge on the canvas)",
    "bbox_y1": "use reference_offset_y (the reference's top edge on the canvas)",
    "bbox_x0": "use reference_offset_x (the reference's left edge on the canvas)",
    "bbox_y0": "use reference_offset_y (the reference's top edge on the canvas)",
    "x": "use reference_offset_x",
    "y": "use reference_offset_y",
    "offset_x": "use reference_offset_x",
    "offset_y": "use reference_offset_y",
    "ratio": "use aspect_ratio",
    "aspect": "use aspect_ratio",
    "canvas_width": "use width",
    "canvas_height": "use height",
    "url": "use image",
    "uri": "use image",
    "path": "use image",
    "image_url": "use image",
    "format": "use output_format",
    "quality": "use mode",
}


def check_schema(schema: pa.Schema, cfg: Config, source: str = "") -> None:
    """Raise ``ConfigError`` for a manifest schema the run cannot use."""
    where = f"manifest {source}: " if source else "manifest: "
    names = [n for n in schema.names if n not in INTERNAL]
    if "id" not in names:  # first: a missing id explains an "unknown" sku/key column
        raise ConfigError(
            where
            + "no `id` column; every row needs a unique id (its columns are "
            + ", ".join(f"`{n}`" for n in names[:12])
            + "); rename the key column to `id`"
        )
    passthrough = set(cfg.output.passthrough_columns)
    unknown = [n for n in names if n not in COLUMNS and n not in passthrough]
    if unknown:
        parts = []
        for n in unknown:
            hint = HINTS.get(n.lower())
            parts.append(f"`{n}` ({hint})" if hint else f"`{n}`")
        raise ConfigError(
            where
            + "unknown column"
            + ("s " if len(unknown) > 1 else " ")
            + ", ".join(parts)
            + "; add it to output.passthrough_columns to copy it to the metadata"
        )
    missing_pt = [c for c in cfg.output.passthrough_columns if c not in names]
    if missing_pt:
        raise ConfigError(
            where
            + f"output.passthrough_columns names {missing_pt} but the manifest has no such column"
        )
    clash = [c for c in cfg.output.passthrough_columns if c in COLUMNS]
    if clash:
        raise ConfigError(
            f"output.passthrough_columns: {clash} are manifest columns already in the metadata; remove them"
        )
    if "image" not in names and "image_bytes" not in names:
        raise ConfigError(
            where + "no `image` or `image_bytes` column; each row needs its source image"
        )
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


# --------------------------------------------------------------------------- formats

EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
# Text formats infer types per file; these columns are strings whatever they look like
# (an id "00123" stays "00123", a ratio "1.5" is parsed by the planner like "3:2").
TEXT_COLUMNS = (
    "id",
    "image",
    "aspect_ratio",
    "anchor",
    "mode",
    "output_format",
    "prompt",
    "image_version",
    "backdrop_kind",
    "backdrop_color",
    "backdrop_sides",
)


def file_format(path: str, cfg: Config) -> str:
    if cfg.input.format != "auto":
        return cfg.input.format
    ext = posixpath.splitext(path.lower())[1]
    return EXTENSIONS.get(ext, "parquet")


# a manifest that cannot be found fails the run at start: fewer tries than a row's source
FIND_RETRIES = retries.Policy(base=0.2, cap=5.0, attempts=3, full_jitter=True)


def files(cfg: Config):
    """``(fs, paths)`` of the manifest: a file, a directory (every manifest file under
    it, recursively) or a glob."""
    # a directory's .json files may be anything (run.json): only explicit files or globs read them
    suffixes = tuple(
        e for e, f in EXTENSIONS.items() if e != ".json" and cfg.input.format in ("auto", f)
    )
    try:
        return storage.retry(
            storage.expand,
            cfg.input.manifest,
            cfg.input.storage_options,
            suffix=suffixes,
            policy=FIND_RETRIES,
        )
    except FileNotFoundError as e:
        raise ConfigError(f"input.manifest: {e}") from None
    except Exception as e:  # noqa: BLE001 - credentials, network, permissions: stop before any work
        raise ConfigError(
            f"input.manifest {cfg.input.manifest} cannot be read: {_first_line(e)}"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _unreadable(fs, path: str, fmt: str, e: BaseException) -> ConfigError:
    return ConfigError(
        f"input.manifest: {storage.unstrip(fs, path)} is not a readable {fmt} table "
        f"({_first_line(e)}); set input.format if its extension is misleading"
    )


def _shorten(data: bytes, fmt: str, max_line: int) -> tuple[bytes, dict[int, int]]:
    """Lines over ``max_line`` bytes replaced by a line holding only their id (the row is
    then rejected ``row_too_large``, never parsed whole); returns the data and, per data
    row, the size of its original line."""
    lines = data.split(b"\n")
    if max(map(len, lines), default=0) <= max_line:
        return data, {}
    delimiter = b"\t" if fmt == "tsv" else b","
    header = [h.strip().strip(b'"') for h in lines[0].split(delimiter)] if fmt != "jsonl" else []
    id_at = header.index(b"id") if b"id" in header else None
    sizes, row = {}, 0
    for k, line in enumerate(lines):
        if fmt != "jsonl" and k == 0:
            continue
        if not line.strip():
            continue
        if len(line) > max_line:
            sizes[row] = len(line)
            lines[k] = _id_only(line[:65536], fmt, delimiter, header, id_at, k)
        row += 1
    return b"\n".join(lines), sizes


def _id_only(
    head: bytes, fmt: str, delimiter: bytes, header: list[bytes], id_at: int | None, k: int
) -> bytes:
    """A short line with the over-long line's id (read from its first bytes), or a stand-in
    id naming the line when it cannot be read there."""
    found = None
    if fmt == "jsonl":
        m = re.search(rb'"id"\s*:\s*"([A-Za-z0-9._-]{1,200})"', head)
        found = m.group(1) if m else None
        return json.dumps({"id": found.decode() if found else f".line-{k + 1}"}).encode()
    if id_at is not None:
        fields = head.split(delimiter, id_at + 1)
        if len(fields) > id_at + 1 and re.fullmatch(
            rb"[A-Za-z0-9._-]{1,200}", fields[id_at].strip(b'"')
        ):
            found = fields[id_at].strip(b'"')
    value = found or f".line-{k + 1}".encode()
    return delimiter.join(value if i == id_at else b"" for i in range(len(header)))


def _read_text(
    fs, path: str, fmt: str, columns: list[str] | None = None, max_line: int = 1 << 20
) -> pa.Table:
    with fs.open(path, "rb") as f:
        data, long_lines = _shorten(f.read(), fmt, max_line)
    block = max_line + (1 << 20)  # a line of up to max_line bytes fits in one block
    if fmt in ("csv", "tsv"):
        conv = pcsv.ConvertOptions(
            column_types={c: pa.string() for c in TEXT_COLUMNS},
            strings_can_be_null=True,
            include_columns=columns,
            include_missing_columns=False,
        )
        t = pcsv.read_csv(
            io.BytesIO(data),
            read_options=pcsv.ReadOptions(block_size=block),
            parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ","),
            convert_options=conv,
        )
    else:
        t = pjson.read_json(io.BytesIO(data), read_options=pjson.ReadOptions(block_size=block))
        if columns is not None:
            t = t.select([c for c in columns if c in t.column_names])
    for c in TEXT_COLUMNS:  # JSON numbers in string columns (e.g. numeric ids)
        if (
            c in t.column_names
            and c != "aspect_ratio"
            and not pa.types.is_string(t.column(c).type)
            and not pa.types.is_null(t.column(c).type)
        ):
            t = t.set_column(t.column_names.index(c), c, t.column(c).cast(pa.string()))
    if long_lines:
        sizes = np.zeros(t.num_rows, np.int64)
        for row, size in long_lines.items():
            sizes[row] = size
        t = t.append_column(LINE_BYTES, pa.array(sizes, mask=sizes == 0))
    return t


def read_file(
    fs, path: str, fmt: str, columns: list[str] | None = None, max_line: int = 1 << 20
) -> pa.Table:
    """One manifest file as a table; ``ConfigError`` (one line) if it is not a table.
    ``max_line``: text formats' longest line read whole (``limits.max_manifest_line_bytes``)."""
    try:
        if fmt == "parquet":
            return storage.retry(pq.read_table, path, filesystem=fs, columns=columns)
        return storage.retry(_read_text, fs, path, fmt, columns, max_line)
    except ConfigError:
        raise
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as e:
        if isinstance(e, OSError) and storage.is_transient(e):
            raise
        raise _unreadable(fs, path, fmt, e) from None


def _file_schema(fs, path: str, fmt: str) -> pa.Schema:
    if fmt == "parquet":
        try:
            return storage.retry(pq.read_schema, path, filesystem=fs)
        except (pa.ArrowException, OSError) as e:
            if isinstance(e, OSError) and storage.is_transient(e):
                raise
            raise _unreadable(fs, path, fmt, e) from None
    return read_file(fs, path, fmt).schema


def read_schema(cfg: Config) -> pa.Schema:
    fs, paths = files(cfg)
    schemas = []
    for p in paths:
        sch = _file_schema(fs, p, file_format(p, cfg))
        check_schema(sch, cfg, storage.unstrip(fs, p))
        schemas.append(sch)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ConfigError(f"input.manifest: the files' schemas disagree: {e}") from None
    check_schema(schema, cfg, cfg.input.manifest)
    return schema


def read(cfg: Config, columns: list[str] | None = None) -> pa.Table:
    """Whole manifest as one table, in file order, with a ``manifest_row`` column
    (dry runs and tests; ``outpaint run`` reads slices in workers instead)."""
    fs, paths = files(cfg)
    tables = []
    for p in paths:
        t = read_file(fs, p, file_format(p, cfg), max_line=cfg.limits.max_manifest_line_bytes)
        check_schema(t.schema, cfg, storage.unstrip(fs, p))
        if columns is not None:
            t = t.select([c for c in columns if c in t.column_names])
        tables.append(t)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.append_column(ROW_INDEX, pa.array(np.arange(table.num_rows, dtype=np.int64)))


# --------------------------------------------------------------------------- scale


@dataclass(frozen=True)
class Slice:
    """Rows of one manifest file that one worker task plans: Parquet row groups
    ``[group0, group1)``, or the whole file for text formats (group1 = -1)."""

    uri: str
    format: str
    group0: int
    group1: int
    row0: int  # manifest_row of the slice's first row


@dataclass
class ManifestIndex:
    """What the driver keeps of a manifest: its ids (the duplicate rule and the resume
    check need them; ~30 bytes a row in Arrow, the driver's only per-row memory) and
    the slices workers read. Never the rows themselves. ``schemes``: the URI schemes of
    the sources seen in each file's first rows (what the run must be able to reach)."""

    ids: pa.ChunkedArray
    slices: list[Slice]
    schema: pa.Schema
    schemes: set = field(default_factory=set)

    @property
    def rows(self) -> int:
        return len(self.ids)


def scan(cfg: Config, slice_rows: int = 65_536) -> ManifestIndex:
    """Check every file's schema, read only the ``id`` column, and cut the files into
    slices of about ``slice_rows`` rows (Parquet: whole row groups)."""
    fs, paths = files(cfg)
    ids, slices, schemas = [], [], []
    schemes: set = set()
    row0 = 0
    for p in paths:
        fmt = file_format(p, cfg)
        uri = storage.unstrip(fs, p)
        if fmt == "parquet":
            try:
                pf = storage.retry(pq.ParquetFile, p, filesystem=fs)
            except (pa.ArrowException, OSError) as e:
                if isinstance(e, OSError) and storage.is_transient(e):
                    raise
                raise _unreadable(fs, p, fmt, e) from None
            schema = pf.schema_arrow
            check_schema(schema, cfg, uri)
            col = storage.retry(_ids, pf, slice_rows, schema.field("id").type)
            if "image" in schema.names and pf.metadata.num_row_groups:
                schemes |= _schemes(
                    storage.retry(pf.read_row_group, 0, columns=["image"]).column("image")
                )
            start, rows = 0, 0
            for g in range(pf.metadata.num_row_groups):
                rows += pf.metadata.row_group(g).num_rows
                if rows and (rows >= slice_rows or g == pf.metadata.num_row_groups - 1):
                    slices.append(Slice(uri, fmt, start, g + 1, row0))
                    row0 += rows
                    start, rows = g + 1, 0
        else:
            t = read_file(fs, p, fmt, max_line=cfg.limits.max_manifest_line_bytes)
            schema = t.schema
            check_schema(schema, cfg, uri)
            col = t.column("id")
            if "image" in t.column_names:
                schemes |= _schemes(t.column("image").slice(0, 1000))
            del t
            if len(col):
                slices.append(Slice(uri, fmt, 0, -1, row0))
                row0 += len(col)
        schemas.append(schema)
        ids.extend(col.cast(pa.string()).chunks)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ConfigError(f"input.manifest: the files' schemas disagree: {e}") from None
    check_schema(schema, cfg, cfg.input.manifest)
    if cfg.input.image_root:
        schemes |= _schemes(pa.array([cfg.input.image_root]))
    return ManifestIndex(pa.chunked_array(ids, pa.string()), slices, schema, schemes)


def _ids(pf, batch_rows: int, type_) -> pa.ChunkedArray:
    """The id column, a row group at a time (the reader's buffers stay one group's)."""
    return pa.chunked_array(
        [
            b.column(0)
            for b in pf.iter_batches(batch_size=batch_rows, columns=["id"], use_threads=False)
        ],
        type_,
    )


def _schemes(images) -> set:
    """URI schemes among source values ("" for local paths)."""
    col = images.combine_chunks() if isinstance(images, pa.ChunkedArray) else images
    if pa.types.is_null(col.type):
        return set()
    head = pc.extract_regex(
        col.cast(pa.string()).drop_null(), r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://"
    )
    found = {d["scheme"].lower() for d in head.drop_null().to_pylist()}
    return found | ({""} if head.null_count else set())


def check_reachable(index: ManifestIndex) -> None:
    """Fail at start, in one line, when the sources' scheme needs a package that is missing."""
    import importlib.util

    needs = {
        "http": ("urllib3", "urllib3"),
        "https": ("urllib3", "urllib3"),
        "s3": ("s3fs", "outpaint[s3]"),
        "gs": ("gcsfs", "outpaint[gcs]"),
        "gcs": ("gcsfs", "outpaint[gcs]"),
        "az": ("adlfs", "outpaint[azure]"),
        "abfs": ("adlfs", "outpaint[azure]"),
    }
    for scheme in sorted(index.schemes):
        module, extra = needs.get(scheme, (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"the manifest's sources are {scheme}:// URIs, which need the {module} package: "
                f"pip install '{extra}'"
            )


def read_slice(
    piece: Slice, input_cfg: InputConfig, limits: LimitsConfig, chunk_rows: int = 65_536
) -> Iterator[pa.Table]:
    """The rows of one slice in chunks of at most ``chunk_rows``, each with its
    ``manifest_row`` (run in workers)."""
    fs, path = storage.filesystem(piece.uri, input_cfg.storage_options)
    row = piece.row0
    if piece.format == "parquet":
        pf = storage.retry(pq.ParquetFile, path, filesystem=fs)
        batches = (
            pa.Table.from_batches([b])
            for b in pf.iter_batches(
                batch_size=chunk_rows, row_groups=range(piece.group0, piece.group1)
            )
        )
    else:
        t = read_file(fs, path, piece.format, max_line=limits.max_manifest_line_bytes)
        batches = (t.slice(s, chunk_rows) for s in range(0, t.num_rows, chunk_rows))
    for t in batches:
        yield t.append_column(ROW_INDEX, pa.array(np.arange(row, row + t.num_rows, dtype=np.int64)))
        row += t.num_rows
