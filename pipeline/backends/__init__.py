"""Outpainting backends behind one small interface.

What identifies a backend's output for resume (name, version, settings) is derived
from the config in ``pipeline.plan.hashing``, so the driver never has to build one.

A backend takes a batch of canvases (reference placed, unknown area arbitrary),
masks (True = generate), per-row seeds and prompts, and returns one RGB image per
canvas, same size. Backends never see Arrow or Ray: stages do that.

Holds ``classical`` (CPU default), ``solid`` (plain padding), ``flux`` (FLUX.1 Fill on
GPU actors) with ``accel`` (its speed settings) and ``testmodel`` (a tiny random-weight
checkpoint), ``bfl`` (the hosted FLUX Outpainting API), and ``canvas`` (the reference
placed on its canvas, fill colours).

May import: the top-level shared modules and ``io``. Never ``plan``, ``review`` or ``run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .canvas import compose


@dataclass
class Job:
    """One row's outpainting request, as a backend sees it."""

    ref: np.ndarray  # the visible reference, vh x vw x 3 uint8 (scaled, cropped)
    width: int  # canvas W x H
    height: int
    x0: int  # reference top-left on the canvas
    y0: int
    seed: int
    prompt: str = ""
    mode: str = "high"  # high | fast
    steps: int = 0
    pad_left: int = 0  # fast mode: canvas offset inside the 16-aligned canvas
    pad_top: int = 0
    fill_color: str | None = None  # set by the backend: what the unknown area held
    key: str | None = None  # the row's request (hash + variant): what a backend journals by
    row_id: str | None = None
    info: dict | None = None  # set by the backend: extra metadata of this row (API task id, cost)

    def canvas(self, fill=(0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
        """(canvas H x W x 3 with the reference placed, mask True = to generate)."""
        return compose(self.ref, self.width, self.height, self.x0, self.y0, fill)


class RowError(Exception):
    """A backend's verdict on one row, with the row's code (``generation_failed``,
    ``moderated``, ``invalid_request``...) and what to record in its metadata."""

    def __init__(self, code: str, message: str, info: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.info = code, message, info or {}


class Backend(Protocol):
    name: str
    # Where it should run: False -> plain Ray tasks fused with the CPU stages (no
    # pixels through the object store); True -> a long-lived actor pool (weights).
    needs_actor: bool

    def outpaint(self, jobs: Sequence[Job]) -> list[np.ndarray]:
        """Images H x W x 3 uint8, one per job (any order of shapes and modes)."""


def make_backend(
    model_cfg,
    prompts: Sequence[str] | None = None,
    warmup: Sequence[tuple[int, int, str]] = (),
    batch_size: int = 1,
    output=None,
) -> Backend:
    """``warmup``/``batch_size``: canvases a GPU backend compiles before its first batch;
    ``output``: the run's output config (the API backend journals its tasks there)."""
    name = model_cfg.backend
    if name == "bfl-api":
        from .bfl import BflApiBackend, Journal

        journal = Journal(output.uri, output.storage_options) if output is not None else None
        return BflApiBackend(model_cfg, journal=journal)
    if name == "solid":
        from .solid import SolidBackend

        return SolidBackend(model_cfg)
    if name == "classical":
        from .classical import ClassicalBackend

        return ClassicalBackend(model_cfg)
    if name == "flux-fill":
        from .flux import FluxFillBackend

        return FluxFillBackend(model_cfg, prompts=prompts, warmup=warmup, batch_size=batch_size)
    raise ValueError(f"unknown model.backend {name!r}")


ACTOR_BACKENDS = ("flux-fill", "bfl-api")


def needs_actor(model_cfg) -> bool:
    """Without building the backend (the driver must not load weights): flux-fill's
    weights; bfl-api's one conversation with the API (the global task limit)."""
    return model_cfg.backend in ACTOR_BACKENDS


def keeps_reference(model_cfg) -> bool:
    """The backend returns the reference itself inside V (only the unknown area is
    computed), so a feather blend there would be the identity and is skipped."""
    return model_cfg.backend in ("classical", "solid")


def warmup_shapes(cfg) -> list[tuple[int, int, str]]:
    """Canvases worth compiling at actor start: ``model.optimize.warmup`` plus the
    defaults' fixed width x height (the usual catalogue job: every SKU to one size)."""
    shapes = cfg.model.optimize.shapes()
    if cfg.defaults.width and cfg.defaults.height:
        shapes.append((cfg.defaults.width, cfg.defaults.height))
    return [(w, h, cfg.defaults.mode) for w, h in dict.fromkeys(shapes)]
