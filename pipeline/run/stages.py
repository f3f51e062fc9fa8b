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
- ``ProcessStage`` (here): the three in one step, for backends that run in CPU tasks.
"""

from __future__ import annotations

import pyarrow as pa

from ..config import Config
from ..io.outputs import OutputStore
from .generate import OutpaintStage, variant_seed
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
    "Reference",
    "Replanner",
    "WriteStage",
    "bulk_metadata",
    "from_columns",
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
        self.route.process(records)
        self.outpaint.process(records)
        self.write.process(records)
        return self.write.table(batch.schema, records)
