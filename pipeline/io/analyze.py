"""``outpaint manifest --analyze``: one decode per source, and what planning needs to
route and place its rows without decoding it again: the backdrop's kind, colour and
plain sides, and the product's box (docs/product-photos.md). A source that cannot be
read gets nulls: the run records why, with its code."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .. import backdrop, storage
from .headers import SourceLimits
from .imageio import ImageError, decode
from .sources import fetch

FIELDS = [
    ("backdrop_kind", pa.string()),
    ("backdrop_color", pa.string()),
    ("backdrop_sides", pa.string()),
    ("subject_x0", pa.int64()),
    ("subject_y0", pa.int64()),
    ("subject_x1", pa.int64()),
    ("subject_y1", pa.int64()),
]
NAMES = [name for name, _ in FIELDS]
# transparency opaque enough to be the product (a cut-out's own box)
_OPAQUE = 128


def describe_source(data: bytes, what: str, limits: SourceLimits, tol: backdrop.Tolerances) -> dict:
    """A source's analysis columns. A cut-out (transparency) is its own box; its backdrop
    is left to the run (how it fills depends on output.alpha)."""
    img = decode(data, limits, what, metadata=False)
    if img.alpha is not None:
        rows, cols = (
            np.flatnonzero((img.alpha >= _OPAQUE).any(axis=1)),
            np.flatnonzero((img.alpha >= _OPAQUE).any(axis=0)),
        )
        out = dict.fromkeys(NAMES)
        if len(rows):
            out.update(
                subject_x0=int(cols[0]),
                subject_y0=int(rows[0]),
                subject_x1=int(cols[-1]) + 1,
                subject_y1=int(rows[-1]) + 1,
            )
        return out
    return backdrop.describe(img.pixels, tol)


def analyze_images(
    uris: list[str], input_cfg, limits: SourceLimits, tol: backdrop.Tolerances, threads: int = 16
) -> pa.Table:
    """The analysis columns for each URI, in order (nulls where a source cannot be read)."""

    def one(uri: str) -> dict:
        try:
            data, _ = fetch(uri, input_cfg)
            return describe_source(data, uri, limits, tol)
        except ImageError:
            return dict.fromkeys(NAMES)

    # decoding releases the GIL: threads help local files too
    found = storage.map_io(one, uris, threads, local=False)
    return pa.table({name: pa.array([f[name] for f in found], t) for name, t in FIELDS})


def with_analysis(table: pa.Table, analysis: pa.Table) -> pa.Table:
    """``table`` with the analysis columns (earlier ones replaced), row for row."""
    table = table.drop_columns([n for n in NAMES if n in table.column_names])
    for name in NAMES:
        table = table.append_column(name, analysis.column(name))
    return table
