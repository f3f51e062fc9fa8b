"""The model stage: the backend over batches of work rows, one generated canvas per row
and variant. Pasting the reference back happens after, in the write stage's CPU tasks.

Heavy setup (the backend, its weights) once per instance: as a Ray actor for backends
that need one, otherwise inside fused CPU tasks.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pyarrow as pa

from ..backends import BuildContext, Job, RowError, spec_of, warmup_shapes
from ..config import Config, ModelConfig
from ..review.gate import Gate, attempt_seed, distance_of
from .load import from_bytes, from_columns
from .records import (
    API_COUNTERS,
    API_FIELDS,
    BUSY_FIELDS,
    FILLED,
    PIXELS,
    QUALITY_FIELDS,
    Record,
    RowStage,
    elapsed_ms,
    todo,
)


def variant_seed(seed: int, k: int) -> int:
    """Variant k of a row: seed + k (variant 0 is the row's own seed)."""
    return (int(seed) + k) % (1 << 63)


class OutpaintStage(RowStage):
    """Run the backend in batches; what the backend says of each row (fill, API task,
    cost) goes on the row, failed or not."""

    ADDS = [
        ("out_pixels", pa.list_(PIXELS)),
        ("generate_ms", pa.float64()),
        ("fill_color", pa.string()),
        ("model", pa.string()),
        ("quality_attempts", pa.int64()),
        *QUALITY_FIELDS,
        *BUSY_FIELDS,
        *API_FIELDS,
        *API_COUNTERS,
    ]
    RESETS = (
        "generate_ms",
        "fill_color",
        "model",
        "quality_attempts",
        *dict(QUALITY_FIELDS),
        *dict(BUSY_FIELDS),
        *dict(API_FIELDS),
        *dict(API_COUNTERS),
    )

    def __init__(
        self,
        model: ModelConfig,
        context: BuildContext,
        color_intent: str,
        gate: Gate | None = None,
        backend=None,
        lazy: bool = False,
    ):
        """``gate``: the quality gate (more than one attempt: failing rows are retried);
        ``backend``: an already built one (benchmarks); default: built from ``model``,
        here (model actors: created only when rows need generating) or, ``lazy``, on the
        first row that needs it (fused CPU tasks, whose rows may need none)."""
        self.model_cfg = model
        self.gate = gate
        self.context = context
        self.color_intent = color_intent
        self.spec = spec_of(model)
        self._backend = backend
        self._lock = threading.Lock()  # concurrent calls of one actor build it once
        if backend is None and not lazy:
            self.backend  # noqa: B018 - load now: a model that cannot load fails the actor, not rows
        # the hosted API runs a call's rows concurrently, each on its own task: all at once
        self.batch_size = 1 << 30 if self.spec.one_conversation else context.batch_size
        self.model = self.spec.where(model)
        self.actor = f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def from_config(
        cls, cfg: Config, prompts: list[str] | None = None, backend=None, lazy: bool = False
    ):
        context = BuildContext(prompts, warmup_shapes(cfg), cfg.runtime.batch_size, cfg.output)
        return cls(
            cfg.model, context, cfg.output.color_intent, gate_of(cfg), backend=backend, lazy=lazy
        )

    def keeps(self, row: dict) -> bool:
        return row.get("route") in FILLED  # filled before this stage: its model and time stay

    def __getstate__(self):  # fused CPU tasks receive the stage pickled: no lock, no model
        return {**self.__dict__, "_lock": None, "_backend": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def backend(self):
        with self._lock:
            if self._backend is None:
                self._backend = self.spec.build(self.model_cfg, self.context)
        return self._backend

    def _job(self, rec: Record, k: int, attempt: int = 0) -> Job:
        row = rec.row
        attempt += row.get("attempt_base") or 0  # a redone row goes on from its last attempt
        key = (row.get("request_hash") or row["id"]) + (f"-{k}" if k else "")
        key += f"-a{attempt}" if attempt else ""
        return Job(
            ref=rec.ref.model,
            width=row["canvas_width"],
            height=row["canvas_height"],
            x0=row["visible_x0"],
            y0=row["visible_y0"],
            seed=attempt_seed(variant_seed(row["seed"], k), attempt),
            prompt=row["prompt"] or "",
            mode=row["mode"],
            steps=row["steps"],
            pad_left=row["pad_left"],
            pad_top=row["pad_top"],
            row_id=row["id"],
            key=key,
        )

    def _run(
        self, items: list[tuple[Record, int]], attempt: int = 0
    ) -> list[np.ndarray | Exception]:
        """Outpaint (record, variant) pairs in one backend call; isolate failures."""
        jobs = [self._job(rec, k, attempt) for rec, k in items]
        try:
            results: list = list(self.backend.outpaint(jobs))
        except Exception as e:  # noqa: BLE001 - isolate the failing rows below
            if len(items) > 1:  # one bad row must not fail its batch: retry singly
                return [r for item in items for r in self._run([item], attempt)]
            results = [e]
        for (rec, _), job, res in zip(items, jobs, results):
            rec.row["fill_color"] = job.fill_color
            for name, value in {**(job.info or {}), **(getattr(res, "info", None) or {})}.items():
                if value is not None or rec.row.get(name) is None:
                    rec.row[name] = value
        return results

    def process(self, records: list[Record]) -> None:
        """Sets ``out`` (one H x W x 3 sRGB array per variant; None where nothing is
        generated: the output is the reference), ``generate_ms``, ``fill_color``, ``model``."""
        work: list[tuple[Record, int]] = []
        for rec in todo(records):
            if rec.row.get("route") in FILLED:  # continued by the routing stage already
                continue
            n = rec.row.get("num_variants") or 1
            rec.row.update(model=self.model, generate_ms=0.0)
            rec.out = [None] * n
            if rec.row["generated"]:
                work += [(rec, k) for k in range(n)]
        for start in range(0, len(work), self.batch_size):
            items = work[start : start + self.batch_size]
            t0 = time.perf_counter()
            results = self._run(items)
            per_item = elapsed_ms(t0) / len(items)
            for (rec, k), res in zip(items, results):
                rec.row["generate_ms"] += per_item
                if rec.todo:
                    self._take(rec, k, res)
        for rec, _ in work:  # a redone row counts the attempts it had before
            rec.row["quality_attempts"] = (rec.row.get("attempt_base") or 0) + 1
        kept = self._retry(work)
        for i, (rec, k) in enumerate(work):  # the metadata's seed: what made the kept canvas
            attempt = (rec.row.get("attempt_base") or 0) + kept.get(i, 0)
            if k == 0 and attempt and rec.todo:
                rec.row["seed"] = attempt_seed(rec.row["seed"], attempt)
        if work:
            self._stamp([rec for rec, _ in work])

    def _judge(self, rec: Record, image: np.ndarray) -> dict | None:
        """The gate's score of one attempt, as the write stage would write it; None where
        none can be made (the write stage then says so on the row, as it does)."""
        try:
            return self.gate.judge(image, rec.ref, rec.box)
        except Exception:  # noqa: BLE001 - a score that cannot be made never fails the row
            return None

    def _retry(self, work: list[tuple[Record, int]]) -> dict[int, int]:
        """The gate: generated canvases that fail the score again with the next attempt's
        seed, the failing ones of a batch together (one backend call per batch, as the
        first pass), up to ``max_attempts``; the best attempt of each kept, and its score
        put on the row (``QUALITY_FIELDS``: the write stage does not score it again). A
        backend that cannot do better with another seed is not asked again (its failing
        rows are held). Returns the kept attempt of each item retried."""
        gate = self.gate
        if gate is None or gate.max_attempts <= 1 or not self.spec.reseedable:
            return {}
        best: dict[int, tuple[dict | None, np.ndarray, int]] = {}
        for i, (rec, k) in enumerate(work):
            if rec.todo and rec.out is not None and rec.out[k] is not None:
                best[i] = (self._judge(rec, rec.out[k]), rec.out[k], 0)
        pending = [i for i, (j, _, _) in best.items() if distance_of(j) > 1.0]
        for attempt in range(1, gate.max_attempts):
            for start in range(0, len(pending), self.batch_size):
                chunk = pending[start : start + self.batch_size]
                t0 = time.perf_counter()
                results = self._run([work[i] for i in chunk], attempt)
                per_item = elapsed_ms(t0) / len(chunk)
                for i, res in zip(chunk, results):
                    rec, _ = work[i]
                    rec.row["generate_ms"] += per_item
                    rec.row["quality_attempts"] = (rec.row.get("attempt_base") or 0) + attempt + 1
                    if isinstance(res, Exception):  # this attempt only: the row has a canvas
                        continue
                    judged = self._judge(rec, res)
                    if distance_of(judged) < distance_of(best[i][0]):
                        best[i] = (judged, res, attempt)
            pending = [i for i in pending if distance_of(best[i][0]) > 1.0]
            if not pending:
                break
        for i, (judged, image, _) in best.items():
            rec, k = work[i]
            rec.out[k] = image
            if k == 0 and judged is not None:  # the written image's score: variant 0's
                rec.row.update(judged)
        return {i: attempt for i, (_, _, attempt) in best.items()}

    def _take(self, rec: Record, k: int, res) -> None:
        """Variant ``k``'s result on its record, or the row's failure."""
        if isinstance(res, RowError):
            rec.fail(res.code, res.message)
        elif isinstance(res, Exception):
            message = (
                f"the {self.spec.name} backend failed on this row: {type(res).__name__}: {res}"
            )
            rec.fail("generation_failed", message)
        else:
            assert res.shape == (rec.row["canvas_height"], rec.row["canvas_width"], 3)
            rec.out[k] = res

    def _stamp(self, records: list[Record]) -> None:
        """What the backend's counters said when these rows finished."""
        if self.spec.hosted:  # the hosted API takes no seed: a row's seed is not what made it
            active, spent = self.backend.snapshot()
            for rec in records:
                rec.row.update(seed=None, api_active=active, api_spent=spent)
        busy = getattr(self._backend, "busy", None)
        if busy is not None:
            loop_s, wall_s = busy.snapshot()
            for rec in records:
                rec.row.update(model_actor=self.actor, model_loop_s=loop_s, model_wall_s=wall_s)

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = self.records(batch)
        for rec in records:
            rec.ref = from_columns(rec.row, self.color_intent)
            rec.out = filled_out(rec.row)
        self.process(records)
        for rec in records:
            rec.row["out_pixels"] = (
                None if rec.out is None else [o if o is None else o.tobytes() for o in rec.out]
            )
        return self.table(batch.schema, records)


def gate_of(cfg: Config) -> Gate:
    """The quality gate of a run's model stage."""
    return Gate.of(cfg.quality, cfg.output, spec_of(cfg.model).keeps_reference)


def filled_out(row: dict) -> list[np.ndarray] | None:
    """The canvases the backdrop stage made for a row (its ``out_pixels``), or None."""
    if row.get("route") not in FILLED or row.get("out_pixels") is None:
        return None
    shape = (row["canvas_height"], row["canvas_width"], 3)
    return [from_bytes(b, shape) for b in row["out_pixels"]]
