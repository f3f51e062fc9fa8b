"""Which requests are already done: 128-bit fingerprints of their request hashes.

The output store builds a ``DoneSet`` from its metadata (rows ``ok`` whose images
exist) and triage asks it about whole columns of freshly planned rows: 16 bytes a
done row, sorted, looked up with ``searchsorted`` — no Python set of strings.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool) & (np.diff(offsets) == 32)
    idx = np.flatnonzero(valid)
    if len(idx):
        nib = _HEX[data[offsets[idx][:, None] + np.arange(32)]].astype(np.uint64)  # (k, 32) nibbles
        valid[idx] &= (nib != 255).all(axis=1)
        shifts = np.arange(60, -1, -4, dtype=np.uint64)
        hi[idx] = (nib[:, :16] << shifts).sum(axis=1, dtype=np.uint64)
        lo[idx] = (nib[:, 16:] << shifts).sum(axis=1, dtype=np.uint64)
    return hi, lo, valid


class DoneSet:
    """Fingerprints of the requests whose outputs exist: 16 bytes a done row, sorted,
    looked up with ``searchsorted`` (no hash table rebuilt per block)."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray):
        order = np.lexsort((lo, hi))
        self.hi, self.lo = hi[order], lo[order]

    def __len__(self) -> int:
        return len(self.hi)

    def contains(self, hashes) -> np.ndarray:
        hi, lo, valid = fingerprints(hashes)
        found = np.zeros(len(hi), bool)
        if not len(self.hi):
            return found
        left = np.searchsorted(self.hi, hi, "left")
        right = np.searchsorted(self.hi, hi, "right")
        for k in range(int((right - left).max(initial=0))):  # almost always one pass
            at = np.minimum(left + k, len(self.lo) - 1)
            found |= (left + k < right) & (self.lo[at] == lo)
        return found & valid
