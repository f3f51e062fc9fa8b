"""What a run counts while it goes (the driver's only running state besides buffers):
rows done per status and code, images and megapixels written, how busy the model
actors were, and for the hosted API its tasks and credits. Columnar: a block of
metadata rows at a time."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ..common import codes


def _sum(mask) -> int:
    return pc.sum(mask.cast(pa.int64())).as_py() or 0


def _is(column, value) -> pa.Array:
    return pc.fill_null(pc.equal(column, value), False)


@dataclass
class ApiCounts:
    """The hosted API over this run's rows: tasks, outcomes, credits."""

    credits_at_start: float | None = None
    submitted: int = 0
    ready: int = 0
    moderated: int = 0
    errors: int = 0
    cost_credits: float = 0.0
    active: int = 0
    ended: list[str] = field(default_factory=list)  # requests whose task ended (journal clean-up)

    def add(self, batch: pa.Table) -> None:
        task = pc.is_valid(batch.column("api_task_id"))
        ok = _is(batch.column("status"), codes.OK)
        code = batch.column("error_code")
        self.submitted += _sum(task)
        self.ready += _sum(pc.and_(task, ok))
        self.moderated += _sum(_is(code, "moderated"))
        self.errors += _sum(_is(code, "generation_failed"))
        spent = pc.sum(pc.filter(batch.column("cost_credits"), ok)).as_py() or 0.0
        self.cost_credits = round(self.cost_credits + spent, 4)
        active = batch.column("api_active").drop_null()
        if len(active):
            self.active = active[-1].as_py()
        final = pc.fill_null(
            pc.is_in(code, value_set=pa.array(["moderated", "invalid_request"])), False
        )
        ended = pc.filter(batch.column("request_hash"), pc.or_(ok, final))
        self.ended += [h for h in ended.to_pylist() if h]

    def as_dict(self) -> dict:
        """``run.json``'s ``api``."""
        return {
            "submitted": self.submitted,
            "ready": self.ready,
            "moderated": self.moderated,
            "errors": self.errors,
            "cost_credits": self.cost_credits,
            "credits_at_start": self.credits_at_start,
        }


@dataclass
class RunCounts:
    """``total`` is the work rows (what progress and ETA are over); rows finished in bulk
    by triage are counted up front (``bulk``), not waited for."""

    total: int
    started: float = field(default_factory=time.time)
    done: int = 0
    skipped: int = 0
    bulk: int = 0
    rows: codes.Counts = field(default_factory=codes.Counts)  # per status and code, this run's
    megapixels: float = 0.0
    images: int = 0
    actors: dict = field(default_factory=dict)  # model actor -> (loop s, wall s), latest
    api: ApiCounts | None = None
    routes: dict = field(default_factory=dict)  # ok generated rows per route: backdrop, model
    retries: int = 0  # the quality gate's extra model calls (attempts beyond the first)
    scene_tried: int = 0  # route: cascade: written rows the scene fill tried (kept or not)

    def add(self, batch: pa.Table) -> None:
        """A block of work rows' metadata."""
        self.rows.add(batch)
        written = pc.and_(
            _is(batch.column("status"), codes.OK), pc.is_valid(batch.column("output_uri"))
        )
        width = batch.column("canvas_width").cast(pa.float64())
        area = pc.multiply(width, batch.column("canvas_height").cast(pa.float64()))
        self.images += _sum(written)
        self.megapixels += (pc.sum(pc.filter(area, written)).as_py() or 0.0) / 1e6
        self.done += batch.num_rows
        if "route" in batch.column_names:
            self._add_routes(pc.filter(batch.column("route"), written))
        if "scene_distance" in batch.column_names:
            self.scene_tried += _sum(
                pc.is_valid(pc.filter(batch.column("scene_distance"), written))
            )
        if "quality_attempts" in batch.column_names:
            attempts = pc.sum(batch.column("quality_attempts")).as_py() or 0
            self.retries += attempts - _sum(pc.is_valid(batch.column("quality_attempts")))
        if self.api is not None and "api_task_id" in batch.column_names:
            self.api.add(batch)
        if "model_actor" in batch.column_names:  # GPU backends only: the rows a model generated
            self._add_actors(batch.filter(pc.is_valid(batch.column("model_actor"))))

    def cascade(self) -> dict:
        """``route: cascade``'s steps: rows the scene fill tried, kept and handed on, and
        the model calls saved (rows made by a fill: against ``route: model``; by the scene
        fill alone: against ``route: auto``, which has the backdrop fill too)."""
        kept = self.routes.get("scene", 0)
        return {
            "scene_tried": self.scene_tried,
            "scene_kept": kept,
            "escalated": self.scene_tried - kept,
            "model_rows_saved_against_auto": kept,
            "model_rows_saved_against_model": kept + self.routes.get("backdrop", 0),
        }

    def _add_routes(self, routes: pa.Array) -> None:
        for item in pc.value_counts(routes.drop_null()).to_pylist():
            self.routes[item["values"]] = self.routes.get(item["values"], 0) + item["counts"]

    def _add_actors(self, generated: pa.Table) -> None:
        columns = [
            generated.column(c).to_pylist() for c in ("model_actor", "model_loop_s", "model_wall_s")
        ]
        for actor, loop_s, wall_s in zip(*columns):
            if wall_s >= self.actors.get(actor, (0.0, -1.0))[1]:
                self.actors[actor] = (loop_s, wall_s)

    def busy(self) -> dict | None:
        """Denoising-loop time over actor time, per model actor and overall (None: no GPU backend)."""
        if not self.actors:
            return None
        loop = sum(v[0] for v in self.actors.values())
        wall = sum(v[1] for v in self.actors.values())
        per_actor = {
            k: round(v[0] / v[1], 4) if v[1] > 0 else None for k, v in sorted(self.actors.items())
        }
        fraction = round(loop / wall, 4) if wall > 0 else None
        return {
            "fraction": fraction,
            "loop_s": round(loop, 3),
            "actor_s": round(wall, 3),
            "actors": per_actor,
        }

    def _parts(self) -> list[str]:
        parts = [f"{k} {v:,}" for k, v in sorted(self.rows.by_status.items())]
        if self.rows.by_review.get("held"):
            parts.append(f"held {self.rows.by_review['held']:,}")
        if self.retries:
            parts.append(f"retries {self.retries:,}")
        if self.skipped:
            parts.append(f"skipped {self.skipped:,}")
        if self.routes:
            parts.append(
                "route: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.routes.items()))
            )
        if self.api is not None:
            a = self.api
            parts.append(
                f"API: {a.active} active, {a.ready:,} ready, {a.moderated:,} moderated, "
                f"{a.cost_credits:,.2f} credits"
            )
        return parts

    def postfix(self) -> str:
        """What a progress bar shows beside its count and rate."""
        return " · ".join(self._parts())

    def line(self) -> str:
        """The progress line of a log."""
        elapsed = max(time.time() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / max(self.total, 1)
        left = _duration(eta) if self.done < self.total else "0m00s"
        parts = [f"{self.done:,}/{self.total:,} work rows ({pct:.1f}%)", *self._parts()]
        parts += [f"{rate:.2f} rows/s", f"ETA {left}"]
        return "[outpaint] " + " · ".join(parts)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def summary_table(result: dict) -> str:
    """The table a run prints at its end."""
    c = result["counts"]
    lines = ["", "outpaint run summary", "-" * 44]
    lines.append(f"{'manifest rows':<30}{result['rows']:>14,}")
    lines.append(f"{'processed this run':<30}{c['processed']:>14,}")
    lines.append(f"{'skipped (already done)':<30}{c['skipped']:>14,}")
    for k in (codes.OK, codes.REJECTED, codes.FAILED):
        lines.append(f"  {k:<28}{c['by_status'].get(k, 0):>14,}")
    for k, v in sorted(c["by_code"].items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"    {k:<26}{v:>14,}")
    for route, n in sorted(c.get("by_route", {}).items()):
        lines.append(f"  {'generated by ' + route:<28}{n:>14,}")
    for verdict, n in sorted(c.get("by_review", {}).items()):
        lines.append(f"  {'quality ' + verdict:<28}{n:>14,}")
    if c.get("retries"):
        lines.append(f"  {'quality retries':<28}{c['retries']:>14,}")
    lines.append(f"{'images written':<30}{result['images_written']:>14,}")
    lines.append(f"{'output megapixels':<30}{result['output_megapixels']:>14,.2f}")
    lines.append(f"{'wall time (s)':<30}{result['wall_s']:>14,.1f}")
    lines.append(f"{'images/s':<30}{result['images_per_s']:>14,.3f}")
    busy = result.get("model_busy")
    if busy and busy["fraction"] is not None:
        lines.append(f"{'model busy (loop / actor time)':<30}{100 * busy['fraction']:>13,.1f}%")
    lines.append("-" * 44)
    return "\n".join(lines)
