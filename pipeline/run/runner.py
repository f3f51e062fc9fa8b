"""``outpaint run``: where the stages run (Ray Data), kept apart from what they do.

Driver: validate, scan the manifest's ids (the duplicate rule, row numbers and the
resume check; never its rows), then two Ray Data phases:

1. triage, over big slices of the manifest in workers: plan, drop what is done,
   write the metadata of rejected rows in bulk; the work rows stay in Ray's object
   store. The driver then knows exactly how much work there is.
2. images, over small blocks of the work rows only: load, outpaint (model actors
   sized to the work, none when nothing needs generating), write. The driver consumes
   their metadata rows: progress, metadata parts.

Then compaction, run.json, the report and the summary. The driver's memory is the
manifest's id column (~30 bytes a row), the done set (16 bytes a done row) and
bounded buffers; it never holds a row object or the manifest.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import codes, storage
from ..backends import needs_actor
from ..config import Config, ConfigError, dump
from ..io import manifest
from ..io.done import sorted_keys
from ..io.outputs import OutputStore, new_run_id
from ..plan.stage import duplicate_first_rows
from .progress import Progress
from .stages import LoadStage, OutpaintStage, ProcessStage, WriteStage
from .triage import TRIAGE_STATS, TriageCounts, TriageStage, slices_table

log = logging.getLogger("outpaint")
MODEL_ACTOR_ENV = {
    "OUTPAINT_MODEL_ACTOR": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}

VERSIONED = (
    "outpaint",
    "ray",
    "torch",
    "diffusers",
    "transformers",
    "pyarrow",
    "numpy",
    "pillow",
    "fsspec",
    "s3fs",
    "opencv-python-headless",
    "pydantic",
)


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def quiet_logs(verbose: bool) -> None:
    """Ray's and Ray Data's start-up, executor and progress chatter only with --verbose:
    our own progress line says what a user needs."""
    import ray.data  # noqa: F401 - it configures its loggers on import: set ours after

    level = logging.INFO if verbose else logging.ERROR
    for name in (
        "ray",
        "ray.data",
        "ray._private",
        "ray.data._internal.execution.streaming_executor",
    ):
        logging.getLogger(name).setLevel(level)


def ensure_ray(cfg: Config):
    import ray

    quiet_logs(cfg.runtime.verbose)
    if not ray.is_initialized():
        # workers' output reaches the terminal only with --verbose; row errors are in the metadata
        common = dict(
            logging_level=logging.INFO if cfg.runtime.verbose else logging.ERROR,
            log_to_driver=cfg.runtime.verbose,
        )
        # inside a Ray job (outpaint submit) RAY_ADDRESS names the cluster it runs on
        address = cfg.runtime.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(
                address="local",
                num_cpus=cfg.runtime.num_cpus,
                include_dashboard=False,
                object_store_memory=cfg.runtime.object_store_memory,
                **common,
            )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.runtime.ray_progress_bars
    ctx.print_on_execution_start = cfg.runtime.ray_progress_bars
    return ray


SUPPORTED_RAY = ((2, 40), (2, 64))  # >= first, < second: as pyproject's ray pin


def check_versions(out) -> dict | None:
    """On a cluster (``outpaint submit``): the client's versions against this side's.
    Ray outside the supported range fails at start; a different Ray than the client's is
    one line (the job runs entirely on the cluster's Ray, with the client's outpaint)."""
    client = os.environ.get("OUTPAINT_CLIENT_VERSIONS")
    if not client:
        return None
    want = json.loads(client)
    have = package_versions()
    ray_v = tuple(int(p) for p in (have["ray"] or "0.0").split(".")[:2])
    if not SUPPORTED_RAY[0] <= ray_v < SUPPORTED_RAY[1]:
        raise ConfigError(
            f"the cluster runs Ray {have['ray']}; outpaint {have['outpaint']} needs Ray "
            f">= {'.'.join(map(str, SUPPORTED_RAY[0]))}, < {'.'.join(map(str, SUPPORTED_RAY[1]))}"
        )
    skew = {
        k: {"client": want.get(k), "cluster": have.get(k)}
        for k in ("ray", "outpaint")
        if want.get(k) != have.get(k)
    }
    if skew:
        print(
            "[outpaint] version skew: "
            + ", ".join(
                f"{k} client {v['client']} / cluster {v['cluster']}" for k, v in skew.items()
            ),
            file=out,
            flush=True,
        )
    return {"client": want, "skew": skew}


def _fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class Tally:
    """The driver's running counts. ``total`` is the work rows (what progress and ETA
    are over); rows finished in bulk by triage are counted up front, not waited for."""

    total: int
    started: float = field(default_factory=time.time)
    done: int = 0
    skipped: int = 0
    bulk: int = 0
    by_status: dict = field(default_factory=dict)
    by_code: dict = field(default_factory=dict)
    megapixels: float = 0.0
    images: int = 0
    actors: dict = field(default_factory=dict)  # model actor -> (loop s, wall s), latest
    api: dict | None = None  # bfl-api: tasks, outcomes, credits (this run's rows)
    api_done: list = field(
        default_factory=list
    )  # bfl-api: requests whose task ended (journal clean-up)

    def busy(self) -> dict | None:
        """Denoising-loop time over actor time, per model actor and overall (None: no GPU backend)."""
        if not self.actors:
            return None
        loop = sum(v[0] for v in self.actors.values())
        wall = sum(v[1] for v in self.actors.values())
        return {
            "fraction": round(loop / wall, 4) if wall > 0 else None,
            "loop_s": round(loop, 3),
            "actor_s": round(wall, 3),
            "actors": {
                k: round(v[0] / v[1], 4) if v[1] > 0 else None
                for k, v in sorted(self.actors.items())
            },
        }

    def add(self, batch: pa.Table) -> None:
        """Work rows' metadata, columnar."""
        codes.add_counts(self.by_status, self.by_code, batch)
        written = pc.and_(
            pc.fill_null(pc.equal(batch.column("status"), codes.OK), False),
            pc.is_valid(batch.column("output_uri")),
        )
        area = pc.multiply(
            batch.column("canvas_width").cast(pa.float64()),
            batch.column("canvas_height").cast(pa.float64()),
        )
        self.images += pc.sum(written.cast(pa.int64())).as_py() or 0
        self.megapixels += (pc.sum(pc.filter(area, written)).as_py() or 0.0) / 1e6
        self.done += batch.num_rows
        if self.api is not None and "api_task_id" in batch.column_names:
            self.add_api(batch)
        if "model_actor" in batch.column_names:  # GPU backends only: the rows a model generated
            gen = batch.filter(pc.is_valid(batch.column("model_actor")))
            for a, lp, wl in zip(
                *(
                    gen.column(c).to_pylist()
                    for c in ("model_actor", "model_loop_s", "model_wall_s")
                )
            ):
                if wl >= self.actors.get(a, (0.0, -1.0))[1]:
                    self.actors[a] = (lp, wl)

    def add_api(self, batch: pa.Table) -> None:
        a = self.api
        task = pc.is_valid(batch.column("api_task_id"))
        ok = pc.fill_null(pc.equal(batch.column("status"), codes.OK), False)
        code = batch.column("error_code")
        a["submitted"] += pc.sum(task.cast(pa.int64())).as_py() or 0
        a["ready"] += pc.sum(pc.and_(task, ok).cast(pa.int64())).as_py() or 0
        for name, key in (("moderated", "moderated"), ("generation_failed", "errors")):
            a[key] += (
                pc.sum(pc.fill_null(pc.equal(code, name), False).cast(pa.int64())).as_py() or 0
            )
        a["cost_credits"] = round(
            a["cost_credits"]
            + (pc.sum(pc.filter(batch.column("cost_credits"), ok)).as_py() or 0.0),
            4,
        )
        active = batch.column("api_active").drop_null()
        if len(active):
            a["active"] = active[-1].as_py()
        ended = pc.or_(
            ok,
            pc.fill_null(
                pc.is_in(code, value_set=pa.array(["moderated", "invalid_request"])), False
            ),
        )
        self.api_done += [
            h for h in pc.filter(batch.column("request_hash"), ended).to_pylist() if h
        ]

    def _parts(self) -> list[str]:
        parts = [f"{k} {v:,}" for k, v in sorted(self.by_status.items())]
        if self.skipped:
            parts.append(f"skipped {self.skipped:,}")
        if self.api is not None:
            a = self.api
            parts.append(
                f"API: {a['active']} active, {a['ready']:,} ready, {a['moderated']:,} moderated, "
                f"{a['cost_credits']:,.2f} credits"
            )
        return parts

    def postfix(self) -> str:
        """What a progress bar shows beside its count and rate."""
        return " · ".join(self._parts())

    def line(self) -> str:
        el = max(time.time() - self.started, 1e-9)
        rate = self.done / el
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / max(self.total, 1)
        parts = [f"{self.done:,}/{self.total:,} work rows ({pct:.1f}%)", *self._parts()]
        parts += [
            f"{rate:.2f} rows/s",
            f"ETA {_fmt_duration(eta) if self.done < self.total else '0m00s'}",
        ]
        return "[outpaint] " + " · ".join(parts)


def summary_table(result: dict) -> str:
    c = result["counts"]
    lines = ["", "outpaint run summary", "-" * 44]
    lines.append(f"{'manifest rows':<30}{result['rows']:>14,}")
    lines.append(f"{'processed this run':<30}{c['processed']:>14,}")
    lines.append(f"{'skipped (already done)':<30}{c['skipped']:>14,}")
    for k in (codes.OK, codes.REJECTED, codes.FAILED):
        lines.append(f"  {k:<28}{c['by_status'].get(k, 0):>14,}")
    for k, v in sorted(c["by_code"].items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"    {k:<26}{v:>14,}")
    lines.append(f"{'images written':<30}{result['images_written']:>14,}")
    lines.append(f"{'output megapixels':<30}{result['output_megapixels']:>14,.2f}")
    lines.append(f"{'wall time (s)':<30}{result['wall_s']:>14,.1f}")
    lines.append(f"{'images/s':<30}{result['images_per_s']:>14,.3f}")
    busy = result.get("model_busy")
    if busy and busy["fraction"] is not None:
        lines.append(f"{'model busy (loop / actor time)':<30}{100 * busy['fraction']:>13,.1f}%")
    lines.append("-" * 44)
    return "\n".join(lines)


def work_summary(batch: pa.Table) -> pa.Table:
    """Per block of work rows: how many need the model, and their distinct prompts."""
    gen = pc.sum(batch.column("generated").cast(pa.int64())).as_py() or 0
    prompts = pc.unique(batch.column("prompt").cast(pa.string()).fill_null("")).to_pylist()
    return pa.table({"generated": [gen], "prompts": [prompts]})


def gpus_per_actor(ray, cfg: Config) -> float:
    """``runtime.num_gpus_per_actor``, or by the backend: a GPU per FLUX actor wherever
    GPUs are or may come (a cluster's autoscaler adds GPU nodes only for actors that
    ask for one); none for CPU backends, ``model.device: cpu``, or a local Ray without GPUs."""
    if cfg.runtime.num_gpus_per_actor is not None:
        return cfg.runtime.num_gpus_per_actor
    if cfg.model.backend != "flux-fill" or cfg.model.device == "cpu":
        return 0.0
    on_cluster = bool(cfg.runtime.ray_address or os.environ.get("RAY_ADDRESS"))
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    return 1.0 if cfg.model.device == "cuda" or on_cluster or has_gpus else 0.0


def actor_pool(ray, cfg: Config, rows_to_generate: int):
    """The model actors: an autoscaling range, never more than the work can keep busy;
    ``actor_concurrency`` calls run at once in each (one in the GPU loop, the next
    preparing), with more batches' inputs already fetched (``actor_tasks_in_flight``)."""
    rt = cfg.runtime
    if (
        cfg.model.backend == "bfl-api"
    ):  # one process owns the API conversation: the account's task limit
        n = (
            cfg.model.api.max_active + 4
        )  # is held in it; a few more calls wait on a slot, their inputs ready
        return ray.data.ActorPoolStrategy(
            size=1,
            max_concurrent_calls_per_actor=n,
            enable_true_multi_threading=True,
            max_tasks_in_flight_per_actor=2 * n,
        )
    most = max(1, min(rt.num_actors, math.ceil(rows_to_generate / rt.batch_size)))
    # CUDA graph trees are recorded per thread: one caller thread, or they are recorded twice
    n = 1 if cfg.model.optimize.cuda_graphs else rt.actor_concurrency
    return ray.data.ActorPoolStrategy(
        min_size=min(rt.min_actors or most, most),
        max_size=most,
        max_concurrent_calls_per_actor=n,
        enable_true_multi_threading=n > 1,
        max_tasks_in_flight_per_actor=rt.actor_tasks_in_flight or 2 * n,
    )


class Work:
    """The work rows triage left: Ray blocks (materialized in the object store), or,
    for a manifest of one slice triaged in the driver process, that slice's tables."""

    def __init__(self, dataset=None, tables: list[pa.Table] | None = None):
        self.dataset, self.tables = dataset, tables or []
        self.counts = TriageCounts()
        self.rows = dataset.count() if dataset is not None else sum(t.num_rows for t in self.tables)

    def to_dataset(self, ray):
        return self.dataset if self.dataset is not None else ray.data.from_arrow(self.tables)

    def summary(self) -> tuple[int, list[str]]:
        """Rows that need the model, and their distinct prompts."""
        if self.dataset is not None:
            parts = self.dataset.map_batches(
                work_summary, batch_format="pyarrow", batch_size=None
            ).take_all()
        else:
            parts = [work_summary(t).to_pylist()[0] for t in self.tables]
        return sum(p["generated"] for p in parts), sorted({q for p in parts for q in p["prompts"]})


def triage(
    cfg: Config,
    store: OutputStore,
    run_id: str,
    index: manifest.ManifestIndex,
    prior,
    dups: dict | None = None,
) -> Work:
    """Phase 1: plan and resume-filter every row; the work rows come back (with the
    triage counts: how sources were identified)."""
    if dups is None:
        dups = duplicate_first_rows(index.ids, np.arange(index.rows, dtype=np.int64))
    if len(index.slices) <= 1:
        # one slice is one task's worth: run it here, and a run with nothing to do
        # never starts Ray (memory: one slice of at most plan_block_rows rows)
        stage = TriageStage(
            cfg, store, run_id, duplicates=dups, prior=prior, chunk_rows=cfg.runtime.plan_block_rows
        )
        work = Work(tables=[t for piece in index.slices for t in stage.chunks(piece)])
        work.counts = stage.counts
        return work
    # once, to every task, through the output store: the driver then drops its copy
    shared = store.share_prior(prior, run_id) if prior is not None and len(prior) else None
    prior = None
    ray = ensure_ray(cfg)
    stage = TriageStage(
        cfg,
        store,
        run_id,
        duplicates=ray.put(dups) if dups else None,
        prior=shared,
        chunk_rows=cfg.runtime.plan_block_rows,
        stats_to_store=True,
    )
    sl = slices_table(index.slices)
    ds = ray.data.from_arrow([sl.slice(i, 1) for i in range(sl.num_rows)])  # one task per slice
    work = Work(
        dataset=ds.map_batches(stage, batch_format="pyarrow", batch_size=None).materialize()
    )
    if shared is not None:
        store.fs.rm_file(shared)
    for part in store.read_jsons(f"{TRIAGE_STATS}/{run_id}-"):
        work.counts.add(part)
    return work


def check_api(cfg: Config, out, quiet: bool) -> float | None:
    """bfl-api: the key from ``model.api.key_env``, checked against GET /v1/credits before any
    work (exit 2 naming the key's variable, never its value); the balance, printed."""
    if cfg.model.backend != "bfl-api":
        return None
    from ..backends.bfl import ApiClient, ApiError, api_key

    try:
        balance = ApiClient(cfg.model.api, api_key(cfg.model.api)).credits()
    except ApiError as e:
        raise ConfigError(str(e)) from None
    except ConnectionError as e:
        raise ConfigError(f"model.api.endpoint: {e}") from None
    if not quiet:
        print(
            f"[outpaint] bfl-api {cfg.model.api.endpoint}: key from {cfg.model.api.key_env} accepted, balance "
            f"{balance:,.2f} credits; at most {cfg.model.api.max_active} tasks at once"
            + (
                f", budget {cfg.model.api.max_cost_credits:g} credits"
                if cfg.model.api.max_cost_credits
                else ""
            ),
            file=out,
            flush=True,
        )
    return balance


def finish_api(cfg: Config, tally: Tally) -> None:
    """bfl-api after the image stages: the balance left, and the journal entries of tasks
    that ended (their rows are written) removed; unfinished ones stay for the next run."""
    from ..backends.bfl import ApiClient, ApiError, Journal, api_key

    a = tally.api
    a.pop("active", None)
    try:
        a["credits_left"] = ApiClient(cfg.model.api, api_key(cfg.model.api)).credits()
    except (ApiError, ConnectionError):
        a["credits_left"] = None
    journal = Journal(cfg.output.uri, cfg.output.storage_options)
    a["journal_removed"] = journal.forget(tally.api_done)


def identity_line(counts: TriageCounts, prior_info: dict | None, mode: str) -> str | None:
    """One line: how this run learnt which sources changed and which outputs exist."""
    st = counts.identity
    parts = []
    if st.listed or st.prefixes:
        parts.append(
            f"{st.listed:,} sources identified from {st.listing_pages:,} listing requests over "
            f"{st.prefixes:,} prefix{'es' if st.prefixes != 1 else ''}"
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
    if prior_info and prior_info.get("existence"):
        parts.append(f"outputs: {prior_info['existence']}")
    if not parts:
        return None
    why = st.decisions.get("listing")
    return f"[outpaint] sources ({mode}): " + "; ".join(parts) + (f" — {why}" if why else "")


def images(ray, cfg: Config, store: OutputStore, run_id: str, work: Work):
    """Phase 2: the image stages over small blocks of the work rows."""
    ds = work.to_dataset(ray).repartition(target_num_rows_per_block=cfg.runtime.block_rows)
    task = dict(batch_format="pyarrow", batch_size=None)
    gen, prompts = work.summary() if needs_actor(cfg.model) else (0, [])
    # With a light backend every stage fuses into one task operator; Ray Data's
    # per-operator resource reservation then only keeps CPUs idle (measured: 2 CPUs
    # ran ~1.1 tasks at a time). Actor pipelines keep it, so no stage starves.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = gen > 0
    if gen == 0:  # light CPU backends, or nothing to generate: no model actor, no weights
        return ds.map_batches(ProcessStage(cfg, store, run_id), **task)
    ds = ds.map_batches(LoadStage(cfg), **task)
    ds = ds.map_batches(
        OutpaintStage,
        fn_constructor_args=(cfg, prompts if len(prompts) <= 1024 else None),
        # the API actor runs a call's rows concurrently (each waits on its task): a block a call
        batch_format="pyarrow",
        batch_size=None if cfg.model.backend == "bfl-api" else cfg.runtime.batch_size,
        compute=actor_pool(ray, cfg, gen),
        num_gpus=gpus_per_actor(ray, cfg),
        # the API actor waits on the network: a quarter CPU, the rest to the load and write tasks
        num_cpus=0.25 if cfg.model.backend == "bfl-api" else cfg.runtime.num_cpus_per_actor,
        # Its own environment (quiet model libraries) also makes the actor's remote args
        # differ from the CPU stages', so Ray never fuses decoding into it, GPU or not.
        runtime_env={"env_vars": MODEL_ACTOR_ENV},
        # A dead actor (killed, OOM) is restarted and its batch redone: Ray Data's
        # default (-1, -1); only another restart limit needs the loose remote args.
        **(
            {}
            if cfg.runtime.actor_restarts == -1
            else {"max_restarts": cfg.runtime.actor_restarts, "max_task_retries": -1}
        ),
    )
    return ds.map_batches(WriteStage(cfg, store, run_id), **task)


def run(cfg: Config, *, quiet: bool = False, out=sys.stderr, progress: str = "auto") -> dict:
    """Run the job; returns the run summary (also written to ``run.json``). ``progress``:
    auto (a bar on a terminal or in a notebook, else a line every
    ``runtime.progress_interval_s``), bar, line or none."""
    t_start = time.time()
    run_id = new_run_id()
    if cfg.runtime.ray_address and storage.is_local(cfg.output.uri):
        raise ConfigError(
            f"output.uri {cfg.output.uri} is a local path but runtime.ray_address points at a cluster: workers "
            "on other nodes would write to their own disks; use object storage (s3://, gs://, az://)"
        )
    versions = check_versions(out)
    store = OutputStore(cfg.output.uri, cfg.output.storage_options)
    index = manifest.scan(cfg, cfg.runtime.plan_block_rows)  # schema problems fail before any work
    manifest.check_reachable(index)
    store.check_writable()
    api_balance = check_api(
        cfg, out, quiet
    )  # bfl-api: a missing or refused key stops here, nothing submitted
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
    # the duplicate rule needs every id at once: found now, while the driver holds least;
    # after it, the driver keeps the ids' sorted fingerprints only (16 bytes a row)
    n_rows = index.rows
    dups = duplicate_first_rows(index.ids, np.arange(n_rows, dtype=np.int64))
    ids = sorted_keys(index.ids)
    index.ids = None
    # metadata from earlier runs: then compaction must pick the latest row per id
    earlier = bool(store.metadata_files())
    prior, prior_info = (
        store.prior(ids) if cfg.output.mode == "resume" and earlier else (None, None)
    )

    if not quiet:
        print(
            f"[outpaint] planning {n_rows:,} rows ({len(index.slices):,} slices)",
            file=out,
            flush=True,
        )
    box = [prior]  # handed over, not kept: triage may put it in Ray's object store and drop it here
    del prior
    work = triage(cfg, store, run_id, index, box.pop(), dups)
    del dups
    triage_counts = work.counts
    work_rows = work.rows
    tally = Tally(total=work_rows)
    if cfg.model.backend == "bfl-api":
        tally.api = {
            "submitted": 0,
            "ready": 0,
            "moderated": 0,
            "errors": 0,
            "cost_credits": 0.0,
            "active": 0,
            "credits_at_start": api_balance,
        }
    bulk = store.read_metadata_parts(f"{run_id}-t", ["status", "error_code"])
    if bulk is not None:
        codes.add_counts(tally.by_status, tally.by_code, bulk)
        tally.bulk = bulk.num_rows
    tally.skipped = n_rows - work_rows - tally.bulk
    if not quiet:
        st = tally.by_status
        print(
            f"[outpaint] planned in {time.time() - t_start:.1f}s: {work_rows:,} to do, "
            f"{tally.skipped:,} already done, {st.get(codes.REJECTED, 0):,} rejected, "
            f"{st.get(codes.FAILED, 0):,} failed",
            file=out,
            flush=True,
        )
    del bulk
    line = identity_line(work.counts, prior_info, cfg.input.identity)
    if line and not quiet:
        print(line, file=out, flush=True)

    pending: list[pa.Table] = []
    pending_rows, part = 0, 0
    shown = Progress("none" if quiet else progress, work_rows, out, cfg.runtime.progress_interval_s)

    def flush():
        nonlocal pending, pending_rows, part
        if pending_rows:
            store.write_metadata_part(
                pa.concat_tables(pending, promote_options="permissive"), f"{run_id}-{part:05d}"
            )
            part += 1
        pending, pending_rows = [], 0

    tally.started = time.time()
    if work_rows:
        ray = ensure_ray(cfg)
        for batch in images(ray, cfg, store, run_id, work).iter_batches(
            batch_format="pyarrow", batch_size=None
        ):
            if batch.num_rows:
                tally.add(batch)
                pending.append(batch)
                pending_rows += batch.num_rows
            if pending_rows >= cfg.output.metadata_part_rows:
                flush()
            shown.update(tally)
        flush()
        del work
    shown.close(tally)
    work_s = time.time() - tally.started if work_rows else 0.0
    if tally.api is not None:
        finish_api(cfg, tally)
    # A first run wrote every manifest row exactly once (bulk parts by manifest position,
    # work parts by the driver): nothing to deduplicate, so no catalogue-sized key table.
    # compaction only when this run added parts to earlier metadata (an all-done rerun adds none)
    wrote = tally.bulk > 0 or work_rows > 0
    rows_kept = store.compact(f"{run_id}-c") if earlier and wrote else store.count_metadata_rows()
    st, cd = store.count_rows(ids)
    wall = time.time() - t_start
    result = {
        "run_id": run_id,
        "started_at": t_start,
        "finished_at": time.time(),
        "wall_s": round(wall, 3),
        "rows": n_rows,
        "work_rows": work_rows,
        "manifest": {
            "by_status": {k: st.get(k, 0) for k in (codes.OK, codes.REJECTED, codes.FAILED)},
            "by_code": dict(sorted(cd.items())),
        },
        "counts": {
            "processed": tally.done + tally.bulk,
            "skipped": tally.skipped,
            "by_status": tally.by_status,
            "by_code": tally.by_code,
        },
        "model_busy": tally.busy(),
        "images_written": tally.images,
        "output_megapixels": round(tally.megapixels, 3),
        "images_per_s": round(tally.images / wall, 4) if wall > 0 else 0.0,
        "work_s": round(
            work_s, 3
        ),  # the image stages' time: images/s over the work, not the skipping
        "megapixels_per_s": round(tally.megapixels / wall, 4) if wall > 0 else 0.0,
        "metadata_rows": rows_kept,
        "config": dump(cfg),
        "versions": package_versions(),
        "submitted_from": versions,
        "sources": {**triage_counts.as_dict(), "outputs_check": prior_info},
        "api": tally.api,
    }
    store.write_json("run.json", result)
    try:
        # nothing changed since the last run (every row skipped, no metadata written): the
        # page it wrote still holds (a catalogue-sized rerun pays no thumbnail requests)
        if cfg.output.report and (
            wrote or not storage.retry(store.fs.exists, store.path("report.html"))
        ):
            from ..review import report

            report.write(store, cfg.input.storage_options, sample=cfg.output.report_sample)
    except Exception as e:  # noqa: BLE001 - the review page must never fail a finished run
        print(f"[outpaint] report.html not written: {type(e).__name__}: {e}", file=out)
    if not quiet:
        print(summary_table(result), file=out)
    return result
