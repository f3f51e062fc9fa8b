"""``outpaint run``: where the stages run (Ray Data), kept apart from what they do.

``run`` reads as its steps:

1. check everything that can fail before any work (storage, manifest schema, the API key);
2. the manifest's ids: the duplicate rule, then only their fingerprints kept;
3. what earlier runs left (resume);
4. triage, over big slices of the manifest in workers: plan, drop what is done, write
   the metadata of rejected rows in bulk; the work rows stay in Ray's object store;
5. count what triage finished, and say so;
6. the image stages over small blocks of the work rows only: load, outpaint (model
   actors sized to the work, none when nothing needs generating), write; the driver
   consumes their metadata rows (progress, metadata parts);
7. finish: compaction, ``run.json``, the review page.

The driver's memory is the manifest's id fingerprints (16 bytes a row), the done set
(40 bytes a done row) and bounded buffers; it never holds a row object or the manifest.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..backends import BackendSpec, BuildContext, spec_of, warmup_shapes
from ..common import codes, secrets, storage
from ..config import Config, ConfigError, dump
from ..config.licenses import license_of
from ..io import manifest
from ..io.done import EarlierRuns, sorted_keys
from ..io.outputs import OutputStore, new_run_id
from ..plan.duplicates import duplicate_first_rows
from . import hosted
from .cluster import (
    MODEL_ACTOR_ENV,
    actor_pool,
    check_versions,
    ensure_ray,
    model_resources,
    package_versions,
)
from .counts import ApiCounts, RunCounts, summary_table
from .generate import OutpaintStage, gate_of
from .load import LoadStage
from .progress import Progress
from .records import BACKDROP
from .route import BackdropStage
from .stages import ProcessStage
from .triage import TRIAGE_STATS, TriageCounts, TriageStage, identity_line, slices_table
from .write import WriteStage


def _filled(batch: pa.Table) -> pa.Array:
    """Rows planning routed to the backdrop fill (the manifest's analysis, or route: backdrop)."""
    return pc.fill_null(pc.equal(batch.column("route"), BACKDROP), False)


def work_summary(batch: pa.Table) -> pa.Table:
    """Per block of work rows: how many may need the model (all generated rows but those
    planned for the backdrop fill), how many are planned for the fill, and the prompts."""
    filled = _filled(batch)
    model = pc.and_(batch.column("generated"), pc.invert(filled))
    prompts = pc.unique(batch.column("prompt").cast(pa.string()).fill_null("")).to_pylist()
    counts = {"generated": _count(model), "filled": _count(filled)}
    return pa.table({**{k: [v] for k, v in counts.items()}, "prompts": [prompts]})


def _count(mask: pa.Array) -> int:
    return pc.sum(mask.cast(pa.int64())).as_py() or 0


def only_filled(batch: pa.Table) -> pa.Table:
    return batch.filter(_filled(batch))


def not_filled(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.invert(_filled(batch)))


class WorkRows:
    """The work rows triage left: Ray blocks (materialized in the object store), or,
    for a manifest of one slice triaged in the driver process, that slice's tables."""

    def __init__(self, dataset=None, tables: list[pa.Table] | None = None):
        self.dataset = dataset
        self.tables = tables or []
        self.counts = TriageCounts()
        self.rows = dataset.count() if dataset is not None else sum(t.num_rows for t in self.tables)

    def to_dataset(self, ray):
        return self.dataset if self.dataset is not None else ray.data.from_arrow(self.tables)

    def summary(self) -> tuple[int, int, list[str]]:
        """Rows that may need the model, rows planned for the backdrop fill, and the
        distinct prompts."""
        if self.dataset is not None:
            task = {"batch_format": "pyarrow", "batch_size": None}
            parts = self.dataset.map_batches(work_summary, **task).take_all()
        else:
            parts = [work_summary(t).to_pylist()[0] for t in self.tables]
        prompts = sorted({q for p in parts for q in p["prompts"]})
        return sum(p["generated"] for p in parts), sum(p["filled"] for p in parts), prompts


def triage(
    cfg: Config,
    store: OutputStore,
    run_id: str,
    index: manifest.ManifestIndex,
    earlier: EarlierRuns | None,
    duplicates: dict | None = None,
    redo: dict[str, int] | None = None,
) -> WorkRows:
    """Plan and resume-filter every row; the work rows come back, with the triage counts
    (how sources were identified). ``redo``: only these rejected rows are work."""
    if duplicates is None:
        duplicates = duplicate_first_rows(index.ids, np.arange(index.rows, dtype=np.int64))
    chunk = cfg.runtime.plan_block_rows
    if len(index.slices) <= 1:
        # one slice is one task's worth: run it here, and a run with nothing to do
        # never starts Ray (memory: one slice of at most plan_block_rows rows)
        stage = TriageStage(
            cfg, store, run_id, duplicates=duplicates, earlier=earlier, chunk_rows=chunk, redo=redo
        )
        work = WorkRows(tables=[t for piece in index.slices for t in stage.chunks(piece)])
        work.counts = stage.counts
        return work
    # once, to every task, through the output store: the driver then drops its copy
    shared = store.share(earlier, run_id) if earlier is not None and len(earlier) else None
    del earlier
    ray = ensure_ray(cfg.runtime)
    refs = ray.put(duplicates) if duplicates else None
    stage = TriageStage(
        cfg,
        store,
        run_id,
        duplicates=refs,
        earlier=shared,
        chunk_rows=chunk,
        stats_to_store=True,
        redo=redo,
    )
    slices = slices_table(index.slices)
    ds = ray.data.from_arrow(
        [slices.slice(i, 1) for i in range(slices.num_rows)]
    )  # one task per slice
    work = WorkRows(
        dataset=ds.map_batches(stage, batch_format="pyarrow", batch_size=None).materialize()
    )
    if shared is not None:
        store.folder.remove(shared)
    for part in store.folder.take_jsons(f"{TRIAGE_STATS}/{run_id}-"):
        work.counts.add(part)
    return work


def image_stages(ray, cfg: Config, store: OutputStore, run_id: str, work: WorkRows):
    """The image stages over small blocks of the work rows: a dataset of metadata rows."""
    spec = spec_of(cfg.model)
    runtime = cfg.runtime
    ds = work.to_dataset(ray).repartition(target_num_rows_per_block=runtime.block_rows)
    task = {"batch_format": "pyarrow", "batch_size": None}
    generated, filled, prompts = work.summary() if spec.actor else (0, 0, [])
    # A light backend fuses every stage into one task operator, where Ray Data's
    # per-operator resource reservation would only hold CPUs back; actor pipelines keep
    # it, so that no stage starves (benchmarks/RESULTS.md, pipeline_overhead.py).
    ray.data.DataContext.get_current().op_resource_reservation_enabled = generated > 0
    in_tasks = ProcessStage.from_config(cfg, store, run_id)
    if generated == 0:  # light CPU backends, or nothing for a model: no model actor, no weights
        return ds.map_batches(in_tasks, **task)
    # rows planned for the backdrop fill never pass a model actor: a branch of CPU tasks
    rest = ds.map_batches(not_filled, **task) if filled else ds
    rest = rest.map_batches(LoadStage.from_config(cfg), **task)
    rest = rest.map_batches(BackdropStage.from_config(cfg), **task)  # fused with the load
    rest = rest.map_batches(OutpaintStage, **_actor_args(ray, cfg, spec, generated, prompts))
    rest = rest.map_batches(WriteStage.from_config(cfg, store, run_id), **task)
    return (
        rest.union(ds.map_batches(only_filled, **task).map_batches(in_tasks, **task))
        if filled
        else rest
    )


def _actor_args(ray, cfg: Config, spec: BackendSpec, generated: int, prompts: list[str]) -> dict:
    """``map_batches`` arguments of the model stage: an actor pool sized to the work."""
    runtime = cfg.runtime
    # distinct prompts are embedded once at actor start (beyond a thousand: as they come)
    context = BuildContext(
        prompts if len(prompts) <= 1024 else None,
        warmup_shapes(cfg),
        runtime.batch_size,
        cfg.output,
    )
    args = {
        "fn_constructor_args": (cfg.model, context, cfg.output.color_intent, gate_of(cfg)),
        "batch_format": "pyarrow",
        # the API actor runs a call's rows concurrently (each waits on its task): a block a call
        "batch_size": None if spec.one_conversation else runtime.batch_size,
        "compute": actor_pool(ray, cfg.model, runtime, spec, generated),
        **model_resources(ray, cfg.model, runtime, spec).options(),
        "runtime_env": {"env_vars": MODEL_ACTOR_ENV},
    }
    # A dead actor (killed, OOM) is restarted and its batch redone: Ray Data's default
    # (-1, -1); only another restart limit needs the loose remote args.
    if runtime.actor_restarts != -1:
        args.update(max_restarts=runtime.actor_restarts, max_task_retries=-1)
    return args


# ------------------------------------------------------------------ the steps of a run


@dataclass
class Started:
    store: OutputStore
    index: manifest.ManifestIndex
    versions: dict | None  # the client's, when this run is a submitted Ray job
    balance: float | None  # the hosted API's credits at start


@dataclass
class ManifestIds:
    rows: int
    duplicates: dict  # id -> the manifest row of its first occurrence, for ids seen twice
    keys: tuple[np.ndarray, np.ndarray]  # the ids' sorted 128-bit fingerprints


@dataclass
class Earlier:
    state: EarlierRuns | None  # None: nothing to resume from
    info: dict | None  # how it was checked
    had_metadata: bool  # then compaction must pick the latest row per id


@dataclass
class ImagesDone:
    work_s: float
    wrote: bool  # this run added metadata (bulk rows or work rows)


@dataclass
class Say:
    """The run's own lines (not the progress bar)."""

    out: object
    quiet: bool
    started: float = field(default_factory=time.time)

    def __call__(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.out, flush=True)


def check(cfg: Config, say: Say) -> Started:
    """Step 1: everything that can fail before any work, in one line each."""
    if cfg.runtime.ray_address and storage.is_local(cfg.output.uri):
        raise ConfigError(
            f"output.uri {cfg.output.uri} is a local path but runtime.ray_address points at a cluster: "
            "workers on other nodes would write to their own disks; use object storage (s3://, gs://, az://)"
        )
    versions = check_versions(say.out)
    store = OutputStore(
        cfg.output.uri, cfg.output.storage_options, scrub=secrets.Scrubber.current()
    )
    index = manifest.scan(cfg, cfg.runtime.plan_block_rows)  # schema problems fail before any work
    manifest.check_reachable(index)
    store.folder.check_writable()
    # the hosted API: a missing or refused key stops here, nothing submitted
    balance = (
        hosted.check_key(cfg.model.api, say.out, say.quiet) if spec_of(cfg.model).hosted else None
    )
    if (
        cfg.output.c2pa is not None
    ):  # a key or certificate problem stops the run here, not row by row
        from ..io.provenance import ContentCredentials

        ContentCredentials(cfg.output.c2pa).signer()
    if cfg.output.mode == "error_if_exists" and store.has_outputs():
        raise ConfigError(
            f"output.uri {cfg.output.uri} already holds outputs and output.mode is error_if_exists; "
            "use resume (skip finished rows) or overwrite, or another output.uri"
        )
    return Started(store, index, versions, balance)


def manifest_ids(index: manifest.ManifestIndex) -> ManifestIds:
    """Step 2: the duplicate rule needs every id at once: found now, while the driver
    holds least; after it, the driver keeps the ids' sorted fingerprints only."""
    rows = index.rows
    duplicates = duplicate_first_rows(index.ids, np.arange(rows, dtype=np.int64))
    keys = sorted_keys(index.ids)
    index.ids = None
    return ManifestIds(rows, duplicates, keys)


def earlier_runs(cfg: Config, store: OutputStore, ids: ManifestIds) -> Earlier:
    """Step 3: what earlier runs left for these ids (only when resuming)."""
    had = bool(store.metadata.files())
    if cfg.output.mode != "resume" or not had:
        return Earlier(None, None, had)
    state, info = store.earlier_runs(ids.keys)
    return Earlier(state, info, had)


def planned_counts(
    cfg: Config, store: OutputStore, run_id: str, ids: ManifestIds, work: WorkRows, started: Started
) -> RunCounts:
    """Step 5: the rows triage finished in bulk, counted from their parts; the rest of
    the manifest was done already."""
    counts = RunCounts(total=work.rows)
    if spec_of(cfg.model).hosted:
        counts.api = ApiCounts(credits_at_start=started.balance)
    bulk = store.metadata.read_shards(f"{run_id}-t", ["status", "error_code"])
    if bulk is not None:
        counts.rows.add(bulk)
        counts.bulk = bulk.num_rows
    counts.skipped = ids.rows - work.rows - counts.bulk
    return counts


def run_images(
    cfg: Config, store: OutputStore, run_id: str, work: WorkRows, counts: RunCounts, shown: Progress
) -> ImagesDone:
    """Step 6: the image stages; their metadata rows counted and written in parts."""
    counts.started = time.time()
    if not work.rows:
        return ImagesDone(0.0, counts.bulk > 0)
    pending: list[pa.Table] = []
    pending_rows = parts = 0
    ray = ensure_ray(cfg.runtime)
    blocks = image_stages(ray, cfg, store, run_id, work).iter_batches(
        batch_format="pyarrow", batch_size=None
    )
    for batch in blocks:
        if batch.num_rows:
            counts.add(batch)
            pending.append(batch)
            pending_rows += batch.num_rows
        if pending_rows >= cfg.output.metadata_part_rows:
            _write_part(store, pending, f"{run_id}-{parts:05d}")
            pending, pending_rows, parts = [], 0, parts + 1
        shown.update(counts)
    if pending:
        _write_part(store, pending, f"{run_id}-{parts:05d}")
    return ImagesDone(time.time() - counts.started, True)


def _write_part(store: OutputStore, tables: list[pa.Table], shard: str) -> None:
    store.metadata.write_part(pa.concat_tables(tables, promote_options="permissive"), shard)


def finish(
    cfg: Config,
    run_id: str,
    started: Started,
    ids: ManifestIds,
    earlier: Earlier,
    work: WorkRows,
    counts: RunCounts,
    images: ImagesDone,
    say: Say,
) -> dict:
    """Step 7: compaction, ``run.json`` and the review page; the run's summary."""
    store = started.store
    api = hosted.finish(cfg.model.api, cfg.output, counts.api) if counts.api is not None else None
    # A first run wrote every manifest row exactly once (bulk parts by manifest position,
    # work parts by the driver): nothing to deduplicate, so no catalogue-sized key table;
    # an all-done rerun added no parts: nothing to compact either
    if earlier.had_metadata and images.wrote:
        rows_kept = store.compact(f"{run_id}-c")
    else:
        rows_kept = store.metadata.count_rows()
    manifest_counts = store.metadata.count(ids.keys)
    wall = time.time() - say.started
    result = {
        "run_id": run_id,
        "started_at": say.started,
        "finished_at": time.time(),
        "wall_s": round(wall, 3),
        "rows": ids.rows,
        "work_rows": work.rows,
        "manifest": {
            "by_status": manifest_counts.statuses(),
            "by_code": dict(sorted(manifest_counts.by_code.items())),
            # generated ok rows: passed the quality gate, held for a reviewer, or verdicts
            "by_review": dict(sorted(manifest_counts.by_review.items())),
        },
        "counts": {
            "processed": counts.done + counts.bulk,
            "skipped": counts.skipped,
            "by_status": counts.rows.by_status,
            "by_code": counts.rows.by_code,
            "by_route": dict(sorted(counts.routes.items())),
            "by_review": dict(sorted(counts.rows.by_review.items())),
            "retries": counts.retries,
            **({"cascade": counts.cascade()} if cfg.model.route == "cascade" else {}),
        },
        "model_busy": counts.busy(),
        "images_written": counts.images,
        "output_megapixels": round(counts.megapixels, 3),
        "images_per_s": round(counts.images / wall, 4) if wall > 0 else 0.0,
        # the image stages' time: images/s over the work, not the skipping
        "work_s": round(images.work_s, 3),
        "megapixels_per_s": round(counts.megapixels / wall, 4) if wall > 0 else 0.0,
        "metadata_rows": rows_kept,
        "model_license": _license(cfg),
        "config": secrets.redact(dump(cfg)),  # credentials masked by name and by value
        "versions": package_versions(),
        "submitted_from": started.versions,
        "sources": {**work.counts.as_dict(), "outputs_check": earlier.info},
        "api": api,
    }
    store.folder.write_json("run.json", result)
    _review_page(cfg, store, images.wrote, say)
    return result


def _license(cfg: Config) -> dict | None:
    """The checkpoint's licence as the plan stated it (None: a backend without weights)."""
    lic = license_of(cfg.model)
    return lic.as_dict() if lic is not None else None


def _review_page(cfg: Config, store: OutputStore, wrote: bool, say: Say) -> None:
    """The review page, unless nothing changed since the one an earlier run wrote (a
    catalogue-sized rerun pays no thumbnail requests). It never fails a finished run."""
    if not cfg.output.report or (not wrote and store.folder.exists("report.html")):
        return
    try:
        from ..review import report

        report.write(store, cfg.input.storage_options, sample=cfg.output.report_sample)
    except Exception as e:  # noqa: BLE001 - the review page must never fail a finished run
        print(
            secrets.scrub(f"[outpaint] report.html not written: {type(e).__name__}: {e}"),
            file=say.out,
        )


def run(
    cfg: Config,
    *,
    quiet: bool = False,
    out=sys.stderr,
    progress: str = "auto",
    redo: bool = False,
) -> dict:
    """Run the job; returns the run summary (also written to ``run.json``). ``progress``:
    auto (a bar on a terminal or in a notebook, else a line every
    ``runtime.progress_interval_s``), bar, line or none. ``redo``: regenerate only the
    rows a reviewer rejected (``outpaint review``), each with its next attempt's seed."""
    say = Say(out, quiet)
    run_id = new_run_id()
    # 1. everything that can fail, before any work
    started = check(cfg, say)
    license = license_of(cfg.model)
    if license is not None:  # what the plan said, said again where the work starts
        say(f"[outpaint] {license.line()}")
    # 2. the manifest's ids
    ids = manifest_ids(started.index)
    # 3. what earlier runs left
    earlier = earlier_runs(cfg, started.store, ids)
    rejected = None
    if redo:
        from ..review.verdicts import rejected_rows

        rejected = rejected_rows(started.store)
        say(f"[outpaint] --redo: {len(rejected):,} rows rejected by a reviewer, nothing else")
    # 4. triage: plan and resume-filter every row; the work rows come back
    say(f"[outpaint] planning {ids.rows:,} rows ({len(started.index.slices):,} slices)")
    work = triage(
        cfg, started.store, run_id, started.index, earlier.state, ids.duplicates, rejected
    )
    earlier.state = None  # handed over: triage shared it with its tasks and the driver drops it
    # 5. what triage finished
    counts = planned_counts(cfg, started.store, run_id, ids, work, started)
    st = counts.rows.by_status
    say(
        f"[outpaint] planned in {time.time() - say.started:.1f}s: {work.rows:,} to do, "
        f"{counts.skipped:,} already done, {st.get(codes.REJECTED, 0):,} rejected, "
        f"{st.get(codes.FAILED, 0):,} failed"
    )
    line = identity_line(work.counts, earlier.info, cfg.input.identity)
    if line:
        say(line)
    # 6. the image stages
    shown = Progress("none" if quiet else progress, work.rows, out, cfg.runtime.progress_interval_s)
    images = run_images(cfg, started.store, run_id, work, counts, shown)
    shown.close(counts)
    # 7. compaction, run.json, the review page
    result = finish(cfg, run_id, started, ids, earlier, work, counts, images, say)
    say(summary_table(result))
    return result
