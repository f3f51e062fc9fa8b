"""The metadata parts under ``metadata/``: one row per manifest row (the latest run's
wins), written in parts while a run goes, compacted to one row per id at its end, and
read back in row groups (millions of rows: never all columns of every row at once).

The metadata *is* the run state: a rerun reads it to find the rows already done.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..common import codes, storage
from .done import _sorted_lookup, key_fingerprints, sorted_keys
from .folder import OutputFolder

METADATA = "metadata"
IMAGES = "images"
ROW_GROUP = 65_536  # metadata row groups: what a reader decodes at once (resume, counts, report)
_DEDUPE_KEYS = ("id", "error_code", "manifest_row", "completed_at", "run_id")
_KEY_COLUMNS = ("id", "status", *_DEDUPE_KEYS[1:])


@dataclass
class Compacted:
    rows: int  # metadata rows kept: one per id (and per duplicate_id row)
    orphaned: list[str]  # image names no kept row names any more


# free text that may quote a URI or an exception, and the source URI itself (a password in it)
TEXT_COLUMNS = ("error_message", "api_note", "image")


class MetadataParts:
    """``metadata/part-{shard}.parquet`` of one output folder. ``scrub`` (a
    ``secrets.Scrubber``) masks credentials in the free-text columns of every part written."""

    def __init__(self, folder: OutputFolder, scrub=None):
        self.folder = folder
        self.scrub = scrub

    def files(self) -> list[str]:
        return self.folder.find(
            METADATA, lambda n: n.startswith("part-") and n.endswith(".parquet")
        )

    def write_part(self, table: pa.Table, shard: str) -> str:
        """One part, whole: it appears complete or not at all."""
        if self.scrub is not None:
            for name in TEXT_COLUMNS:
                if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
                    i = table.column_names.index(name)
                    table = table.set_column(i, name, self.scrub.column(table.column(name)))
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=ROW_GROUP)
        name = storage.join(METADATA, f"part-{shard}.parquet")
        self.folder.put(name, buf.getvalue())
        return self.folder.path(name)

    def _read(self, path: str, **kwargs) -> pa.Table:
        return storage.retry(pq.read_table, path, filesystem=self.folder.fs, **kwargs)

    def read_all(self, files: list[str], columns: list[str] | None = None) -> pa.Table:
        """Every row of every part (superseded ones too)."""
        want = None if columns is None else list(dict.fromkeys(list(columns) + list(_DEDUPE_KEYS)))
        tables = []
        for f in files:
            t = self._read(f)
            if want is not None:
                t = t.select([c for c in want if c in t.column_names])
            tables.append(t)
        return pa.concat_tables(tables, promote_options="permissive")

    def read_shards(self, shard_prefix: str, columns: list[str]) -> pa.Table | None:
        """``columns`` of the parts whose shard starts with ``shard_prefix`` (one run's bulk
        parts), as written; None when there are none."""
        files = [
            f for f in self.files() if posixpath.basename(f).startswith(f"part-{shard_prefix}")
        ]
        if not files:
            return None
        return pa.concat_tables(
            [self._read(f, columns=columns) for f in files], promote_options="permissive"
        )

    def count_rows(self) -> int:
        """Rows in every part, from the Parquet footers."""
        fs = self.folder.fs
        return sum(storage.retry(pq.read_metadata, f, filesystem=fs).num_rows for f in self.files())

    def count(self, ids) -> codes.Counts:
        """Counts per status and per code of the (compacted) metadata rows of ``ids``
        (strings, or their ``sorted_keys``), a row group at a time, matched by fingerprint."""
        counted = codes.Counts()
        mhi, mlo = ids if isinstance(ids, tuple) else sorted_keys(ids)
        for t in self.batches(self.files(), ("id", "status", "error_code", "review_status")):
            member = _sorted_lookup(mhi, mlo, *key_fingerprints(t.column("id"))) >= 0
            counted.add(t.filter(pa.array(member)))
        return counted

    def batches(self, files: list[str], columns, rows: int = 16_384):
        """The parts' ``columns`` (those present), in record batches, one row group decoded
        at a time and no read-ahead: bounded memory whatever a part's size."""
        for f in files:
            pf = storage.retry(pq.ParquetFile, f, filesystem=self.folder.fs, pre_buffer=False)
            cols = [c for c in columns if c in pf.schema_arrow.names]
            for g in range(pf.metadata.num_row_groups):
                for batch in pf.iter_batches(
                    batch_size=rows, columns=cols, row_groups=[g], use_threads=False
                ):
                    yield pa.Table.from_batches([batch])

    def read(self, columns: list[str] | None = None) -> pa.Table | None:
        """All parts, latest row per id (by ``completed_at``); None when there are none."""
        files = self.files()
        if not files:
            return None
        t = latest_per_id(self.read_all(files, columns))
        return t if columns is None else t.select([c for c in columns if c in t.column_names])

    def compact(self, shard_prefix: str, part_rows: int = 250_000) -> Compacted:
        """Rewrite the metadata as one row per id; returns the rows kept and the images
        that rows an id's newer ok row superseded named, which no kept row names (a new
        output format, fewer variants: the caller removes them).

        Sized for millions of rows: only the key columns of every row are held at once
        (to pick the latest per id); the rows themselves stream from old part to new,
        one old part at a time (a row group each, sorted by id), into new parts of at
        most about ``part_rows`` rows, all with one unified schema. New parts are written first, old ones deleted after: a
        crash in between leaves duplicates that the next compaction removes again.
        """
        old = self.files()
        if not old:
            return Compacted(0, [])
        schemas = [storage.retry(pq.read_schema, f, filesystem=self.folder.fs) for f in old]
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        key_schema = pa.schema([schema.field(c) for c in _KEY_COLUMNS if c in schema.names])
        keys, offsets = [], [0]
        for f, sch in zip(old, schemas):
            cols = [c for c in _KEY_COLUMNS if c in sch.names]
            t = storage.retry(
                pq.read_table,
                f,
                filesystem=self.folder.fs,
                columns=cols,
                read_dictionary=[c for c in ("status", "error_code", "run_id") if c in cols],
            )
            keys.append(conform(t, key_schema))
            offsets.append(offsets[-1] + t.num_rows)
        every = pa.concat_tables(keys)
        every = every.append_column("_g", pa.array(np.arange(every.num_rows, dtype=np.int64)))
        latest = latest_per_id(every)
        kept = np.zeros(every.num_rows, bool)
        kept[latest.column("_g").to_numpy()] = True
        # rows that an id's newer ok row superseded: their images may have another name
        ok_ids = (
            latest.filter(pc.equal(latest.column("status"), "ok")).column("id")
            if "status" in latest.column_names
            else pa.array([], pa.string())
        )
        superseded = ~kept & np.asarray(
            pc.fill_null(pc.is_in(every.column("id"), value_set=ok_ids), False)
        )
        del every, latest, keys
        candidates: set[str] = set()
        writer = _PartWriter(self.folder, shard_prefix, schema, part_rows)
        for k, f in enumerate(old):
            lo, hi = offsets[k], offsets[k + 1]
            take, cand = np.flatnonzero(kept[lo:hi]), np.flatnonzero(superseded[lo:hi])
            if not len(take) and not len(cand):
                continue
            t = conform(storage.retry(pq.read_table, f, filesystem=self.folder.fs), schema)
            if len(cand):
                candidates |= self._image_names(t.take(pa.array(cand)))
            writer.write(t.take(pa.array(take)).sort_by([("id", "ascending")]))
            del t
        new = writer.close()
        current: set[str] = set()
        if candidates:
            cols = [c for c in ("output_uri", "output_uris") if c in schema.names]
            for p in new:
                current |= (
                    self._image_names(pq.read_table(p, filesystem=self.folder.fs, columns=cols))
                    & candidates
                )
        for p in old:
            if p not in new:
                self.folder.remove_path(p)
        return Compacted(int(kept.sum()), sorted(candidates - current))

    def _image_names(self, t: pa.Table) -> set[str]:
        """Names under images/ that rows of ``t`` refer to (output_uri, output_uris)."""
        prefix = self.folder.uri_of(IMAGES) + "/"
        out: set[str] = set()
        for c in ("output_uri", "output_uris"):
            if c in t.column_names:
                col = t.column(c)
                vals = pc.list_flatten(col) if pa.types.is_list(col.type) else col
                out.update(
                    u[len(prefix) :] for u in vals.drop_null().to_pylist() if u.startswith(prefix)
                )
        return out


class _PartWriter:
    """New metadata parts written as a stream of row groups (no part buffered whole),
    each appearing complete (``OutputFolder.writing``)."""

    def __init__(self, folder: OutputFolder, shard_prefix: str, schema: pa.Schema, part_rows: int):
        self.folder = folder
        self.prefix = shard_prefix
        self.schema = schema
        self.part_rows = part_rows
        self.done: list[str] = []
        self._open = None  # (context manager, file, writer, final path) of the part being written
        self._rows = 0

    def write(self, t: pa.Table) -> None:
        if not t.num_rows:
            return
        if self._open is None:
            name = storage.join(METADATA, f"part-{self.prefix}-{len(self.done):05d}.parquet")
            writing = self.folder.writing(name)
            f = writing.__enter__()
            self._open = (writing, pq.ParquetWriter(f, self.schema), self.folder.path(name))
        self._open[1].write_table(t, row_group_size=ROW_GROUP)
        self._rows += t.num_rows
        if self._rows >= self.part_rows:
            self._finish()

    def _finish(self) -> None:
        writing, writer, final = self._open
        writer.close()
        writing.__exit__(None, None, None)
        self.done.append(final)
        self._open = None
        self._rows = 0

    def close(self) -> list[str]:
        if self._open is not None:
            self._finish()
        return self.done


def conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` with exactly ``schema``'s columns, in order: missing ones null (older
    metadata), dictionary-read or narrower ones cast."""
    cols = []
    for f in schema:
        if f.name in t.column_names:
            c = t.column(f.name)
            cols.append(c if c.type == f.type else c.cast(f.type))
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def latest_per_id(t: pa.Table) -> pa.Table:
    """One metadata row per manifest row: the latest (by ``completed_at``) per id.

    Rows rejected as ``duplicate_id`` are manifest rows too: each keeps its own row,
    keyed by (id, manifest row), and only those of the newest run that saw them
    survive, so duplicates that leave the manifest leave the metadata.
    """
    if t.num_rows == 0:
        return t
    n = t.num_rows
    idx = np.arange(n)
    if "completed_at" in t.column_names:
        idx = np.lexsort((idx, t.column("completed_at").fill_null(-1.0).to_numpy()))
    t = t.take(pa.array(idx))
    ids = t.column("id").cast(pa.string())
    dup = (
        pc.fill_null(pc.equal(t.column("error_code"), "duplicate_id"), False)
        if "error_code" in t.column_names
        else pa.array(np.zeros(n, bool))
    )
    slot = (
        pc.if_else(dup, t.column("manifest_row").cast(pa.string()), "")
        if "manifest_row" in t.column_names
        else pa.array([""] * n)
    )
    key = pc.binary_join_element_wise(ids, slot, "\x1f")
    keyed = pa.table({"key": key, "pos": pa.array(np.arange(n))})
    last = np.sort(keyed.group_by("key").aggregate([("pos", "max")]).column("pos_max").to_numpy())
    t = t.take(pa.array(last))
    if "run_id" in t.column_names:
        dup = np.asarray(pc.fill_null(pc.equal(t.column("error_code"), "duplicate_id"), False))
        if dup.any():
            d = t.filter(pa.array(dup))
            newest = d.group_by("id").aggregate([("run_id", "max")])
            newest_run = dict(
                zip(newest.column("id").to_pylist(), newest.column("run_id_max").to_pylist())
            )
            runs = t.column("run_id").to_pylist()
            idl = t.column("id").to_pylist()
            keep = [not dd or runs[i] == newest_run[idl[i]] for i, dd in enumerate(dup)]
            t = t.filter(pa.array(keep))
    return t
