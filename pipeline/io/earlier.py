"""What earlier runs left under an output, for this manifest's ids: which rows are done
(latest metadata ``ok`` and every output image present) and the source sizes they had.

Catalogue-sized: metadata parts are read a row group at a time and only fixed-width
arrays of the manifest's rows are kept (~60 bytes a row while checking, 40 after).
Whether the images exist is learnt the cheaper way: one listing of images/ (1,000 names
a request; its names hashed as they stream in), or a request per image when there are
fewer images to check than listing pages.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..common import storage
from .done import EarlierRuns, _sorted_lookup, fingerprints, hash64, key_fingerprints, sorted_keys
from .images import ImageFiles
from .metadata import MetadataParts

COLUMNS = (
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
FIELDS = ("id_hi", "id_lo", "ok", "hash_hi", "hash_lo", "w", "h")


@dataclass
class _Scan:
    """What the scan of the metadata keeps, per manifest row found there, as arrays."""

    manifest: tuple[np.ndarray, np.ndarray] | None  # the ids' sorted fingerprints (None: every id)
    listed: np.ndarray | None  # hashed image names from one listing, or None: a request each
    dedupe: bool  # parts of several runs: an id may appear twice, the latest row decides
    fields: dict[str, list[np.ndarray]] = field(default_factory=dict)
    names: list[pa.Array] = field(default_factory=list)  # a request each: the ok rows' image names
    name_rows: list[np.ndarray] = field(default_factory=list)
    rows: int = 0

    def add(self, t: pa.Table) -> None:
        """One row group of metadata."""
        if "error_code" in t.column_names:  # duplicate_id rows are rejected rows of their own
            dup = pc.fill_null(pc.equal(t.column("error_code"), "duplicate_id"), False)
            t = t.filter(pc.invert(dup))
        hi, lo = key_fingerprints(t.column("id"))
        n = t.num_rows
        member = (
            np.ones(n, bool)
            if self.manifest is None
            else _sorted_lookup(*self.manifest, hi, lo) >= 0
        )
        ok = member & _equal(t, "status", "ok")
        if "request_hash" in t.column_names:
            hh, hl, valid = fingerprints(t.column("request_hash"))
        else:
            hh, hl, valid = np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, bool)
        names, parent = _output_names(t, ok & valid)
        idx = np.flatnonzero(member)
        if self.listed is not None:  # every output of the row among the listed names
            missing = ~_in_sorted(self.listed, hash64(names))
            ok &= np.bincount(parent[missing], minlength=n) == 0
            ok &= np.bincount(parent, minlength=n) > 0
        else:
            remap = np.full(n, -1, np.int64)
            remap[idx] = np.arange(len(idx)) + self.rows
            self.names.append(names)
            self.name_rows.append(remap[parent])
        values = {"id_hi": hi, "id_lo": lo, "ok": ok & valid, "hash_hi": hh, "hash_lo": hl}
        values.update(w=_int32(t, "source_width"), h=_int32(t, "source_height"))
        if self.dedupe:
            values["when"] = _float64(t, "completed_at")
        for k, v in values.items():
            self.fields.setdefault(k, []).append(v[idx])
        self.rows += len(idx)

    def columns(self) -> dict[str, np.ndarray]:
        """The kept arrays, concatenated one field at a time (never the whole table twice)."""
        out = {}
        for k in list(self.fields):
            parts = self.fields.pop(k)
            out[k] = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        for k in FIELDS:
            out.setdefault(k, np.zeros(0, np.uint64))
        return out


def find(
    metadata: MetadataParts, images: ImageFiles | tuple[ImageFiles, ...], ids=None
) -> tuple[EarlierRuns, dict]:
    """The done state of the manifest's ``ids`` (strings, or their ``sorted_keys``; None:
    every id) and how it was checked. ``images``: where outputs may be (``images/``, and
    ``held/``: a held row is done too, until a reviewer rejects it)."""
    folders = images if isinstance(images, tuple) else (images,)
    files = metadata.files()
    if not files:
        return EarlierRuns.empty(), {"checked": 0}
    manifest = None if ids is None else (ids if isinstance(ids, tuple) else sorted_keys(ids))
    # which way to check the images, decided up front from the footers: one listing (a
    # request per 1,000 images) or a request per image of this manifest
    fs = metadata.folder.fs
    total = sum(storage.retry(pq.read_metadata, f, filesystem=fs).num_rows for f in files)
    wanted = len(manifest[0]) if manifest is not None else total
    cheaper = 1000 if metadata.folder.local else total / 1000
    listed = held = None
    if wanted > cheaper:
        each = [f.listed_name_hashes() for f in folders]
        listed, held = np.sort(np.concatenate(each)), sum(len(h) for h in each[1:])
    scan = _Scan(manifest, listed, dedupe=len({_run_of(f) for f in files}) > 1)
    for t in metadata.batches(files, COLUMNS):
        scan.add(t)
    cat = scan.columns()
    done = cat.pop("ok")
    if scan.dedupe:
        _keep_latest(done, cat)
    checked = int(done.sum())
    if listed is None:
        how = _check_one_by_one(done, scan, folders)
    else:
        how = (
            f"images/ listed ({len(listed):,} names, ~{max(1, -(-len(listed) // 1000)):,} requests)"
            + (f", {held:,} of them held/" if held else "")
        )
    for k in list(cat):  # keep the done rows only, a field at a time
        cat[k] = cat[k][done]
    earlier = EarlierRuns.from_fields(cat)
    return earlier, {"checked": checked, "done": len(earlier), "existence": how}


def _keep_latest(done: np.ndarray, cat: dict[str, np.ndarray]) -> None:
    """An id seen twice (parts of several runs): only its latest row may count as done
    (a later failure keeps the image; a later other request replaced it)."""
    n = len(done)
    when = cat.pop("when")
    if not n:
        return
    order = np.lexsort((when, cat["id_lo"], cat["id_hi"]))
    same = np.ones(n - 1, bool)
    for k in ("id_hi", "id_lo"):  # one sorted copy at a time
        v = cat[k][order]
        same &= v[1:] == v[:-1]
    done[order[:-1][same]] = False


def _check_one_by_one(done: np.ndarray, scan: _Scan, folders: tuple[ImageFiles, ...]) -> str:
    """Rows still done once every one of their images answered a request."""
    n = len(done)
    names = pa.concat_arrays(scan.names) if scan.names else pa.array([], pa.string())
    rows = np.concatenate(scan.name_rows) if scan.name_rows else np.zeros(0, np.int64)
    want = done[rows] if len(rows) else np.zeros(0, bool)
    asked = names.filter(pa.array(want)).to_pylist()
    present = np.asarray(folders[0].exist(asked), bool)
    for other in folders[1:]:  # held/: asked only for what images/ lacks
        missing = np.flatnonzero(~present)
        if len(missing):
            present[missing] = other.exist([asked[i] for i in missing])
    rows = rows[want]
    done &= np.bincount(rows[~present], minlength=n) == 0
    done &= np.bincount(rows, minlength=n) > 0
    return f"{int(want.sum()):,} images checked one request each"


def _run_of(part: str) -> str:
    """The run that wrote a metadata part (``part-{run_id}-...``; run ids have one hyphen)."""
    name = posixpath.basename(part)[len("part-") :]
    return "-".join(name.split("-")[:2])


def _equal(t: pa.Table, name: str, value) -> np.ndarray:
    if name not in t.column_names:
        return np.zeros(t.num_rows, bool)
    return np.asarray(pc.fill_null(pc.equal(t.column(name), value), False))


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
    offsets = pa.array(np.arange(t.num_rows + 1, dtype=np.int32))
    one = pa.ListArray.from_arrays(offsets, t.column("output_uri").combine_chunks())
    many = t.column("output_uris").combine_chunks() if "output_uris" in t.column_names else one
    uris = pc.if_else(pc.is_valid(many), many, one).filter(pa.array(ok))
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


def _float64(t: pa.Table, name: str) -> np.ndarray:
    if name not in t.column_names:
        return np.zeros(t.num_rows)
    return t.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
