"""Triage: the first stage of ``outpaint run``, over big manifest slices.

A task reads its slice of the manifest (``manifest.read_slice``), plans it
(vectorised, ``PlanStage``), drops the rows already done (``DoneSet``, 128-bit
fingerprints of their request hashes) and writes the final metadata of the rows
that need no image work (rejected, or failed while planning) itself, in bulk, as
one Parquet part per chunk. Only the rows left, the work rows, go on to the image
stages. So a row that needs no work costs a few microseconds of columnar work in a
block of tens of thousands, never a Python object, a small block or a trip to the
driver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import codes
from ..config import Config
from ..io import manifest
from ..io.done import DoneSet
from ..io.outputs import OutputStore
from ..plan.stage import PlanStage
from .stages import bulk_metadata

# Columns of the slice table the driver hands to Ray Data (one row per slice).
SLICE_FIELDS = ("uri", "format", "group0", "group1", "row0")


def slices_table(slices: list[manifest.Slice]) -> pa.Table:
    return pa.table({f: [getattr(s, f) for s in slices] for f in SLICE_FIELDS})


def _resolve(value):
    """A value, or the Ray object it refers to (big shared inputs travel once)."""
    if type(value).__name__ == "ObjectRef":
        import ray

        return ray.get(value)
    return value


@dataclass
class TriageCounts:
    rows: int = 0
    done: int = 0
    work: int = 0
    bulk: int = 0


class TriageStage:
    """Slices -> work rows (a generator of plan tables), bulk metadata written aside.

    ``duplicates`` (id -> first manifest row) and ``done`` (a ``DoneSet``) may be Ray
    object refs, fetched once per task (zero-copy for the fingerprint arrays).
    """

    def __init__(self, cfg: Config, store: OutputStore, run_id: str, duplicates=None, done=None,
                 chunk_rows: int = 65_536):
        self.cfg = cfg
        self.store = store
        self.run_id = run_id
        self.duplicates = duplicates
        self.done = done
        self.chunk_rows = chunk_rows
        self.counts = TriageCounts()  # of this instance (tests, direct use)

    def triage(self, plan: pa.Table, done: DoneSet | None) -> tuple[pa.Table, pa.Table]:
        """A planned chunk -> (work rows, rows finished here); done rows are neither."""
        ok = np.asarray(pc.equal(plan.column("status"), codes.OK).to_numpy(zero_copy_only=False), bool)
        already = np.zeros(plan.num_rows, bool)
        if done is not None and len(done) and ok.any():
            already[ok] = done.contains(plan.column("request_hash").filter(pa.array(ok)))
        self.counts.rows += plan.num_rows
        self.counts.done += int(already.sum())
        return plan.filter(pa.array(ok & ~already)), plan.filter(pa.array(~ok))

    def chunks(self, piece: manifest.Slice) -> Iterator[pa.Table]:
        planner = PlanStage(self.cfg, _resolve(self.duplicates), identify=True)
        done = _resolve(self.done)
        for k, rows in enumerate(manifest.read_slice(piece, self.cfg, self.chunk_rows)):
            work, finished = self.triage(planner(rows), done)
            if finished.num_rows:
                # one part per chunk, named by its place in the manifest: a retried task
                # rewrites the same part, so no row is ever written twice
                self.store.write_metadata_part(bulk_metadata(finished, self.run_id, time.time()),
                                               f"{self.run_id}-t{piece.row0:012d}-{k:05d}")
                self.counts.bulk += finished.num_rows
            self.counts.work += work.num_rows
            if work.num_rows:
                yield work

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for row in batch.select(list(SLICE_FIELDS)).to_pylist():
            yield from self.chunks(manifest.Slice(**row))
