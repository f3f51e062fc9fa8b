"""The output layout under ``output.uri`` (docs/contracts.md, Outputs) and its state.

```
images/{id}.{ext}              one per ok row; appears only complete
metadata/part-{shard}.parquet  one row per manifest row (latest wins), the run state
run.json                       config, versions, counts, timings
report.html                    review page
_tmp/                          staging for atomic local writes; never under images/
```

The metadata *is* the state: a rerun reads it to find rows already ``ok`` with the
same ``request_hash`` whose image exists; no separate watermark file.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import codes, storage
from ..config import ConfigError
from .done import DoneSet, fingerprints
from .imageio import EXTENSIONS

IMAGES, METADATA, TMP = "images", "metadata", "_tmp"


_DEDUPE_KEYS = ("id", "error_code", "manifest_row", "completed_at", "run_id")
_KEY_COLUMNS = ("id", "status", *_DEDUPE_KEYS[1:])


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent drivers."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def image_name(row_id: str, fmt: str, variant: int | None = None) -> str:
    suffix = f"-{variant}" if variant is not None else ""
    return f"{row_id}{suffix}.{EXTENSIONS[fmt]}"


class OutputStore:
    """Storage for one output URI. Picklable (fsspec filesystems are), so workers
    receive it and write images straight to storage."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri.rstrip("/")
        self.options = dict(storage_options or {})
        self.fs, self.root = storage.filesystem(self.uri, self.options)
        self.local = storage.is_local(self.uri) or type(self.fs).__name__ == "LocalFileSystem"

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    # ---------------------------------------------------------------- checks
    def check_writable(self) -> None:
        """Fail fast, in one line, on unreachable storage or missing permissions."""
        probe = self.path(TMP, f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.path(TMP), exist_ok=True)
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as e:  # noqa: BLE001 - any storage error means "cannot run here"
            raise ConfigError(f"output.uri {self.uri} is not writable: {type(e).__name__}: {e}") from None

    def has_outputs(self) -> bool:
        return bool(self.metadata_files()) or bool(self.existing_images())

    # ---------------------------------------------------------------- images
    def write_image(self, name: str, data: bytes) -> str:
        """Write ``images/{name}`` so that it only ever appears complete."""
        final = self.path(IMAGES, name)
        if self.local:
            # same filesystem: write aside, then an atomic rename into place
            tmp = self.path(TMP, f"{name}.{uuid.uuid4().hex}.part")
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            self.fs.makedirs(self.path(TMP), exist_ok=True)
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, final)
        else:
            # object stores: one PUT (or a multipart upload) is atomic at the key
            storage.retry(self.fs.pipe_file, final, data)
        return self.uri_of(IMAGES, name)

    def existing_images(self) -> set[str]:
        """Names under images/ (one listing, not one request per row)."""
        try:
            self.fs.invalidate_cache()
            return {posixpath.basename(p) for p in self.fs.find(self.path(IMAGES))}
        except FileNotFoundError:
            return set()

    # ---------------------------------------------------------------- metadata
    def metadata_files(self) -> list[str]:
        try:
            self.fs.invalidate_cache()
            return sorted(p for p in self.fs.find(self.path(METADATA)) if p.endswith(".parquet")
                          and posixpath.basename(p).startswith("part-"))
        except FileNotFoundError:
            return []

    def write_metadata_part(self, table: pa.Table, shard: str) -> str:
        path = self.path(METADATA, f"part-{shard}.parquet")
        if self.local:
            tmp = self.path(TMP, f"part-{shard}.{uuid.uuid4().hex}.parquet")
            self.fs.makedirs(self.path(TMP), exist_ok=True)
            self.fs.makedirs(self.path(METADATA), exist_ok=True)
            pq.write_table(table, tmp, filesystem=self.fs)
            self.fs.mv(tmp, path)
        else:
            storage.retry(pq.write_table, table, path, filesystem=self.fs)
        return path

    def _read_parts(self, files: list[str], columns: list[str] | None = None) -> pa.Table:
        """Every row of every part (superseded ones too)."""
        want = None if columns is None else list(dict.fromkeys(list(columns) + list(_DEDUPE_KEYS)))
        tables = []
        for f in files:
            t = storage.retry(pq.read_table, f, filesystem=self.fs)
            if want is not None:
                t = t.select([c for c in want if c in t.column_names])
            tables.append(t)
        return pa.concat_tables(tables, promote_options="permissive")

    def read_metadata_parts(self, shard_prefix: str, columns: list[str]) -> pa.Table | None:
        """``columns`` of the parts whose shard starts with ``shard_prefix`` (one run's
        bulk parts), as written; None when there are none."""
        files = [f for f in self.metadata_files() if posixpath.basename(f).startswith(f"part-{shard_prefix}")]
        if not files:
            return None
        return pa.concat_tables([storage.retry(pq.read_table, f, filesystem=self.fs, columns=columns)
                                 for f in files], promote_options="permissive")

    def count_metadata_rows(self) -> int:
        """Rows in every part, from the Parquet footers."""
        return sum(storage.retry(pq.read_metadata, f, filesystem=self.fs).num_rows for f in self.metadata_files())

    def count_rows(self, ids: pa.Array) -> tuple[dict, dict]:
        """Counts per status and per code of the (compacted) metadata rows of ``ids``,
        one part at a time: memory is one part's key columns, not the catalogue's."""
        by_status: dict[str, int] = {}
        by_code: dict[str, int] = {}
        for f in self.metadata_files():
            t = storage.retry(pq.read_table, f, filesystem=self.fs, columns=["id", "status", "error_code"])
            codes.add_counts(by_status, by_code, t.filter(pc.is_in(t.column("id"), value_set=ids)))
        return by_status, by_code

    def read_metadata(self, columns: list[str] | None = None) -> pa.Table | None:
        """All parts, latest row per id (by ``completed_at``); None when there are none."""
        files = self.metadata_files()
        if not files:
            return None
        t = latest_per_id(self._read_parts(files, columns))
        return t if columns is None else t.select([c for c in columns if c in t.column_names])

    def compact(self, shard_prefix: str, part_rows: int = 250_000) -> int:
        """Rewrite the metadata as one row per id; returns rows kept.

        Sized for millions of rows: only the key columns of every row are held at once
        (to pick the latest per id); the rows themselves stream from old part to new,
        one old part at a time (a row group each, sorted by id), into new parts of at
        most about ``part_rows`` rows, all with one unified schema. New parts are written first, old ones deleted after: a
        crash in between leaves duplicates that the next compaction removes again.
        """
        old = self.metadata_files()
        if not old:
            return 0
        schemas = [storage.retry(pq.read_schema, f, filesystem=self.fs) for f in old]
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        key_schema = pa.schema([schema.field(c) for c in _KEY_COLUMNS if c in schema.names])
        keys, offsets = [], [0]
        for f, sch in zip(old, schemas):
            cols = [c for c in _KEY_COLUMNS if c in sch.names]
            t = storage.retry(pq.read_table, f, filesystem=self.fs, columns=cols,
                              read_dictionary=[c for c in ("status", "error_code", "run_id") if c in cols])
            keys.append(conform(t, key_schema))
            offsets.append(offsets[-1] + t.num_rows)
        every = pa.concat_tables(keys)
        every = every.append_column("_g", pa.array(np.arange(every.num_rows, dtype=np.int64)))
        latest = latest_per_id(every)
        kept = np.zeros(every.num_rows, bool)
        kept[latest.column("_g").to_numpy()] = True
        # rows that an id's newer ok row superseded: their images may have another name
        ok_ids = (latest.filter(pc.equal(latest.column("status"), "ok")).column("id")
                  if "status" in latest.column_names else pa.array([], pa.string()))
        superseded = ~kept & np.asarray(pc.fill_null(pc.is_in(every.column("id"), value_set=ok_ids), False))
        del every, latest, keys
        candidates: set[str] = set()
        writer = _PartWriter(self, shard_prefix, schema, part_rows)
        for k, f in enumerate(old):
            lo, hi = offsets[k], offsets[k + 1]
            take, cand = np.flatnonzero(kept[lo:hi]), np.flatnonzero(superseded[lo:hi])
            if not len(take) and not len(cand):
                continue
            t = conform(storage.retry(pq.read_table, f, filesystem=self.fs), schema)
            if len(cand):
                candidates |= self._image_names(t.take(pa.array(cand)))
            writer.write(t.take(pa.array(take)).sort_by([("id", "ascending")]))
            del t
        new = writer.close()
        if candidates:
            cols = [c for c in ("output_uri", "output_uris") if c in schema.names]
            current: set[str] = set()
            for p in new:
                current |= self._image_names(pq.read_table(p, filesystem=self.fs, columns=cols)) & candidates
            self._remove_images(sorted(candidates - current))
        for p in old:
            if p not in new:
                self.fs.rm_file(p)
        return int(kept.sum())

    def _image_names(self, t: pa.Table) -> set[str]:
        """Names under images/ that rows of ``t`` refer to (output_uri, output_uris)."""
        prefix = self.uri_of(IMAGES) + "/"
        out: set[str] = set()
        for c in ("output_uri", "output_uris"):
            if c in t.column_names:
                col = t.column(c)
                vals = pc.list_flatten(col) if pa.types.is_list(col.type) else col
                out.update(u[len(prefix):] for u in vals.drop_null().to_pylist() if u.startswith(prefix))
        return out

    def _remove_images(self, names: list[str]) -> None:
        """Images an id's newer ok output replaced under another name (a new
        output_format, fewer variants), so images/ holds what the metadata names.
        Rows whose latest attempt failed keep theirs (they are never candidates)."""
        for name in names:
            try:
                self.fs.rm_file(self.path(IMAGES, name))
            except FileNotFoundError:
                pass

    def done_set(self, ids: pa.Array | None = None, probe_limit: int = 10_000) -> DoneSet:
        """Fingerprints of the rows already ok whose images exist: skipped on resume."""
        done = self.done_rows(ids, probe_limit)
        hi, lo, valid = fingerprints(done.column("request_hash"))
        return DoneSet(hi[valid], lo[valid])

    def done_rows(self, ids: pa.Array | None = None, probe_limit: int = 10_000) -> pa.Table:
        """``id``, ``request_hash`` of rows already ok whose image exists.

        ``ids``: the manifest's; only those rows are checked. Up to ``probe_limit``
        images are checked one by one (a daily manifest of new rows checks none); more
        than that, one listing of images/ is cheaper than a request each.
        """
        none = pa.table({"id": pa.array([], pa.string()), "request_hash": pa.array([], pa.string())})
        prev = self.read_metadata(["id", "status", "request_hash", "output_uri", "output_uris"])
        if prev is None or "request_hash" not in prev.column_names:
            return none
        ok = prev.filter(pc.and_(pc.equal(prev.column("status"), "ok"), pc.is_valid(prev.column("request_hash"))))
        if ids is not None:
            ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
            ok = ok.filter(pc.is_in(ok.column("id"), value_set=ids.cast(pa.string())))
        if ok.num_rows == 0:
            return none
        # every output of the row must exist: columnar over (row, uri) pairs
        one = pa.ListArray.from_arrays(pa.array(np.arange(ok.num_rows + 1, dtype=np.int32)),
                                       ok.column("output_uri").combine_chunks())
        many = ok.column("output_uris").combine_chunks() if "output_uris" in ok.column_names else one
        uris = pc.if_else(pc.is_valid(many), many, one)
        flat = pc.list_flatten(uris)
        parent = pc.list_parent_indices(uris).to_numpy()
        base = pc.replace_substring_regex(flat, r"^.*/", "")
        # a local listing costs ~1 µs a name, a stat ~50: list beyond a thousand
        if len(base) <= (min(probe_limit, 1000) if self.local else probe_limit):
            present = pa.array(self._exist(base.to_pylist()), pa.bool_())
        else:
            names = pa.array(sorted(self.existing_images()), pa.string())
            present = pc.fill_null(pc.is_in(base, value_set=names), False)
        missing = np.bincount(parent[~np.asarray(present)], minlength=ok.num_rows)
        has_any = np.bincount(parent[np.asarray(pc.is_valid(flat))], minlength=ok.num_rows) > 0
        ok = ok.filter(pa.array((missing == 0) & has_any))
        return ok.select(["id", "request_hash"])

    def _exist(self, names: list[str | None], threads: int = 32) -> list[bool]:
        """Whether ``images/{name}`` exists, one request each (on a thread pool for object stores)."""
        self.fs.invalidate_cache()

        def one(name):
            return bool(name) and bool(storage.retry(self.fs.exists, self.path(IMAGES, name)))

        return storage.map_io(one, names, threads, self.local)

    # ---------------------------------------------------------------- files
    def write_json(self, name: str, obj) -> None:
        storage.retry(self.fs.pipe_file, self.path(name), json.dumps(obj, indent=2, default=str).encode())

    def read_json(self, name: str):
        with self.fs.open(self.path(name), "rb") as f:
            return json.loads(f.read())


class _PartWriter:
    """New metadata parts written as a stream of row groups (no part buffered whole),
    each appearing complete: staged under _tmp/ and renamed (local), or one multipart
    upload that commits on close (object stores)."""

    def __init__(self, store: OutputStore, shard_prefix: str, schema: pa.Schema, part_rows: int):
        self.store, self.prefix, self.schema, self.part_rows = store, shard_prefix, schema, part_rows
        self.done: list[str] = []
        self._writer = self._file = self._tmp = None
        self._rows = 0

    def _open(self) -> None:
        st = self.store
        final = st.path(METADATA, f"part-{self.prefix}-{len(self.done):05d}.parquet")
        st.fs.makedirs(st.path(METADATA), exist_ok=True)
        if st.local:
            st.fs.makedirs(st.path(TMP), exist_ok=True)
            self._tmp = (st.path(TMP, f"compact-{uuid.uuid4().hex}.parquet"), final)
            self._file = st.fs.open(self._tmp[0], "wb")
        else:
            self._tmp = (None, final)
            self._file = st.fs.open(final, "wb")
        self._writer = pq.ParquetWriter(self._file, self.schema)

    def write(self, t: pa.Table) -> None:
        if not t.num_rows:
            return
        if self._writer is None:
            self._open()
        self._writer.write_table(t)
        self._rows += t.num_rows
        if self._rows >= self.part_rows:
            self._finish()

    def _finish(self) -> None:
        self._writer.close()
        self._file.close()
        tmp, final = self._tmp
        if tmp is not None:
            self.store.fs.mv(tmp, final)
        self.done.append(final)
        self._writer = self._file = self._tmp = None
        self._rows = 0

    def close(self) -> list[str]:
        if self._writer is not None:
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
    dup = (pc.fill_null(pc.equal(t.column("error_code"), "duplicate_id"), False)
           if "error_code" in t.column_names else pa.array(np.zeros(n, bool)))
    slot = (pc.if_else(dup, t.column("manifest_row").cast(pa.string()), "")
            if "manifest_row" in t.column_names else pa.array([""] * n))
    key = pc.binary_join_element_wise(ids, slot, "\x1f")
    keyed = pa.table({"key": key, "pos": pa.array(np.arange(n))})
    last = np.sort(keyed.group_by("key").aggregate([("pos", "max")]).column("pos_max").to_numpy())
    t = t.take(pa.array(last))
    if "run_id" in t.column_names:
        dup = np.asarray(pc.fill_null(pc.equal(t.column("error_code"), "duplicate_id"), False))
        if dup.any():
            d = t.filter(pa.array(dup))
            newest = d.group_by("id").aggregate([("run_id", "max")])
            newest_run = dict(zip(newest.column("id").to_pylist(), newest.column("run_id_max").to_pylist()))
            runs = t.column("run_id").to_pylist()
            idl = t.column("id").to_pylist()
            keep = [not dd or runs[i] == newest_run[idl[i]] for i, dd in enumerate(dup)]
            t = t.filter(pa.array(keep))
    return t
