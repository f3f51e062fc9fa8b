"""The routing stage: after loading, before the model. A generated row whose sides border
a plain studio backdrop (``backdrop.analyse``) is continued here, in the CPU task, by the
backdrop fill; every other row goes on to the backend unchanged (docs/product-photos.md).

``model.route``: ``auto`` judges each row (or trusts planning's word, from the manifest's
analysis); ``backdrop`` fills every row and fails the ones that are not plain; ``model``
skips this stage altogether; ``cascade`` is ``auto``, then a row whose border band is a
texture (``scene.border_variation`` at most ``model.scene.max_variation``) without long
straight lines (``scene.border_lines`` at most ``model.scene.max_lines``) is continued by
the scene fill and judged here as the write stage will write it: kept when it passes the
quality score (route ``scene``, no model), otherwise on to the backend (route ``model``,
its try's ``scene_distance`` recorded).
"""

from __future__ import annotations

import math
import time

import pyarrow as pa

from ..backends.scene import border_lines, border_variation, scene_fill
from ..common.precision import stored
from ..config import Config, ModelConfig, SizingConfig
from ..io import backdrop
from ..review.gate import Gate, attempt_seed
from .generate import gate_of, variant_seed
from .load import from_columns
from .records import (
    BACKDROP,
    FILLED,
    MODEL,
    PIXELS,
    QUALITY_FIELDS,
    SCENE,
    Record,
    RowStage,
    elapsed_ms,
    todo,
)

CASCADE = "cascade"

ALL_SIDES = backdrop.from_letters(backdrop.SIDE_LETTERS)


class BackdropStage(RowStage):
    """Judge the border the model would continue; fill the plain ones (and, cascading,
    the textured ones the scene fill continues well)."""

    ADDS = [
        ("backdrop_residual", pa.float64()),
        ("backdrop_noise", pa.float64()),
        ("border_variation", pa.float64()),
        ("border_lines", pa.float64()),
        ("scene_distance", pa.float64()),
        ("out_pixels", pa.list_(PIXELS)),
        ("generate_ms", pa.float64()),
        ("model", pa.string()),
        ("quality_attempts", pa.int64()),
        *QUALITY_FIELDS,
    ]
    RESETS = (
        "backdrop_residual",
        "backdrop_noise",
        "border_variation",
        "border_lines",
        "scene_distance",
        "out_pixels",
        "generate_ms",
        "model",
        "quality_attempts",
        *dict(QUALITY_FIELDS),
    )

    def __init__(
        self,
        model: ModelConfig,
        sizing: SizingConfig,
        color_intent: str,
        preset: str | None = None,
        gate: Gate | None = None,
    ):
        """``gate``: how the write stage will make the canvas it writes, and the score's
        thresholds (``route: cascade`` judges its scene fills with it)."""
        self.route = model.route
        self.max_variation = model.scene.max_variation
        self.max_lines = model.scene.max_lines
        self.gate = gate
        self.tol = backdrop.Tolerances.of(model.backdrop)
        self.color = model.backdrop.color
        self.max_distance = model.backdrop.max_color_distance
        self.sizing = sizing
        self.color_intent = color_intent
        self.preset = preset

    @classmethod
    def from_config(cls, cfg: Config) -> BackdropStage:
        return cls(cfg.model, cfg.sizing, cfg.output.color_intent, cfg.preset, gate_of(cfg))

    @property
    def active(self) -> bool:
        return self.route != MODEL

    def _forced(self, row: dict) -> bool:
        """The row must be filled: the config says so, or planning routed it here."""
        return self.route == BACKDROP or row.get("route") == BACKDROP

    def _fail(self, rec: Record, reason: str) -> None:
        if self.preset:
            rec.fail("preset_not_met", f"preset {self.preset}: {reason}")
        else:
            rec.fail(
                "backdrop_not_plain", f"{reason}; model.route: auto sends such rows to the model"
            )

    def judge(self, rec: Record) -> backdrop.Backdrop | None:
        """The row's backdrop when it is to be filled; else None (on to the model, or failed)."""
        row = rec.row
        if rec.ref.alpha is not None:  # transparent borders: not a backdrop this stage can continue
            if self._forced(row):
                self._fail(rec, "the source has transparency; set output.alpha: flatten to fill it")
            else:
                row["route"] = MODEL
            return None
        sides = rec.box.sides(row["canvas_width"], row["canvas_height"])
        found = backdrop.analyse(rec.ref.model, sides, self.tol)
        row.update(
            backdrop_kind=found.kind,
            backdrop_residual=stored("backdrop_residual", found.residual),
            backdrop_noise=stored("backdrop_noise", found.noise),
            backdrop_color=found.hex if found.plain else None,
        )
        problem = self._problem(rec, found, sides)
        if problem is None:
            row["route"] = BACKDROP
            return found
        if self._forced(row):
            self._fail(rec, problem)
        else:
            row["route"] = MODEL
        return None

    def _problem(self, rec: Record, found: backdrop.Backdrop, sides) -> str | None:
        """Why the row cannot be filled, or None."""
        if not found.plain:
            which = ", ".join(n for n, on in zip(("left", "top", "right", "bottom"), sides) if on)
            return (
                f"the border to continue ({which}) is not a plain backdrop (residual "
                f"{found.residual:.1f} levels over model.backdrop's tolerances, or something "
                "stands at the frame)"
            )
        if self.color is not None and self.max_distance is not None:
            far = found.distance(self.color)
            if far > self.max_distance:
                return (
                    f"the backdrop ({found.hex}) is {far:.0f} levels from "
                    f"{'#{:02x}{:02x}{:02x}'.format(*self.color)}, over "
                    f"model.backdrop.max_color_distance = {self.max_distance:g}"
                )
        return self._fill_short(rec, found)

    def _fill_short(self, rec: Record, found: backdrop.Backdrop) -> str | None:
        """A row placed without its box where the fill is required: measured now."""
        row = rec.row
        if not (self.sizing.require_subject_fill and row.get("placement_note")):
            return None
        box = backdrop.subject_box(rec.ref.model, found, self.tol)
        short_side = min(row["canvas_width"], row["canvas_height"])
        want = self.sizing.subject_fill * short_side
        span = max(box.width, box.height) if box else 0
        if span >= want - 1:
            return None
        return (
            f"the product spans {span / short_side:.0%} of the canvas's shorter side, under "
            f"sizing.subject_fill = {self.sizing.subject_fill:.0%}; give it subject columns "
            "(outpaint manifest --analyze) so it is placed by its box"
        )

    def fill(self, rec: Record, found: backdrop.Backdrop) -> None:
        row = rec.row
        t0 = time.perf_counter()
        n = row.get("num_variants") or 1
        attempt = row.get("attempt_base") or 0  # a rejected row redone: its next grain
        if attempt:
            row["seed"] = attempt_seed(row["seed"], attempt)
        row["quality_attempts"] = attempt + 1
        rec.out = [
            backdrop.fill(
                rec.ref.model,
                found,
                row["canvas_width"],
                row["canvas_height"],
                rec.box,
                variant_seed(row["seed"], k),
                self.color,
            )
            for k in range(n)
        ]
        row.update(model=BACKDROP, steps=0, generate_ms=elapsed_ms(t0))

    @property
    def wants_color(self) -> bool:
        """A backdrop colour is required of every row (a preset's pure white)."""
        return self.color is not None and self.max_distance is not None

    def check_whole(self, rec: Record) -> None:
        """A row with nothing to generate still shows its backdrop: under a required colour,
        its whole border is judged (an off-white photo filling the canvas misses it too)."""
        found = backdrop.analyse(rec.ref.model, ALL_SIDES, self.tol)
        rec.row.update(backdrop_kind=found.kind, backdrop_color=found.hex if found.plain else None)
        problem = self._problem(rec, found, ALL_SIDES)
        if problem is not None:
            self._fail(rec, problem)

    def process(self, records: list[Record]) -> None:
        """Routes each generated row still undecided or routed here; fills the plain ones."""
        if not self.active:
            return
        for rec in todo(records):
            planned_model = rec.row.get("route") == MODEL
            if not rec.row["generated"]:
                if self.wants_color and rec.ref.alpha is None and not planned_model:
                    self.check_whole(rec)
                continue
            found = None if planned_model else self.judge(rec)
            if found is not None:
                self.fill(rec, found)
            elif self.cascades and rec.todo and rec.ref.alpha is None:
                self.scene(rec)

    @property
    def cascades(self) -> bool:
        return self.route == CASCADE and self.gate is not None and self.max_variation > 0

    def scene(self, rec: Record) -> None:
        """The cascade's second step: a row whose border band is a texture is continued by
        the scene fill and kept when its canvas, as it will be written, passes the score."""
        row = rec.row
        W, H = row["canvas_width"], row["canvas_height"]
        box = rec.box
        variation = border_variation(rec.ref.model, box.sides(W, H))
        if math.isfinite(variation):
            row["border_variation"] = stored("border_variation", variation)
        if not variation <= self.max_variation:
            return  # not a texture: the backend's
        lines = border_lines(rec.ref.model, box.sides(W, H))
        row["border_lines"] = stored("border_lines", lines)
        if lines > self.max_lines:
            return  # straight lines the scene fill would break: the backend's
        t0 = time.perf_counter()
        attempt = row.get("attempt_base") or 0  # a rejected row redone: its next sources
        seed = attempt_seed(row["seed"], attempt) if attempt else row["seed"]
        n = row.get("num_variants") or 1
        x0, y0 = box.x0, box.y0
        outs = [scene_fill(rec.ref.model, W, H, x0, y0, variant_seed(seed, k)) for k in range(n)]
        try:
            judged = self.gate.judge(outs[0], rec.ref, box, filled=True)
        except Exception:  # noqa: BLE001 - no score, no trust: the backend makes the row
            return
        row["scene_distance"] = judged["quality_distance"]
        if not judged["quality_pass"]:
            return  # escalated: the backend makes the row
        row.update(judged)
        row.update(route=SCENE, model=SCENE, seed=seed, steps=0, quality_attempts=attempt + 1)
        row["generate_ms"] = elapsed_ms(t0)
        rec.out = outs

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = self.records(batch)
        for rec in records:
            rec.ref = from_columns(rec.row, self.color_intent)
        self.process(records)
        for rec in records:
            filled = rec.row.get("route") in FILLED and rec.out is not None
            rec.row["out_pixels"] = [o.tobytes() for o in rec.out] if filled else None
        return self.table(batch.schema, records)
