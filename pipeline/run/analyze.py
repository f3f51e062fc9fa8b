"""``outpaint manifest --analyze --from CONFIG``: the product-photo columns for a
config's manifest, one decode per distinct source, in threads here or as Ray Data tasks
over a cluster (the analysis itself is ``io.analyze.AnalyzeStage``)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

from ..config import Config
from ..io import manifest as manifest_io
from ..io.analyze import AnalyzeStage, with_analysis
from ..io.backdrop import Tolerances
from ..io.catalogue import write
from ..io.headers import SourceLimits
from ..plan.rows import resolve_images
from .cluster import ensure_ray


def analyze_manifest(
    cfg: Config, out: str | None = None, threads: int = 16, on_ray: bool | None = None
) -> pa.Table:
    """The manifest with ``backdrop_kind``, ``backdrop_color``, ``backdrop_sides`` and the
    product's box ``subject_x0`` .. ``subject_y1``, judged by ``model.backdrop``; written to
    ``out`` (by its extension) if given. ``on_ray`` None: on Ray when the config or the
    environment names a cluster (``runtime.ray_address``, ``RAY_ADDRESS``)."""
    table = manifest_io.read(cfg)
    table = table.drop_columns([c for c in manifest_io.INTERNAL if c in table.column_names])
    images = resolve_images(table.column("image").cast(pa.string()), cfg.input.image_root)
    distinct = pa.table({"image": pc.unique(images.drop_null()).cast(pa.string())})
    stage = AnalyzeStage(
        cfg.input, SourceLimits.of(cfg.limits), Tolerances.of(cfg.model.backdrop), threads
    )
    if on_ray is None:
        on_ray = bool(cfg.runtime.ray_address or os.environ.get("RAY_ADDRESS"))
    found = _on_ray(stage, distinct, cfg) if on_ray else stage(distinct)
    at = pc.index_in(images, value_set=found.column("image"))
    table = with_analysis(table, found.take(at))
    if out is not None:
        write(table, out, cfg.input.storage_options)
    return table


def _on_ray(stage: AnalyzeStage, distinct: pa.Table, cfg: Config) -> pa.Table:
    """The stage as Ray Data tasks: the sources spread over the cluster's CPUs (blocks of
    ``runtime.block_rows``), the results back here (a few columns a source)."""
    ray = ensure_ray(cfg.runtime)
    ds = ray.data.from_arrow(distinct).repartition(
        max(1, -(-distinct.num_rows // cfg.runtime.block_rows))
    )
    found = ds.map_batches(stage, batch_format="pyarrow", batch_size=None)
    return pa.concat_tables(ray.get(found.to_arrow_refs()))
