"""``outpaint plan`` over any manifest: a URI, the config's own, rows held in memory or a
Ray Dataset; one planned row per manifest row, in manifest order."""

from __future__ import annotations

import pyarrow as pa

from ..config import Config
from ..io import manifest as manifest_io
from ..io.staging import ManifestLike, as_table, is_rows, staged
from .stage import plan_manifest


def plan(manifest: ManifestLike, cfg: Config) -> pa.Table:
    """Geometry, status, code and message per row. Reads image headers where sizes are not
    in the manifest; generates nothing and writes nothing but a staged copy of a Dataset."""
    if is_rows(manifest):
        table = as_table(manifest)
        manifest_io.check_schema(table.schema, cfg, "(rows)")
        if manifest_io.ROW_INDEX not in table.column_names:
            table = table.append_column(
                manifest_io.ROW_INDEX, pa.array(range(table.num_rows), pa.int64())
            )
        return plan_manifest(cfg, table)
    with staged(manifest, cfg) as cfg:
        manifest_io.read_schema(cfg)
        return plan_manifest(cfg, manifest_io.read(cfg))
