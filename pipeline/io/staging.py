"""Manifest rows handed over in memory (a pyarrow Table, a pandas DataFrame, row dicts or
a Ray Dataset), staged as Parquet under the output's ``_tmp/`` so that a run reads them
like any manifest, at catalogue scale, never through the driver's memory."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from ..common import storage
from ..config import IN_MEMORY, Config, ConfigError, with_manifest
from . import manifest as manifest_io

ManifestLike = Any  # None (the config's), a URI, a pyarrow Table, a pandas DataFrame, rows (dicts), a Ray Dataset


def is_dataset(obj) -> bool:
    """A Ray Dataset, recognised without importing Ray."""
    return type(obj).__name__ in ("Dataset", "MaterializedDataset") and hasattr(
        obj, "write_parquet"
    )


def is_rows(obj) -> bool:
    """Rows held here (a table, a frame, dicts): neither a URI, nor a Dataset, nor None."""
    return obj is not None and not isinstance(obj, (str, os.PathLike)) and not is_dataset(obj)


def as_table(rows) -> pa.Table:
    """Manifest rows as a pyarrow Table: a Table, a pandas DataFrame, a dict of columns or
    a list of row dicts."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if type(rows).__name__ == "DataFrame":
        return pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, Mapping):
        return pa.table(dict(rows))
    if isinstance(rows, Iterable):
        rows = list(rows)
        names = list(dict.fromkeys(k for row in rows for k in row))  # every row's keys
        return pa.table({k: [row.get(k) for row in rows] for k in names})
    raise TypeError(
        f"a manifest must be a URI, a pyarrow Table, a pandas DataFrame, rows or a Ray Dataset, "
        f"not {type(rows).__name__}"
    )


def stage_manifest(rows: ManifestLike, cfg: Config) -> tuple[Config, str | None]:
    """The config to run ``rows`` with: ``rows`` written as Parquet under the output's
    ``_tmp/`` (a Ray Dataset by Ray Data's own parallel writer, never through this
    process), then read like any manifest. Returns the config and the staged directory
    (to remove after), or the config unchanged for ``None`` / a URI."""
    if rows is None:
        if cfg.input.manifest == IN_MEMORY:
            raise ConfigError("no manifest: give rows to plan()/outpaint() or set input.manifest")
        return cfg, None
    if isinstance(rows, (str, os.PathLike)):
        return with_manifest(cfg, os.fspath(rows)), None
    fs, root = storage.filesystem(cfg.output.uri, cfg.output.storage_options)
    if is_dataset(rows):
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        key = hashlib.sha256(repr(rows).encode() + os.urandom(8)).hexdigest()[:12]
        path = storage.join(root, "_tmp", f"manifest-{key}")
        rows.write_parquet(path, filesystem=PyFileSystem(FSSpecHandler(fs)))
    else:
        import pyarrow.parquet as pq

        table = as_table(rows)
        manifest_io.check_schema(table.schema, cfg, "(rows)")
        key = hashlib.sha256(
            repr(table.schema).encode() + str(table.num_rows).encode() + os.urandom(8)
        ).hexdigest()
        path = storage.join(root, "_tmp", f"manifest-{key[:12]}")
        fs.makedirs(path, exist_ok=True)
        pq.write_table(table, storage.join(path, "part-0.parquet"), filesystem=fs)
    return with_manifest(cfg, storage.unstrip(fs, path)), path


def remove_staged(cfg: Config, path: str | None) -> None:
    if path is None:
        return
    fs, _ = storage.filesystem(cfg.output.uri, cfg.output.storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


@contextlib.contextmanager
def staged(rows: ManifestLike, cfg: Config):
    """``stage_manifest`` for the length of a ``with``: the config to read ``rows`` with;
    the staged copy is removed after, whatever happens."""
    cfg, path = stage_manifest(rows, cfg)
    try:
        yield cfg
    finally:
        remove_staged(cfg, path)
