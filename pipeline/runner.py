"""``outpaint run``: where the stages run (Ray Data), kept apart from what they do.

Driver: validate, read the manifest (global row numbers, for the duplicate rule),
read the previous state, build the streaming dataset, then consume metadata rows
as they complete: progress, metadata parts, and finally compaction, run.json and
the summary. Workers: plan, load, outpaint and write images straight to storage.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import codes, manifest, storage
from .backends import needs_actor
from .config import Config, ConfigError, dump
from .outputs import OutputStore, new_run_id
from .plan import PlanStage, duplicate_first_rows
from .stages import SKIP, LoadStage, OutpaintStage, ProcessStage, ResumeFilter, WriteStage

log = logging.getLogger("outpaint")

VERSIONED = ("outpaint", "ray", "torch", "diffusers", "transformers", "pyarrow", "numpy", "pillow",
             "fsspec", "s3fs", "opencv-python-headless", "pydantic")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def ensure_ray(cfg: Config):
    import ray

    if not ray.is_initialized():
        common = dict(logging_level=logging.WARNING, log_to_driver=True)
        # inside a Ray job (outpaint submit) RAY_ADDRESS names the cluster it runs on
        address = cfg.runtime.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(address="local", num_cpus=cfg.runtime.num_cpus, include_dashboard=False,
                     object_store_memory=cfg.runtime.object_store_memory, **common)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.runtime.ray_progress_bars
    ctx.print_on_execution_start = cfg.runtime.ray_progress_bars
    return ray


def _fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class Tally:
    total: int
    started: float = field(default_factory=time.time)
    done: int = 0
    skipped: int = 0
    by_status: dict = field(default_factory=dict)
    by_code: dict = field(default_factory=dict)
    megapixels: float = 0.0
    images: int = 0
    actors: dict = field(default_factory=dict)  # model actor -> (loop s, wall s), latest

    def busy(self) -> dict | None:
        """Denoising-loop time over actor time, per model actor and overall (None: no GPU backend)."""
        if not self.actors:
            return None
        loop = sum(v[0] for v in self.actors.values())
        wall = sum(v[1] for v in self.actors.values())
        return {"fraction": round(loop / wall, 4) if wall > 0 else None, "loop_s": round(loop, 3),
                "actor_s": round(wall, 3),
                "actors": {k: round(v[0] / v[1], 4) if v[1] > 0 else None for k, v in sorted(self.actors.items())}}

    def add(self, batch: pa.Table) -> None:
        """Columnar: the driver sees every row of the run."""
        for total, col in ((self.by_status, "status"), (self.by_code, "error_code")):
            for k, v in codes.tally(batch.column(col)).items():
                total[k] = total.get(k, 0) + v
        written = pc.and_(pc.fill_null(pc.equal(batch.column("status"), codes.OK), False),
                          pc.is_valid(batch.column("output_uri")))
        area = pc.multiply(batch.column("canvas_width").cast(pa.float64()),
                           batch.column("canvas_height").cast(pa.float64()))
        self.images += pc.sum(written.cast(pa.int64())).as_py() or 0
        self.megapixels += (pc.sum(pc.filter(area, written)).as_py() or 0.0) / 1e6
        self.done += batch.num_rows
        if "model_actor" in batch.column_names:  # GPU backends only: the rows a model generated
            gen = batch.filter(pc.is_valid(batch.column("model_actor")))
            for a, lp, wl in zip(*(gen.column(c).to_pylist() for c in ("model_actor", "model_loop_s",
                                                                        "model_wall_s"))):
                if wl >= self.actors.get(a, (0.0, -1.0))[1]:
                    self.actors[a] = (lp, wl)

    def line(self) -> str:
        el = max(time.time() - self.started, 1e-9)
        finished = self.done + self.skipped
        rate = self.done / el
        eta = (self.total - finished) / rate if rate > 0 else float("inf")
        pct = 100.0 * finished / max(self.total, 1)
        parts = [f"{finished:,}/{self.total:,} rows ({pct:.1f}%)"]
        parts += [f"{k} {v:,}" for k, v in sorted(self.by_status.items())]
        if self.skipped:
            parts.append(f"skipped {self.skipped:,}")
        parts += [f"{rate:.2f} rows/s", f"ETA {_fmt_duration(eta) if finished < self.total else '0m00s'}"]
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


def distinct_prompts(cfg: Config, table: pa.Table, limit: int = 1024) -> list[str] | None:
    """Every prompt the run can meet (so actors embed them once and may drop the text
    encoders); None when there are too many to embed up front."""
    if "prompt" not in table.column_names:
        return [cfg.defaults.prompt]
    col = table.column("prompt").cast(pa.string()).fill_null(cfg.defaults.prompt)
    uniq = pc.unique(col).to_pylist()
    return uniq if len(uniq) <= limit else None


def actor_pool(ray, cfg: Config):
    """The model actors: an autoscaling range; ``actor_concurrency`` calls run at once
    in each (one in the GPU loop, the next preparing), with more batches' inputs
    already fetched to the actor (``actor_tasks_in_flight``) so the GPU never waits."""
    rt = cfg.runtime
    # CUDA graph trees are recorded per thread: one caller thread, or they are recorded twice
    n = 1 if cfg.model.optimize.cuda_graphs else rt.actor_concurrency
    return ray.data.ActorPoolStrategy(
        min_size=rt.min_actors or rt.num_actors, max_size=rt.num_actors,
        max_concurrent_calls_per_actor=n, enable_true_multi_threading=n > 1,
        max_tasks_in_flight_per_actor=rt.actor_tasks_in_flight or 2 * n)


def _blocks(table: pa.Table, rows: int) -> list[pa.Table]:
    return [table.slice(s, rows) for s in range(0, table.num_rows, rows)] or [table]


def run(cfg: Config, *, quiet: bool = False, out=sys.stderr) -> dict:
    """Run the job; returns the run summary (also written to ``run.json``)."""
    t_start = time.time()
    run_id = new_run_id()
    if cfg.runtime.ray_address and storage.is_local(cfg.output.uri):
        raise ConfigError(
            f"output.uri {cfg.output.uri} is a local path but runtime.ray_address points at a cluster: workers "
            "on other nodes would write to their own disks; use object storage (s3://, gs://, az://)")
    store = OutputStore(cfg.output.uri, cfg.output.storage_options)
    manifest.read_schema(cfg)  # schema problems fail before any work
    store.check_writable()
    if cfg.output.mode == "error_if_exists" and store.has_outputs():
        raise ConfigError(f"output.uri {cfg.output.uri} already holds outputs and output.mode is error_if_exists; "
                          "use resume (skip finished rows) or overwrite, or another output.uri")
    table = manifest.read(cfg)
    done = store.done_keys(table.column("id")) if cfg.output.mode == "resume" else pa.array([], pa.string())
    dups = duplicate_first_rows(table.column("id").cast(pa.string()), table.column(manifest.ROW_INDEX))

    ray = ensure_ray(cfg)
    # With a light backend every stage fuses into one task operator; Ray Data's
    # per-operator resource reservation then only keeps CPUs idle (measured: 2 CPUs
    # ran ~1.1 tasks at a time). Actor pipelines keep it, so no stage starves.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = needs_actor(cfg.model)
    ds = ray.data.from_arrow(_blocks(table, cfg.runtime.block_rows))
    task = dict(batch_format="pyarrow", batch_size=None)
    ds = ds.map_batches(PlanStage(cfg, dups, identify=True), **task)
    ds = ds.map_batches(ResumeFilter(done), **task)
    if needs_actor(cfg.model):
        ds = ds.map_batches(LoadStage(cfg), **task)
        ds = ds.map_batches(
            OutpaintStage, fn_constructor_args=(cfg, distinct_prompts(cfg, table)), batch_format="pyarrow",
            batch_size=cfg.runtime.batch_size,
            compute=actor_pool(ray, cfg),
            num_gpus=cfg.runtime.num_gpus_per_actor, num_cpus=cfg.runtime.num_cpus_per_actor,
            # A dead actor (killed, OOM) is restarted and its batch redone. Stating these
            # (Ray's defaults) also makes the actor's remote args differ from the CPU
            # stages', so Ray never fuses decoding into the model actor, GPU or not.
            max_restarts=cfg.runtime.actor_restarts, max_task_retries=-1,
        )
        ds = ds.map_batches(WriteStage(cfg, store, run_id), **task)
    else:  # light CPU backends: one fused task, pixels stay arrays in the worker
        ds = ds.map_batches(ProcessStage(cfg, store, run_id), **task)

    tally = Tally(total=table.num_rows, started=t_start)
    pending: list[pa.Table] = []
    pending_rows, part = 0, 0
    last_print = 0.0

    def flush():
        nonlocal pending, pending_rows, part
        if pending_rows:
            store.write_metadata_part(pa.concat_tables(pending, promote_options="permissive"),
                                      f"{run_id}-{part:05d}")
            part += 1
        pending, pending_rows = [], 0

    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        skip = np.asarray(batch.column(SKIP).to_numpy(zero_copy_only=False), dtype=bool)
        tally.skipped += int(skip.sum())
        batch = batch.filter(pa.array(~skip)).drop_columns([SKIP])
        if batch.num_rows:
            tally.add(batch)
            pending.append(batch)
            pending_rows += batch.num_rows
        if pending_rows >= cfg.output.metadata_part_rows:
            flush()
        now = time.time()
        if not quiet and now - last_print >= cfg.runtime.progress_interval_s:
            print(tally.line(), file=out, flush=True)
            last_print = now
    flush()
    rows_kept = store.compact(f"{run_id}-c")
    final = store.read_metadata(["id", "status", "error_code"])
    wall = time.time() - t_start

    in_manifest = final.filter(pc.is_in(final.column("id"), value_set=table.column("id").cast(pa.string())))
    st, cd = codes.tally(in_manifest.column("status")), codes.tally(in_manifest.column("error_code"))
    result = {
        "run_id": run_id,
        "started_at": t_start,
        "finished_at": time.time(),
        "wall_s": round(wall, 3),
        "rows": table.num_rows,
        "manifest": {"by_status": {k: st.get(k, 0) for k in (codes.OK, codes.REJECTED, codes.FAILED)},
                     "by_code": dict(sorted(cd.items()))},
        "counts": {"processed": tally.done, "skipped": tally.skipped,
                   "by_status": tally.by_status, "by_code": tally.by_code},
        "model_busy": tally.busy(),
        "images_written": tally.images,
        "output_megapixels": round(tally.megapixels, 3),
        "images_per_s": round(tally.images / wall, 4) if wall > 0 else 0.0,
        "megapixels_per_s": round(tally.megapixels / wall, 4) if wall > 0 else 0.0,
        "metadata_rows": rows_kept,
        "config": dump(cfg),
        "versions": package_versions(),
    }
    store.write_json("run.json", result)
    try:
        if cfg.output.report:
            from . import report

            report.write(store, cfg.input.storage_options, sample=cfg.output.report_sample)
    except Exception as e:  # noqa: BLE001 - the review page must never fail a finished run
        print(f"[outpaint] report.html not written: {type(e).__name__}: {e}", file=out)
    if not quiet:
        if time.time() - last_print > 0.5:
            print(tally.line(), file=out)
        print(summary_table(result), file=out)
    return result
