"""A run over any manifest (a URI, the config's own, rows in memory, a Ray Dataset) and
what it did, as the Python API hands it back."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

import pyarrow as pa

from ..config import Config
from ..io.outputs import OutputStore
from ..io.staging import ManifestLike, staged
from .runner import run


@dataclass
class RunResult:
    """What a run did (``run.json``, whole, in ``summary``)."""

    summary: dict
    output_uri: str
    storage_options: dict = field(default_factory=dict, repr=False)

    @property
    def run_id(self) -> str:
        return self.summary["run_id"]

    @property
    def rows(self) -> int:
        return self.summary["rows"]

    @property
    def by_status(self) -> dict[str, int]:
        """Every manifest row's latest status: ok / rejected / failed."""
        return dict(self.summary["manifest"]["by_status"])

    @property
    def by_review(self) -> dict[str, int]:
        """Generated ok rows by their latest review status: passed, held, approved, rejected."""
        return dict(self.summary["manifest"].get("by_review", {}))

    @property
    def by_code(self) -> dict[str, int]:
        return dict(self.summary["manifest"]["by_code"])

    @property
    def images_written(self) -> int:
        return self.summary["images_written"]

    @property
    def skipped(self) -> int:
        return self.summary["counts"]["skipped"]

    def metadata(self, columns: list[str] | None = None) -> pa.Table:
        """The output's metadata: one row per manifest row (latest run's wins)."""
        table = OutputStore(self.output_uri, self.storage_options).metadata.read(columns)
        return table if table is not None else pa.table({})


def run_manifest(
    manifest: ManifestLike,
    cfg: Config,
    *,
    progress: str = "auto",
    quiet: bool = False,
    out: TextIO | None = None,
    redo: bool = False,
) -> RunResult:
    """``run`` over ``manifest``, staged first when it is held in memory."""
    with staged(manifest, cfg) as cfg:
        summary = run(
            cfg,
            quiet=quiet,
            out=out if out is not None else sys.stderr,
            progress="none" if quiet else progress,
            redo=redo,
        )
    return RunResult(summary, cfg.output.uri, dict(cfg.output.storage_options))
