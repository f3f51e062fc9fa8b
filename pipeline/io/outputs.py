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
import os
import posixpath
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import codes, storage
from ..config import ConfigError
from .done import Prior, _sorted_lookup, fingerprints, hash64, key_fingerprints, sorted_keys
from .imageio import EXTENSIONS

IMAGES, METADATA, TMP = "images", "metadata", "_tmp"
ROW_GROUP = 65_536  # metadata row groups: what a reader decodes at once (resume, counts, report)


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
            raise ConfigError(
                f"output.uri {self.uri} is not writable: {type(e).__name__}: {e}"
            ) from None

    def has_outputs(self) -> bool:
        found: list = []
        self._list_images(found.append, batch=1, stop_after=1)
        return bool(self.metadata_files()) or bool(found)

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

    # ---------------------------------------------------------------- metadata
    def metadata_files(self) -> list[str]:
        try:
            self.fs.invalidate_cache()
            return sorted(
                p
                for p in self.fs.find(self.path(METADATA))
                if p.endswith(".parquet") and posixpath.basename(p).startswith("part-")
            )
        except FileNotFoundError:
            return []

    def write_metadata_part(self, table: pa.Table, shard: str) -> str:
        path = self.path(METADATA, f"part-{shard}.parquet")
        if self.local:
            tmp = self.path(TMP, f"part-{shard}.{uuid.uuid4().hex}.parquet")
            self.fs.makedirs(self.path(TMP), exist_ok=True)
            self.fs.makedirs(self.path(METADATA), exist_ok=True)
            pq.write_table(table, tmp, filesystem=self.fs, row_group_size=ROW_GROUP)
            self.fs.mv(tmp, path)
        else:
            storage.retry(pq.write_table, table, path, filesystem=self.fs, row_group_size=ROW_GROUP)
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
        files = [
            f
            for f in self.metadata_files()
            if posixpath.basename(f).startswith(f"part-{shard_prefix}")
        ]
        if not files:
            return None
        return pa.concat_tables(
            [storage.retry(pq.read_table, f, filesystem=self.fs, columns=columns) for f in files],
            promote_options="permissive",
        )

    def count_metadata_rows(self) -> int:
        """Rows in every part, from the Parquet footers."""
        return sum(
            storage.retry(pq.read_metadata, f, filesystem=self.fs).num_rows
            for f in self.metadata_files()
        )

    def count_rows(self, ids) -> tuple[dict, dict]:
        """Counts per status and per code of the (compacted) metadata rows of ``ids``
        (strings, or their ``sorted_keys``), a row group at a time, matched by fingerprint."""
        by_status: dict[str, int] = {}
        by_code: dict[str, int] = {}
        mhi, mlo = ids if isinstance(ids, tuple) else sorted_keys(ids)
        for t in self._metadata_batches(self.metadata_files(), ("id", "status", "error_code")):
            member = _sorted_lookup(mhi, mlo, *key_fingerprints(t.column("id"))) >= 0
            codes.add_counts(by_status, by_code, t.filter(pa.array(member)))
        return by_status, by_code

    def _metadata_batches(self, files: list[str], columns, rows: int = 16_384):
        """The metadata parts' ``columns`` (those present), in record batches."""
        for f in files:
            pf = storage.retry(pq.ParquetFile, f, filesystem=self.fs, pre_buffer=False)
            cols = [c for c in columns if c in pf.schema_arrow.names]
            for g in range(
                pf.metadata.num_row_groups
            ):  # one row group decoded at a time, no read-ahead
                for batch in pf.iter_batches(
                    batch_size=rows, columns=cols, row_groups=[g], use_threads=False
                ):
                    yield pa.Table.from_batches([batch])

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
            t = storage.retry(
                pq.read_table,
                f,
                filesystem=self.fs,
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
                current |= (
                    self._image_names(pq.read_table(p, filesystem=self.fs, columns=cols))
                    & candidates
                )
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
                out.update(
                    u[len(prefix) :] for u in vals.drop_null().to_pylist() if u.startswith(prefix)
                )
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

    def prior(self, ids=None) -> tuple[Prior, dict]:
        """What earlier runs left for the manifest's ``ids`` (strings, or their
        ``sorted_keys``): a ``Prior`` of the rows whose
        latest metadata is ``ok`` and whose every output image exists (their request-hash
        fingerprints and source sizes), and how it was checked.

        Catalogue-sized: metadata parts are read one at a time, and only fixed-width
        arrays of the manifest's rows are kept (~60 bytes a row while checking, 40 after).
        Whether the images exist is learnt the cheaper way: one listing of images/ (1,000
        names a request; its names hashed as they stream in), or a request per image when
        there are fewer images to check than listing pages."""
        files = self.metadata_files()
        if not files:
            return Prior.empty(), {"checked": 0}
        manifest = None if ids is None else (ids if isinstance(ids, tuple) else sorted_keys(ids))
        # which way to check the images, decided up front from the footers: one listing
        # (a request per 1,000 images) or a request per image of this manifest
        total = sum(storage.retry(pq.read_metadata, f, filesystem=self.fs).num_rows for f in files)
        wanted = len(manifest[0]) if manifest is not None else total
        listed = (
            self.listed_name_hashes() if wanted > (1000 if self.local else total / 1000) else None
        )
        cols = (
            "id",
            "status",
            "error_code",
            "request_hash",
            "output_uri",
            "output_uris",
            "completed_at",
            "source_width",
            "source_height",
        )
        # parts of more than one run (a crash before compaction) may hold an id twice: the
        # latest row decides; one run's parts (a first run, a compaction) hold each id once
        dedupe = len({_run_of(f) for f in files}) > 1
        fields: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("id_hi", "id_lo", "ok", "hash_hi", "hash_lo", "w", "h")
            + (("when",) if dedupe else ())
        }
        texts: list[pa.Array] = []  # a request per image: the names of the manifest's ok rows
        text_rows: list[np.ndarray] = []
        rows_before = 0
        for t in self._metadata_batches(
            files, cols
        ):  # row groups: bounded memory whatever a part's size
            if "error_code" in t.column_names:  # duplicate_id rows are rejected rows of their own
                t = t.filter(
                    pc.invert(pc.fill_null(pc.equal(t.column("error_code"), "duplicate_id"), False))
                )
            hi, lo = key_fingerprints(t.column("id"))
            member = (
                np.ones(t.num_rows, bool)
                if manifest is None
                else _sorted_lookup(*manifest, hi, lo) >= 0
            )
            ok = member & (
                np.asarray(pc.fill_null(pc.equal(t.column("status"), "ok"), False))
                if "status" in t.column_names
                else False
            )
            hh, hl, valid = (
                fingerprints(t.column("request_hash"))
                if "request_hash" in t.column_names
                else (np.zeros(t.num_rows, np.uint64),) * 2 + (np.zeros(t.num_rows, bool),)
            )
            names, parent = _output_names(t, ok & valid)
            if listed is not None:  # every output of the row among the listed names
                missing = ~_in_sorted(listed, hash64(names))
                ok &= np.bincount(parent[missing], minlength=t.num_rows) == 0
                ok &= np.bincount(parent, minlength=t.num_rows) > 0
            idx = np.flatnonzero(member)
            if listed is None:
                remap = np.full(t.num_rows, -1, np.int64)
                remap[idx] = np.arange(len(idx)) + rows_before
                texts.append(names)
                text_rows.append(remap[parent])
            for k, v in (
                ("id_hi", hi),
                ("id_lo", lo),
                ("ok", ok & valid),
                ("hash_hi", hh),
                ("hash_lo", hl),
                ("w", _int32(t, "source_width")),
                ("h", _int32(t, "source_height")),
            ):
                fields[k].append(v[idx])
            if dedupe:
                fields["when"].append(
                    t.column("completed_at").to_numpy(zero_copy_only=False).astype(np.float64)[idx]
                    if "completed_at" in t.column_names
                    else np.zeros(len(idx))
                )
            rows_before += len(idx)
            del t, names, hi, lo, hh, hl
        del manifest
        cat = {}
        for k in list(fields):  # one field at a time: never the whole table twice
            cat[k] = np.concatenate(fields.pop(k))
        # the latest row per id decides (a later failure keeps the image; a later other
        # request replaced it)
        n = len(cat["id_hi"])
        done = cat.pop("ok")
        if n and dedupe:
            order = np.lexsort((cat.pop("when"), cat["id_lo"], cat["id_hi"]))
            same = np.ones(n - 1, bool)
            for k in ("id_hi", "id_lo"):  # one sorted copy at a time
                v = cat[k][order]
                same &= v[1:] == v[:-1]
                del v
            done[order[:-1][same]] = False
            del same, order
        checked = int(done.sum())
        if listed is None:
            names = pa.concat_arrays(texts) if texts else pa.array([], pa.string())
            rows = np.concatenate(text_rows) if text_rows else np.zeros(0, np.int64)
            want = done[rows] if len(rows) else np.zeros(0, bool)
            present = np.asarray(self._exist(names.filter(pa.array(want)).to_pylist()), bool)
            rows = rows[want]
            done &= np.bincount(rows[~present], minlength=n) == 0
            done &= np.bincount(rows, minlength=n) > 0
            how = f"{int(want.sum()):,} images checked one request each"
        else:
            how = f"images/ listed ({len(listed):,} names, ~{max(1, -(-len(listed) // 1000)):,} requests)"
        del listed
        for k in list(cat):  # keep the done rows only, a field at a time
            cat[k] = cat[k][done]
        prior = Prior.from_fields(cat)
        return prior, {"checked": checked, "done": len(prior), "existence": how}

    def share_prior(self, prior: Prior, run_id: str) -> str:
        """Write a ``Prior`` where a run's workers read it (``_tmp/``, streamed: the driver
        then drops its copy instead of holding a second one in Ray's object store)."""
        path = self.path(TMP, f"prior-{run_id}.npy")
        if self.local:
            self.fs.makedirs(self.path(TMP), exist_ok=True)
        with self.fs.open(path, "wb") as f:
            prior.save(f)
        return path

    def read_prior(self, path: str) -> Prior:
        with self.fs.open(path, "rb") as f:
            return Prior.load(f)

    def listed_name_hashes(self) -> np.ndarray:
        """``hash64`` of every name under images/, sorted: one listing, hashed in batches as
        it streams (8 bytes a name; never a Python set or list of every name)."""
        chunks: list[np.ndarray] = []
        self._list_images(lambda names: chunks.append(hash64(pa.array(names, pa.string()))))
        out = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
        chunks.clear()
        out.sort()
        return out

    def _list_images(self, take, batch: int = 10_000, stop_after: int | None = None) -> None:
        """Hand the names under images/ to ``take`` in batches (object stores: page by page)."""
        path = self.path(IMAGES)
        out: list[str] = []
        seen = 0

        def add(name: str) -> bool:
            nonlocal out, seen
            out.append(name)
            seen += 1
            if len(out) >= batch:
                take(out)
                out = []
            return stop_after is not None and seen >= stop_after

        if self.local:
            try:
                with os.scandir(path) as it:  # the path the storage entry point resolved
                    for e in it:
                        if e.is_file() and add(e.name):
                            break
            except FileNotFoundError:
                pass
        elif hasattr(self.fs, "_iterdir"):  # s3fs: stream the pages
            from fsspec.asyn import sync

            bucket, key, _ = self.fs.split_path(path)

            async def go():
                async for obj in self.fs._iterdir(
                    bucket, delimiter="", prefix=key.rstrip("/") + "/", max_items=stop_after
                ):
                    if obj.get("type") == "file" and add(obj["name"].rsplit("/", 1)[-1]):
                        return

            storage.retry(sync, self.fs.loop, go)
        else:
            try:
                self.fs.invalidate_cache()
                for p in self.fs.find(path):
                    if add(posixpath.basename(p)):
                        break
            except FileNotFoundError:
                pass
        if out:
            take(out)

    def _exist(self, names: list[str | None], threads: int = 32) -> list[bool]:
        """Whether ``images/{name}`` exists, one request each (on a thread pool for object stores)."""
        self.fs.invalidate_cache()

        def one(name):
            return bool(name) and bool(storage.retry(self.fs.exists, self.path(IMAGES, name)))

        return storage.map_io(one, names, threads, self.local)

    # ---------------------------------------------------------------- files
    def write_json(self, name: str, obj) -> None:
        if self.local:
            self.fs.makedirs(posixpath.dirname(self.path(name)), exist_ok=True)
        storage.retry(
            self.fs.pipe_file, self.path(name), json.dumps(obj, indent=2, default=str).encode()
        )

    def read_jsons(self, prefix: str) -> list:
        """Every ``{prefix}*.json`` (one listing), read and then removed."""
        parent, stem = posixpath.split(self.path(prefix))
        try:
            self.fs.invalidate_cache()
            found = [
                p
                for p in self.fs.ls(parent, detail=False)
                if posixpath.basename(p).startswith(stem)
            ]
        except FileNotFoundError:
            return []
        out = [json.loads(storage.retry(self.fs.cat_file, p)) for p in sorted(found)]
        for p in found:
            self.fs.rm_file(p)
        return out

    def read_json(self, name: str):
        with self.fs.open(self.path(name), "rb") as f:
            return json.loads(f.read())


class _PartWriter:
    """New metadata parts written as a stream of row groups (no part buffered whole),
    each appearing complete: staged under _tmp/ and renamed (local), or one multipart
    upload that commits on close (object stores)."""

    def __init__(self, store: OutputStore, shard_prefix: str, schema: pa.Schema, part_rows: int):
        self.store, self.prefix, self.schema, self.part_rows = (
            store,
            shard_prefix,
            schema,
            part_rows,
        )
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
        self._writer.write_table(t, row_group_size=ROW_GROUP)
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


def _run_of(part: str) -> str:
    """The run that wrote a metadata part (``part-{run_id}-...``; run ids have one hyphen)."""
    name = posixpath.basename(part)[len("part-") :]
    return "-".join(name.split("-")[:2])


def _in_sorted(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    if not len(sorted_values):
        return np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[pos] == values


def _output_names(t: pa.Table, ok: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Base names of every output of the ok rows (``output_uris``, else ``output_uri``),
    flattened, with each name's row."""
    if "output_uri" not in t.column_names or not ok.any():
        return pa.array([], pa.string()), np.zeros(0, np.int64)
    one = pa.ListArray.from_arrays(
        pa.array(np.arange(t.num_rows + 1, dtype=np.int32)), t.column("output_uri").combine_chunks()
    )
    many = t.column("output_uris").combine_chunks() if "output_uris" in t.column_names else one
    uris = pc.if_else(pc.is_valid(many), many, one)
    uris = uris.filter(pa.array(ok))
    rows = np.flatnonzero(ok)
    flat = pc.list_flatten(uris)
    parent = rows[pc.list_parent_indices(uris).to_numpy()]
    valid = np.asarray(pc.is_valid(flat))
    names = pc.replace_substring_regex(flat.filter(pa.array(valid)), r"^.*/", "")
    return names, parent[valid]


def _int32(t: pa.Table, name: str) -> np.ndarray:
    if name not in t.column_names:
        return np.zeros(t.num_rows, np.int32)
    return t.column(name).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)
