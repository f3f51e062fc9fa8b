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
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..common import codes
from ..config import Config
from ..io import manifest, sources
from ..io.done import EarlierRuns
from ..io.outputs import OutputStore
from ..plan.stage import PlanSections, PlanStage
from .records import bulk_metadata

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


TRIAGE_STATS = "_tmp/triage"  # under output.uri: each Ray triage task's counts, read by the driver


@dataclass
class TriageCounts:
    rows: int = 0
    done: int = 0
    work: int = 0
    bulk: int = 0
    deferred: int = 0  # remote sources of unknown size: planned when loaded
    sizes_from_prior: int = 0  # sizes taken from the id's earlier ok row
    version: int = 0  # identities from image_version
    identity: sources.IdentityStats = field(default_factory=sources.IdentityStats)

    def add_plan(self, planner: PlanStage) -> None:
        for k, v in planner.stats.items():
            setattr(self, k, getattr(self, k) + v)
        self.identity.add(planner.identity_stats)

    def add(self, other: dict) -> None:
        for k in ("rows", "done", "work", "bulk", "deferred", "sizes_from_prior", "version"):
            setattr(self, k, getattr(self, k) + other.get(k, 0))
        self.identity.add(sources.IdentityStats(**other.get("identity", {})))

    def as_dict(self) -> dict:
        out = {
            k: getattr(self, k)
            for k in ("rows", "done", "work", "bulk", "deferred", "sizes_from_prior", "version")
        }
        out["identity"] = self.identity.as_dict()
        return out


class TriageStage:
    """Slices -> work rows (a generator of plan tables), bulk metadata written aside.

    ``duplicates`` (id -> first manifest row) may be a Ray object ref, fetched once per
    task; ``earlier`` (``EarlierRuns``: the done set and recorded source sizes) one, or the
    name the output store shared it under (``OutputStore.share``), read once per task.
    """

    def __init__(
        self,
        cfg: Config | PlanSections,
        store: OutputStore,
        run_id: str,
        duplicates=None,
        earlier=None,
        chunk_rows: int = 65_536,
        stats_to_store: bool = False,
        redo: dict[str, int] | None = None,
    ):
        self.cfg = PlanSections.of(cfg)  # planning's sections; the slices read input and limits
        self.store = store
        self.run_id = run_id
        self.duplicates = duplicates
        self.earlier = earlier
        self.chunk_rows = chunk_rows
        self.stats_to_store = stats_to_store  # Ray tasks leave their counts for the driver
        self.counts = TriageCounts()  # of this instance (tests, direct use)
        # ``outpaint run --redo``: the rows a reviewer rejected (id -> attempts they had) are
        # the only work; every other row is left as it is, done or not
        self.redo = redo

    def triage(self, plan: pa.Table, earlier: EarlierRuns | None) -> tuple[pa.Table, pa.Table]:
        """A planned chunk -> (work rows, rows finished here); done rows are neither."""
        ok = np.asarray(
            pc.equal(plan.column("status"), codes.OK).to_numpy(zero_copy_only=False), bool
        )
        already = np.zeros(plan.num_rows, bool)
        if earlier is not None and len(earlier) and ok.any():
            already[ok] = earlier.done.contains(plan.column("request_hash").filter(pa.array(ok)))
        self.counts.rows += plan.num_rows
        if self.redo is not None:
            return self._redo(plan, ok)
        self.counts.done += int(already.sum())
        return plan.filter(pa.array(ok & ~already)), plan.filter(pa.array(~ok))

    def _redo(self, plan: pa.Table, ok: np.ndarray) -> tuple[pa.Table, pa.Table]:
        """The rejected rows as work, each going on from the attempts it had; nothing else."""
        keys = pa.array(list(self.redo), pa.string())
        picked = ok & np.asarray(pc.is_in(plan.column("id"), value_set=keys).fill_null(False))
        self.counts.done += plan.num_rows - int(picked.sum())
        work = plan.filter(pa.array(picked))
        base = [self.redo[i] for i in work.column("id").to_pylist()]
        return work.append_column("attempt_base", pa.array(base, pa.int64())), plan.slice(0, 0)

    def chunks(self, piece: manifest.Slice) -> Iterator[pa.Table]:
        earlier = (
            self.store.read_shared(self.earlier)
            if isinstance(self.earlier, str)
            else _resolve(self.earlier)
        )
        planner = PlanStage(self.cfg, _resolve(self.duplicates), identify=True, earlier=earlier)
        for k, rows in enumerate(
            manifest.read_slice(piece, self.cfg.input, self.cfg.limits, self.chunk_rows)
        ):
            work, finished = self.triage(planner(rows), earlier)
            if finished.num_rows:
                # one part per chunk, named by its place in the manifest: a retried task
                # rewrites the same part, so no row is ever written twice
                self.store.metadata.write_part(
                    bulk_metadata(finished, self.run_id, time.time()),
                    f"{self.run_id}-t{piece.row0:012d}-{k:05d}",
                )
                self.counts.bulk += finished.num_rows
            self.counts.work += work.num_rows
            if work.num_rows:
                yield work
        self.counts.add_plan(planner)
        if self.stats_to_store:
            self.store.folder.write_json(
                f"{TRIAGE_STATS}/{self.run_id}-{piece.row0:012d}.json", self.counts.as_dict()
            )

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for row in batch.select(list(SLICE_FIELDS)).to_pylist():
            yield from self.chunks(manifest.Slice(**row))


def identity_line(counts: TriageCounts, outputs_check: dict | None, mode: str) -> str | None:
    """One line: how this run learnt which sources changed and which outputs exist."""
    st = counts.identity
    parts = []
    if st.listed or st.prefixes:
        prefixes = f"{st.prefixes:,} prefix{'es' if st.prefixes != 1 else ''}"
        parts.append(
            f"{st.listed:,} sources identified from {st.listing_pages:,} listing requests over {prefixes}"
        )
    if st.head:
        how = sorted(v for k, v in st.decisions.items() if k != "listing")
        parts.append(f"{st.head:,} looked up one by one ({'; '.join(how) or 'HEAD a row'})")
    if counts.version:
        parts.append(f"{counts.version:,} by image_version (no request)")
    if counts.sizes_from_prior:
        parts.append(f"{counts.sizes_from_prior:,} sizes from earlier runs")
    if counts.deferred:
        parts.append(f"{counts.deferred:,} new remote sources read once, when loaded")
    if outputs_check and outputs_check.get("existence"):
        parts.append(f"outputs: {outputs_check['existence']}")
    if not parts:
        return None
    why = st.decisions.get("listing")
    return f"[outpaint] sources ({mode}): " + "; ".join(parts) + (f" — {why}" if why else "")
