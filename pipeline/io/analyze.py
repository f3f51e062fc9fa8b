"""``outpaint manifest --analyze``: one decode per source, and what planning needs to
route and place its rows without decoding it again: the backdrop's kind, colour and
plain sides, and the product's box (docs/product-photos.md). A source that cannot be
read gets nulls: the run records why, with its code."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..common import storage
from . import backdrop
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


class AnalyzeStage:
    """A block of sources (column ``image``: URIs) -> the block with the analysis columns.
    Setup here, a pure ``__call__``: the same stage runs in threads here or as Ray Data
    tasks over a cluster (``api.analyze_manifest(..., on_ray=True)``)."""

    def __init__(
        self, input_cfg, limits: SourceLimits, tol: backdrop.Tolerances, threads: int = 16
    ):
        self.input_cfg = input_cfg
        self.limits = limits
        self.tol = tol
        self.threads = threads

    def one(self, uri: str) -> dict:
        try:
            data, _ = fetch(uri, self.input_cfg)
            return describe_source(data, uri, self.limits, self.tol)
        except ImageError:
            return dict.fromkeys(NAMES)

    def __call__(self, batch: pa.Table) -> pa.Table:
        uris = batch.column("image").to_pylist()
        # decoding releases the GIL: threads help local files too
        found = storage.map_io(self.one, uris, self.threads, local=False)
        for name, t in FIELDS:
            batch = batch.append_column(name, pa.array([f[name] for f in found], t))
        return batch


def analyze_images(
    uris: list[str], input_cfg, limits: SourceLimits, tol: backdrop.Tolerances, threads: int = 16
) -> pa.Table:
    """The analysis columns for each URI, in order (nulls where a source cannot be read)."""
    stage = AnalyzeStage(input_cfg, limits, tol, threads)
    return stage(pa.table({"image": pa.array(uris, pa.string())})).select(NAMES)


def with_analysis(table: pa.Table, analysis: pa.Table) -> pa.Table:
    """``table`` with the analysis columns (earlier ones replaced), row for row."""
    table = table.drop_columns([n for n in NAMES if n in table.column_names])
    for name in NAMES:
        table = table.append_column(name, analysis.column(name))
    return table
