"""Which requests are already done, as fixed-width sorted arrays (no Python set of strings).

- ``fingerprints``: the 128 bits of request-hash strings; ``DoneSet``: the fingerprints of
  the requests whose outputs exist (16 bytes a done row, ``searchsorted``).
- ``hash64`` / ``key_fingerprints``: vectorised hashes of any string column (ids, image
  names, object keys), so existence checks and per-id lookups are arrays too.
- ``EarlierRuns``: what earlier runs left for this manifest's ids (which are done, their
  source sizes), found by ``io.earlier`` and read by triage.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_CHUNK = 16_384  # rows per vectorised step where a step needs several bytes a row
_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def fingerprints(hashes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Request-hash strings -> (hi, lo) uint64 halves of their 128 bits and a validity
    mask, vectorised over the Arrow buffers (no Python per row)."""
    arr = hashes.combine_chunks() if isinstance(hashes, pa.ChunkedArray) else hashes
    arr = arr.cast(pa.string())
    n = len(arr)
    hi, lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    if n == 0:
        return hi, lo, np.zeros(0, bool)
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + n + 1]
    data = (
        np.frombuffer(arr.buffers()[2], np.uint8)
        if arr.buffers()[2] is not None
        else np.zeros(0, np.uint8)
    )
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool) & (
        np.diff(offsets) == 32
    )
    all_idx = np.flatnonzero(valid)
    shifts = np.arange(60, -1, -4, dtype=np.uint64)
    for start in range(
        0, len(all_idx), _CHUNK
    ):  # (k, 32) nibbles: bounded, not 256 bytes a row at once
        idx = all_idx[start : start + _CHUNK]
        nib = _HEX[data[offsets[idx][:, None] + np.arange(32, dtype=np.int32)]]
        valid[idx] &= (nib != 255).all(axis=1)
        nib = nib.astype(np.uint64)
        hi[idx] = (nib[:, :16] << shifts).sum(axis=1, dtype=np.uint64)
        lo[idx] = (nib[:, 16:] << shifts).sum(axis=1, dtype=np.uint64)
    return hi, lo, valid


class DoneSet:
    """Fingerprints of the requests whose outputs exist: 16 bytes a done row, sorted,
    looked up with ``searchsorted`` (no hash table rebuilt per block)."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray):
        order = np.lexsort((lo, hi))
        self.hi = hi[order]
        del hi
        self.lo = lo[order]

    def __len__(self) -> int:
        return len(self.hi)

    def contains(self, hashes) -> np.ndarray:
        hi, lo, valid = fingerprints(hashes)
        return (_sorted_lookup(self.hi, self.lo, hi, lo) >= 0) & valid


# ---------------------------------------------------------------- string hashing

M64 = (1 << 64) - 1
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _splitmix64_np(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash64(strings, salt: int = 0) -> np.ndarray:
    """splitmix64(FNV-1a(s) ^ splitmix64(salt)) of every string of a column, uint64; nulls
    hash as "". FNV-1a is stepped over byte positions: (longest string) NumPy passes."""
    if isinstance(strings, pa.ChunkedArray):
        return (
            np.concatenate([hash64(c, salt) for c in strings.chunks])
            if strings.num_chunks
            else np.zeros(0, np.uint64)
        )
    if len(strings) > _CHUNK * 4:  # bounded temporaries: a few arrays of a chunk, not of the column
        return np.concatenate(
            [hash64(strings.slice(s, _CHUNK * 4), salt) for s in range(0, len(strings), _CHUNK * 4)]
        )
    arr = (
        strings.cast(pa.string()).fill_null("")
        if not pa.types.is_string(strings.type)
        else strings.fill_null("")
    )
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
        arr.offset : arr.offset + n + 1
    ].astype(np.int64)
    data = (
        np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        if arr.buffers()[2] is not None
        else np.zeros(1, np.uint8)
    )
    lengths = np.diff(offsets)
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    prime = np.uint64(FNV_PRIME)
    with np.errstate(over="ignore"):
        for pos in range(int(lengths.max(initial=0))):
            live = np.flatnonzero(lengths > pos)
            if len(live) == n:
                h = (h ^ data[offsets[:-1] + pos]) * prime
            else:
                h[live] = (h[live] ^ data[offsets[live] + pos]) * prime
        return _splitmix64_np(h ^ np.uint64(splitmix64(salt & M64)))


def key_fingerprints(strings) -> tuple[np.ndarray, np.ndarray]:
    """128 bits per string (two salted ``hash64``): keys for per-id lookups."""
    return hash64(strings, 0x1D), hash64(strings, 0x2E)


def sorted_keys(strings) -> tuple[np.ndarray, np.ndarray]:
    """``key_fingerprints`` of a column, sorted: membership tests by ``_sorted_lookup``
    (16 bytes a string; what the driver keeps of a manifest's ids once it needs no text)."""
    hi, lo = key_fingerprints(strings)
    order = np.lexsort((lo, hi))
    return hi[order], lo[order]


def _sorted_lookup(hi: np.ndarray, lo: np.ndarray, qhi: np.ndarray, qlo: np.ndarray) -> np.ndarray:
    """Index into the (hi, lo)-sorted arrays of each query, -1 where absent."""
    out = np.full(len(qhi), -1, np.int64)
    if not len(hi) or not len(qhi):
        return out
    left = np.searchsorted(hi, qhi, "left")
    right = np.searchsorted(hi, qhi, "right")
    for k in range(int((right - left).max(initial=0))):  # almost always one pass
        at = np.minimum(left + k, len(hi) - 1)
        hit = (left + k < right) & (lo[at] == qlo) & (out < 0)
        out[hit] = at[hit]
    return out


class EarlierRuns:
    """Earlier runs' state for this manifest's ids, as sorted fixed-width arrays: per id
    with an ``ok`` row whose outputs exist, its request-hash fingerprint (the done set)
    and the source size it had (so a rerun needs no image header where the manifest
    gives none). 40 bytes an id."""

    def __init__(self, id_hi, id_lo, hash_hi, hash_lo, width, height):
        self._sort(
            {
                "id_hi": id_hi,
                "id_lo": id_lo,
                "hash_hi": hash_hi,
                "hash_lo": hash_lo,
                "w": width,
                "h": height,
            }
        )

    @classmethod
    def from_fields(cls, fields: dict) -> EarlierRuns:
        """From a dict of the six arrays, taken out of it one at a time as they are sorted
        (peak: one array's copy, not all six)."""
        self = cls.__new__(cls)
        self._sort(fields)
        return self

    def _sort(self, fields: dict) -> None:
        order = np.lexsort((fields["id_lo"], fields["id_hi"]))
        for name, key, dtype in (
            ("id_hi", "id_hi", np.uint64),
            ("id_lo", "id_lo", np.uint64),
            ("width", "w", np.int32),
            ("height", "h", np.int32),
        ):
            setattr(self, name, np.asarray(fields.pop(key), dtype)[order])
        del order
        self.done = DoneSet(
            np.asarray(fields.pop("hash_hi"), np.uint64),
            np.asarray(fields.pop("hash_lo"), np.uint64),
        )

    def save(self, f) -> None:
        """Its arrays, one after another, to an open binary file (``load`` reads them back)."""
        for a in (self.id_hi, self.id_lo, self.width, self.height, self.done.hi, self.done.lo):
            np.save(f, a, allow_pickle=False)

    @classmethod
    def load(cls, f) -> EarlierRuns:
        self = cls.__new__(cls)
        self.id_hi, self.id_lo, self.width, self.height = (
            np.load(f, allow_pickle=False) for _ in range(4)
        )
        done = DoneSet.__new__(DoneSet)
        done.hi, done.lo = (np.load(f, allow_pickle=False) for _ in range(2))
        self.done = done
        return self

    @classmethod
    def empty(cls) -> EarlierRuns:
        z = np.zeros(0, np.uint64)
        return cls(z, z, z, z, np.zeros(0, np.int32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.id_hi)

    def find(self, ids) -> np.ndarray:
        """Position of each id's record, -1 where the id has none."""
        qhi, qlo = key_fingerprints(ids)
        return _sorted_lookup(self.id_hi, self.id_lo, qhi, qlo)

    def sizes(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Recorded source sizes at positions from ``find`` (0 where absent or unknown)."""
        ok = at >= 0
        w = np.where(ok, self.width[np.maximum(at, 0)] if len(self) else 0, 0).astype(np.int64)
        h = np.where(ok, self.height[np.maximum(at, 0)] if len(self) else 0, 0).astype(np.int64)
        return w, h
