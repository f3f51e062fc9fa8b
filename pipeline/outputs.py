"""The output layout under ``output.uri`` (DESIGN.md, Outputs) and its state.

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

from . import storage
from .config import ConfigError
from .imageio import EXTENSIONS

IMAGES, METADATA, TMP = "images", "metadata", "_tmp"


_DEDUPE_KEYS = ("id", "error_code", "manifest_row", "completed_at", "run_id")


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

    def read_metadata(self, columns: list[str] | None = None) -> pa.Table | None:
        """All parts, latest row per id (by ``completed_at``); None when there are none."""
        files = self.metadata_files()
        if not files:
            return None
        t = latest_per_id(self._read_parts(files, columns))
        return t if columns is None else t.select([c for c in columns if c in t.column_names])

    def compact(self, shard_prefix: str, part_rows: int = 1_000_000) -> int:
        """Rewrite the metadata as one row per id; returns rows kept.

        New parts are written first, old ones deleted after: a crash in between
        leaves duplicates that the next compaction (latest wins) removes again.
        """
        old = self.metadata_files()
        if not old:
            return 0
        everything = self._read_parts(old)
        table = latest_per_id(everything)
        self.remove_superseded_images(everything, table)
        table = table.sort_by([("id", "ascending")])
        new = []
        for k, start in enumerate(range(0, max(table.num_rows, 1), part_rows)):
            new.append(self.write_metadata_part(table.slice(start, part_rows), f"{shard_prefix}-{k:05d}"))
        for p in old:
            if p not in new:
                self.fs.rm_file(p)
        return table.num_rows

    def remove_superseded_images(self, everything: pa.Table, latest: pa.Table) -> list[str]:
        """Delete images an id's newer ok output replaced under another name (a new
        output_format, a different num_variants), so images/ holds what the metadata
        says. Images of rows whose latest attempt failed stay; so does any name a
        current row refers to. Returns the names removed."""
        def names(t: pa.Table, mask=None) -> set[str]:
            prefix = self.uri_of(IMAGES) + "/"
            cols = [t.column(c).to_pylist() for c in ("output_uri", "output_uris") if c in t.column_names]
            out = set()
            for i, vals in enumerate(zip(*cols)):
                if mask is None or mask[i]:
                    for v in vals:
                        for u in (v if isinstance(v, list) else [v]):
                            if u and u.startswith(prefix):
                                out.add(u[len(prefix):])
            return out

        if "status" not in latest.column_names:
            return []
        ok_ids = set(latest.filter(pc.equal(latest.column("status"), "ok")).column("id").to_pylist())
        in_ok = [i in ok_ids for i in everything.column("id").to_pylist()]
        gone = sorted(names(everything, in_ok) - names(latest))
        for name in gone:
            try:
                self.fs.rm_file(self.path(IMAGES, name))
            except FileNotFoundError:
                pass
        return gone

    def done_keys(self) -> pa.Array:
        """``id \\x1f request_hash`` of rows already ok whose image exists: skipped on resume."""
        prev = self.read_metadata(["id", "status", "request_hash", "output_uri", "output_uris"])
        if prev is None or "request_hash" not in prev.column_names:
            return pa.array([], pa.string())
        ok = prev.filter(pc.and_(pc.equal(prev.column("status"), "ok"), pc.is_valid(prev.column("request_hash"))))
        names = self.existing_images()
        many = (ok.column("output_uris").to_pylist() if "output_uris" in ok.column_names
                else [None] * ok.num_rows)
        exists = np.array([
            bool(uris or one) and all(posixpath.basename(u) in names for u in (uris or [one]))
            for one, uris in zip(ok.column("output_uri").to_pylist(), many)], dtype=bool)
        ok = ok.filter(pa.array(exists)) if len(exists) else ok
        return pc.binary_join_element_wise(ok.column("id"), ok.column("request_hash"), "\x1f")

    # ---------------------------------------------------------------- files
    def write_json(self, name: str, obj) -> None:
        storage.retry(self.fs.pipe_file, self.path(name), json.dumps(obj, indent=2, default=str).encode())

    def read_json(self, name: str):
        with self.fs.open(self.path(name), "rb") as f:
            return json.loads(f.read())


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
