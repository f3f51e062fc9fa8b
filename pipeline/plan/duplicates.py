"""The duplicate rule: every row after an id's first is ``duplicate_id``. A property of
the whole manifest, so it is found once, before batching, from the id column alone."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..io.done import key_fingerprints


def duplicate_first_rows(ids, rows) -> dict[str, int]:
    """Ids that occur more than once -> the manifest row of their first occurrence. By
    128-bit fingerprints sorted with the rows (fixed-width arrays, ~40 bytes a row while
    it runs); only the duplicated ids become Python strings."""
    arr = (
        pa.array(list(ids), pa.string())
        if not isinstance(ids, (pa.Array, pa.ChunkedArray))
        else ids
    )
    n = len(arr)
    if n < 2:
        return {}
    rows = np.asarray(rows, dtype=np.int64)
    hi, lo = key_fingerprints(arr)
    order = np.lexsort((rows, lo, hi))  # by id, then manifest row: a group's first is its earliest
    same = np.ones(n - 1, bool)
    for key in (hi, lo):
        v = key[order]
        same &= v[1:] == v[:-1]
        del v
    del hi, lo
    if not same.any():
        return {}
    starts = np.flatnonzero(np.r_[True, ~same] & (np.r_[same, False] | np.r_[False, same]))
    at = order[starts]
    names = arr.take(pa.array(at)).to_pylist()
    return dict(zip(names, rows[at].tolist()))
