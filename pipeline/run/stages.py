"""The per-row image stages after planning, and how they are put together. Each is a
small class: setup in ``__init__``, a pure ``__call__(batch: pa.Table) -> pa.Table``
that Ray Data maps over blocks and tests call directly; each takes only its own
sections of the config (``from_config`` picks them out of a whole one). Rows that are
not ``ok`` pass through untouched, so every manifest row reaches the metadata; a row's
failure never raises out of a stage.

- ``load.LoadStage``: fetch, decode, colour: the visible reference;
- ``route.BackdropStage``: plain studio backdrops continued without the model;
- ``generate.OutpaintStage``: the backend, in batches, for the other rows;
- ``write.WriteStage``: paste back, encode, write, measure;
- ``ProcessStage`` (here): the three in one step, for backends that run in CPU tasks;
- ``Stages`` / ``stages(cfg)`` (here): the whole set for a config, planning included, for
  ``ds.map_batches`` over a dataset of the caller's own and for ``outpaint serve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..backends import BuildContext, spec_of, warmup_shapes
from ..config import Config
from ..io import manifest as manifest_io
from ..io.outputs import OutputStore, new_run_id
from ..plan.stage import PlanStage
from .generate import OutpaintStage, gate_of, variant_seed
from .load import LoadStage, Reference, Replanner, from_columns, to_columns
from .records import OUTPUT_FIELDS, Record, bulk_metadata
from .route import BackdropStage
from .write import WriteStage

__all__ = [
    "OUTPUT_FIELDS",
    "BackdropStage",
    "LoadStage",
    "OutpaintStage",
    "ProcessStage",
    "Record",
    "Stages",
    "Reference",
    "Replanner",
    "WriteStage",
    "bulk_metadata",
    "from_columns",
    "stages",
    "to_columns",
    "variant_seed",
]


class ProcessStage:
    """Load -> route -> outpaint -> write in one step, pixels kept as arrays in memory.

    For backends that run in plain CPU tasks: the stages would be fused into one Ray
    task anyway, so passing pixels through Arrow between them is pure copying.
    """

    def __init__(
        self, load: LoadStage, route: BackdropStage, outpaint: OutpaintStage, write: WriteStage
    ):
        self.load = load
        self.route = route
        self.outpaint = outpaint
        self.write = write

    @classmethod
    def from_config(cls, cfg: Config, store: OutputStore, run_id: str) -> ProcessStage:
        return cls(
            LoadStage.from_config(cfg),
            BackdropStage.from_config(cfg),
            OutpaintStage.from_config(cfg, lazy=True),
            WriteStage.from_config(cfg, store, run_id),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = self.load.records(batch)
        self.load.process(records)
        for stage in (self.route, self.outpaint, self.write):
            stage.reset(records)  # as each stage's own records() would
            stage.process(records)
        return self.write.table(batch.schema, records)


@dataclass
class Stages:
    """The pipeline's stages for ``ds.map_batches`` over a dataset of your own (pyarrow
    batches): ``plan`` (geometry, codes, request hash), then either ``process`` (load,
    route, outpaint and write in one CPU task: the CPU backends) or ``load`` -> ``route``
    (plain backdrops continued without the model) -> ``Outpaint`` (a class, for an actor
    pool: ``fn_constructor_args=stages.outpaint_args``) -> ``write``.
    Each takes a pyarrow Table and returns one, and is callable without Ray. The write
    stages write images under ``output.uri`` and return the metadata rows (every row,
    whatever its fate): write those wherever you like, e.g. ``ds.write_parquet``."""

    config: Config
    plan: PlanStage
    load: LoadStage
    route: BackdropStage
    write: WriteStage
    process: ProcessStage
    Outpaint: type
    outpaint_args: tuple
    needs_actor: bool

    def apply(self, ds: Any, *, batch_size: int | None = None, concurrency: int = 1) -> Any:
        """The whole chain on a Ray Dataset of manifest rows; returns the metadata dataset."""
        import ray

        schema = ds.schema()
        manifest_io.check_schema(
            schema.base_schema
            if hasattr(schema, "base_schema")
            else pa.schema(zip(schema.names, schema.types)),
            self.config,
        )
        task = dict(batch_format="pyarrow", batch_size=None)
        ds = ds.map_batches(self.plan, **task)
        if not self.needs_actor:
            return ds.map_batches(self.process, **task)
        ds = ds.map_batches(self.load, **task)
        ds = ds.map_batches(self.route, **task)
        ds = ds.map_batches(
            self.Outpaint,
            fn_constructor_args=self.outpaint_args,
            batch_format="pyarrow",
            batch_size=batch_size or self.config.runtime.batch_size,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
        )
        return ds.map_batches(self.write, **task)


def stages(cfg: Config, run_id: str | None = None) -> Stages:
    """The stages of ``cfg`` (``run_id`` tags the metadata rows; default: a new one)."""
    store = OutputStore(cfg.output.uri, cfg.output.storage_options)
    run_id = run_id or new_run_id()
    context = BuildContext(None, warmup_shapes(cfg), cfg.runtime.batch_size, cfg.output)
    return Stages(
        cfg,
        PlanStage(cfg, identify=True),
        LoadStage.from_config(cfg),
        BackdropStage.from_config(cfg),
        WriteStage.from_config(cfg, store, run_id),
        ProcessStage.from_config(cfg, store, run_id),
        OutpaintStage,
        (cfg.model, context, cfg.output.color_intent, gate_of(cfg)),
        spec_of(cfg.model).actor,
    )
