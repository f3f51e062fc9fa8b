"""What the image stages pass along: a typed record per row, the columns each stage
adds, and the bookkeeping they share (datatrove's ``BaseFilter`` shape: a base stage
turns a block into records, resets what the stage sets, leaves rows that are not ok
alone, and turns the records back into Arrow).

Between stages (model backends), pixels travel as raw bytes (``large_binary``) with
their sizes implied by the plan's geometry columns: the reference as the model sees it
(sRGB), and, where the output keeps another colour space, as the output stores it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..common import codes
from ..common.box import Box
from ..plan.columns import GEOMETRY_COLUMNS, REQUEST
from ..review.score import DEFECTS, REGION_COLUMNS

PIXELS = pa.large_binary()
BACKDROP = "backdrop"  # a row's route to the backdrop fill (route.py), and its ``model``
SCENE = "scene"  # route: cascade: a row the scene fill continued (route.py), and its ``model``
FILLED = (BACKDROP, SCENE)  # routes whose canvas the routing stage made: no model
MODEL = "model"  # a row's route to the backend
# review_status of a generated ok row: the gate's verdict, then a reviewer's
PASSED, HELD, APPROVED, REJECTED = "passed", "held", "approved", "rejected"

# Final metadata columns added after planning (docs/contracts.md, Outputs), in order.
# colour and labels (docs/contracts.md, "Colour and labels"): the load stage names the
# source's profile and what became of it; the write stage the label it wrote
COLOR_FIELDS = [
    ("color_profile", pa.string()),
    ("color_transform", pa.string()),
    ("color_note", pa.string()),
    ("output_profile", pa.string()),
]
# GPU backends: the model actor (host:pid) and its cumulative busy clock when this
# row's batch finished; the run reports loop / wall per actor ("GPUs busy")
BUSY_FIELDS = [
    ("model_actor", pa.string()),
    ("model_loop_s", pa.float64()),
    ("model_wall_s", pa.float64()),
]
# the hosted API: the row's task and what it cost; the API actor's counters when the row
# finished (tasks in flight, credits spent so far), for the run's progress line
API_FIELDS = [
    ("api_task_id", pa.string()),
    ("cost_credits", pa.float64()),
    ("api_note", pa.string()),
]
API_COUNTERS = [("api_active", pa.int64()), ("api_spent", pa.float64())]
# the score of what is written (``review.score.judge``): made by the quality gate in the
# model stage where it retries (its kept attempt's, passed on), else by the write stage
QUALITY_FIELDS = [
    ("quality_distance", pa.float64()),
    *[(f"quality_{k}", pa.float64()) for k in DEFECTS],
    ("quality_pass", pa.bool_()),
    ("quality_defect", pa.string()),
    *[(c, pa.int64()) for c in REGION_COLUMNS],
]
OUTPUT_FIELDS = [
    ("request_hash", pa.string()),
    ("output_uri", pa.string()),
    ("output_uris", pa.list_(pa.string())),
    ("output_bytes", pa.int64()),
    *COLOR_FIELDS,
    ("digital_source_type", pa.string()),
    ("fill_color", pa.string()),
    ("backdrop_residual", pa.float64()),
    ("backdrop_noise", pa.float64()),
    ("border_variation", pa.float64()),
    ("border_lines", pa.float64()),
    ("scene_distance", pa.float64()),
    ("feather_px", pa.int64()),
    ("seam_score", pa.float64()),
    ("texture_score", pa.float64()),
    *QUALITY_FIELDS,
    ("quality_attempts", pa.int64()),
    ("review_status", pa.string()),
    ("ref_max_abs_diff", pa.int64()),
    ("ref_mean_abs_diff", pa.float64()),
    ("fill_leakage", pa.float64()),
    ("fill_leak_flag", pa.bool_()),
    ("model", pa.string()),
    ("load_ms", pa.float64()),
    ("generate_ms", pa.float64()),
    ("encode_ms", pa.float64()),
    ("write_ms", pa.float64()),
    ("run_id", pa.string()),
    ("worker_node", pa.string()),
    ("completed_at", pa.float64()),
    *BUSY_FIELDS,
    *API_FIELDS,
    *API_COUNTERS,
]
# what the load stage hands the write stage (model backends: through Arrow), never in the
# metadata: the reference (model's view; the output's where it differs), the output's
# colour space, the source metadata the output carries, the source itself (C2PA's parent)
CARRIED = [
    ("ref_pixels", PIXELS),
    ("ref_out_pixels", PIXELS),
    ("ref_alpha", PIXELS),
    ("out_icc", pa.large_binary()),
    ("tag_srgb", pa.bool_()),
    ("out_channels", pa.int8()),
    ("rights_exif", pa.large_binary()),
    ("rights_xmp", pa.list_(pa.string())),
    ("source_bytes", pa.large_binary()),
    ("source_format", pa.string()),
]
# ``attempt_base``: the gate's attempts a rejected row had before ``outpaint run --redo``
DROPPED_COLUMNS = (*dict(CARRIED), "out_pixels", "image_bytes", REQUEST, "attempt_base")
# what planning a row at load sets (its size known only then)
PLANNED = (
    "status",
    "error_code",
    "error_message",
    "source_width",
    "source_height",
    *GEOMETRY_COLUMNS,
    "generated",
    "steps",
)


@dataclass(eq=False)
class Record:
    """One row between the image stages: its columns (``row``: what becomes its metadata)
    and, typed and never in the metadata, the loaded reference (``ref``, a
    ``load.Reference``) and what the model generated (``out``: one canvas per variant,
    None where nothing was generated)."""

    row: dict
    ref: Any = None
    out: list[np.ndarray | None] | None = None

    @property
    def todo(self) -> bool:
        return self.row["status"] == codes.OK

    @property
    def box(self) -> Box:
        return Box.visible(self.row)

    def fail(self, code: str, message: str) -> None:
        """The row ends here with ``code``; nothing later touches it."""
        self.row.update(status=codes.status_of(code), error_code=code, error_message=message)
        self.row.update(generated=False, steps=0)
        self.out = None


def rows_to_table(
    schema: pa.Schema,
    rows: list[dict],
    added: Sequence[tuple[str, pa.DataType]] = (),
    dropped: Sequence[str] = (),
) -> pa.Table:
    """Rows back to Arrow: the input schema, less ``dropped``, plus ``added`` (in that order)."""
    fields = [f for f in schema if f.name not in dropped and f.name not in dict(added)]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields + [pa.field(n, t) for n, t in added]))


class RowStage:
    """The bookkeeping of every image stage, written once. A subclass says what it adds
    (``ADDS``) and drops (``DROPS``) and which of its columns start each block empty
    (``RESETS``: a retried block never keeps a value from its failed try), and writes
    ``process(records)``; rows that are not ok pass through untouched, and a row's own
    failure is recorded on it (``Record.fail``), never raised out of the stage."""

    ADDS: Sequence[tuple[str, pa.DataType]] = ()
    DROPS: Sequence[str] = ()
    RESETS: Sequence[str] = ()

    def records(self, batch: pa.Table) -> list[Record]:
        records = [Record(row) for row in batch.to_pylist()]
        self.reset(records)
        return records

    def reset(self, records: list[Record]) -> None:
        """Empty this stage's ``RESETS`` columns on the rows it does not keep: what it
        sets is then its own (a later stage may trust a value it finds there)."""
        empty = dict.fromkeys(self.RESETS)
        for rec in records:
            if not self.keeps(rec.row):
                rec.row.update(empty)

    def keeps(self, row: dict) -> bool:
        """Rows whose ``RESETS`` columns an earlier stage set for this stage to keep."""
        return False

    def table(self, schema: pa.Schema, records: list[Record]) -> pa.Table:
        return rows_to_table(schema, [rec.row for rec in records], self.ADDS, self.DROPS)

    def process(self, records: list[Record]) -> None:
        raise NotImplementedError


def todo(records: list[Record]) -> list[Record]:
    """The records still ok: what a stage works on."""
    return [rec for rec in records if rec.todo]


def elapsed_ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


def node_id() -> str | None:
    """The Ray node this row was written on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - a row's provenance, never worth failing it
        return None


def bulk_metadata(plan: pa.Table, run_id: str, completed_at: float) -> pa.Table:
    """Final metadata for planned rows that need no image work (rejected, failed while
    planning), built columnar: the same columns as the write stage's rows."""
    n = plan.num_rows
    output = dict(OUTPUT_FIELDS)
    keep = [c for c in plan.column_names if c not in DROPPED_COLUMNS and c not in output]
    set_to = {
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "worker_node": pa.repeat(pa.scalar(node_id(), pa.string()), n),
        "completed_at": pa.array(np.full(n, completed_at)),
    }
    if "request_hash" in plan.column_names:
        set_to["request_hash"] = plan.column("request_hash")
    cols = [plan.column(c) for c in keep] + [
        set_to.get(name, pa.nulls(n, t)) for name, t in OUTPUT_FIELDS
    ]
    fields = [plan.schema.field(c) for c in keep] + [pa.field(name, t) for name, t in OUTPUT_FIELDS]
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))
