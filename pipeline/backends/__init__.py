"""Outpainting backends behind one small interface.

What identifies a backend's output for resume (name, version, settings) is derived
from the config in ``pipeline.plan.hashing``, so the driver never has to build one.

A backend takes a batch of canvases (reference placed, unknown area arbitrary),
masks (True = generate), per-row seeds and prompts, and returns one RGB image per
canvas, same size. Backends never see Arrow or Ray: stages do that.

Holds ``classical`` (CPU default), ``scene`` (CPU: textured scenes, patch by patch),
``solid`` (plain padding), ``flux`` (FLUX.1 Fill on
GPU actors) with ``accel`` (its speed settings) and ``testmodel`` (a tiny random-weight
checkpoint), ``inpaint`` (any diffusers inpainting checkpoint) with ``tinyinpaint`` (tiny
checkpoints of three families), ``bfl`` (the hosted FLUX Outpainting API), and ``canvas``
(the reference placed on its canvas, fill colours).

May import: the shared packages (``common``, ``config``) and ``io``. Never ``plan``, ``review`` or ``run``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
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
    spec: BackendSpec

    def outpaint(self, jobs: Sequence[Job]) -> list[np.ndarray]:
        """Images H x W x 3 uint8, one per job (any order of shapes and modes)."""


@dataclass(frozen=True)
class BuildContext:
    """What a backend may need beyond its own config section when it is built: the
    prompts to embed once, canvases to compile before the first batch, the batch size,
    and the run's output (the hosted API journals its tasks there)."""

    prompts: Sequence[str] | None = None
    warmup: Sequence[tuple[int, int, str]] = ()
    batch_size: int = 1
    output: object | None = None


def _no_settings(model_cfg) -> dict:
    return {}


@dataclass(frozen=True)
class BackendSpec:
    """What a backend needs and promises, declared once (as NeMo Curator's stages declare
    their resources), so nothing else compares its name: where it runs, what it costs, how
    its outputs are labelled and what of ``model.*`` decides their pixels."""

    name: str
    version: str  # bumped when its pixels change: part of the request hash, so reruns redo its rows
    factory: str  # "module:Class" in this package, imported only when built
    actor: bool = False  # a long-lived actor pool (weights, a conversation), not plain CPU tasks
    gpu: bool = False  # an actor asks for a GPU wherever GPUs are or may come
    actor_cpus: float | None = None  # CPUs its actor reserves; None: runtime.num_cpus_per_actor
    keeps_reference: bool = False  # returns the reference itself inside V: no feather blend needed
    learned: bool = False  # a trained model: outputs carry a trained-media IPTC term
    # one actor for the whole run, a block per call, a network wait rather than compute:
    # the hosted API, whose account-wide task limit one process must hold
    one_conversation: bool = False
    hosted: bool = False  # a paid API: key checked at start, tasks and credits counted, no seeds
    # the checkpoint's own alignment grid (fast mode aligns to it), read without weights;
    # None: FLUX.1's 16
    grid: Callable[[object], int] | None = None
    # another seed gives another canvas: the quality gate retries a failing row with one
    # (a deterministic backend would give the same pixels: its failing rows are held at once)
    reseedable: bool = False
    settings: Callable[[object], dict] = _no_settings  # model.* that decide its pixels
    where: Callable[[object], str] = lambda m: m.backend  # the `model` column: what made a row

    def build(self, model_cfg, context: BuildContext = BuildContext()) -> Backend:
        module, cls = self.factory.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), cls).from_config(
            model_cfg, context
        )


def _flux_settings(m) -> dict:
    out = {"path": m.path, "fill": m.fill, "guidance": m.guidance, "dtype": m.dtype}
    # the optimisations that change pixels (compilation and fused QKV do not, to ~1e-3)
    if m.optimize.fp8:
        out["fp8"] = True
    if m.optimize.bucket_px != 16:
        out["bucket_px"] = m.optimize.bucket_px
    if m.quantize != "none":
        out["quantize"] = m.quantize
    return out


def _flux_grid(m) -> int:
    from .flux_weights import model_grid

    return model_grid(m.path, m.storage_options)


def _diffusers_grid(m) -> int:
    from ..config.checkpoints import describe
    from ..config.families import grid

    return grid(describe(m.path, m.storage_options))


def _diffusers_settings(m) -> dict:
    """What decides a diffusers row's pixels beyond its plan (steps and seed are columns)."""
    from ..config.checkpoints import describe
    from ..config.families import runs_as

    return {
        "path": m.path,
        "class": runs_as(describe(m.path, m.storage_options)),
        "guidance": m.guidance,
        "dtype": m.dtype,
        "fill": m.fill,
        "negative_prompt": m.negative_prompt,
        "pipeline_kwargs": m.pipeline_kwargs,
        "image_reference": m.image_reference,
        "quantize": m.quantize,
        "mask_grow_px": m.mask_grow_px,
    }


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "solid",
            "1",
            "solid:SolidBackend",
            keeps_reference=True,
            settings=lambda m: {
                "mode": m.solid_mode,
                "color": list(m.solid_color),
                "blur": m.solid_blur,
            },
        ),
        BackendSpec(
            "classical",
            "3",
            "classical:ClassicalBackend",
            keeps_reference=True,
            settings=lambda m: {"grain": m.classical_grain},
        ),
        BackendSpec(
            "scene",
            "1",
            "scene:SceneBackend",
            keeps_reference=True,
            reseedable=True,  # another seed samples other sources
        ),
        BackendSpec(
            "flux-fill",
            "2",
            "flux:FluxFillBackend",
            actor=True,
            gpu=True,
            learned=True,
            grid=lambda m: _flux_grid(m),
            reseedable=True,
            settings=_flux_settings,
            where=lambda m: f"flux-fill:{m.path}",
        ),
        BackendSpec(
            "diffusers",
            "1",
            "inpaint:DiffusersInpaintBackend",
            actor=True,
            gpu=True,
            learned=True,
            grid=_diffusers_grid,
            reseedable=True,
            settings=_diffusers_settings,
            where=lambda m: f"diffusers:{m.path}",
        ),
        BackendSpec(
            "bfl-api",
            "1",
            "bfl:BflApiBackend",
            actor=True,
            learned=True,
            one_conversation=True,
            hosted=True,
            reseedable=True,  # a new task is a new sample: each attempt is paid
            actor_cpus=0.25,  # it waits on the network: the rest to the load and write tasks
            # what the API is asked (the endpoint is where, not what)
            settings=lambda m: {
                "safety": m.api.safety_tolerance,
                "result": m.api.result_format,
                "upload": m.api.upload_format,
            },
            where=lambda m: f"bfl-api:{m.api.endpoint}",
        ),
    )
}


def spec_of(model_cfg) -> BackendSpec:
    """The spec of ``model.backend`` (without building it: the driver loads no weights)."""
    return BACKENDS[model_cfg.backend]


def make_backend(model_cfg, context: BuildContext = BuildContext()) -> Backend:
    return spec_of(model_cfg).build(model_cfg, context)


def warmup_shapes(cfg) -> list[tuple[int, int, str]]:
    """Canvases worth compiling at actor start: ``model.optimize.warmup`` plus the
    defaults' fixed width x height (the usual catalogue job: every SKU to one size)."""
    shapes = cfg.model.optimize.shapes()
    if cfg.defaults.width and cfg.defaults.height:
        shapes.append((cfg.defaults.width, cfg.defaults.height))
    return [(w, h, cfg.defaults.mode) for w, h in dict.fromkeys(shapes)]
