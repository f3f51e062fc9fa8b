"""Outpainting backends behind one small interface.

What identifies a backend's output for resume (name, version, settings) is derived
from the config in ``pipeline.hashing``, so the driver never has to build one.

A backend takes a batch of canvases (reference placed, unknown area arbitrary),
masks (True = generate), per-row seeds and prompts, and returns one RGB image per
canvas, same size. Backends never see storage, Arrow or Ray: stages do that.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class Backend(Protocol):
    name: str
    # Where it should run: False -> plain Ray tasks fused with the CPU stages (no
    # pixels through the object store); True -> a long-lived actor pool (weights).
    needs_actor: bool

    # Shown per row as ``fill_color``: what the unknown area held before generation.
    fill_label: str

    def outpaint(self, canvases: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 seeds: Sequence[int], prompts: Sequence[str]) -> list[np.ndarray]:
        """Images H x W x 3 uint8, one per canvas."""


def make_backend(model_cfg) -> Backend:
    name = model_cfg.backend
    if name == "solid":
        from .solid import SolidBackend

        return SolidBackend(model_cfg)
    if name == "classical":
        from .classical import ClassicalBackend

        return ClassicalBackend(model_cfg)
    if name == "flux-fill":
        from .flux import FluxFillBackend  # noqa: F401  (issue: FLUX backend)

        return FluxFillBackend(model_cfg)
    raise ValueError(f"unknown model.backend {name!r}")


def needs_actor(model_cfg) -> bool:
    """Without building the backend (the driver must not load weights)."""
    return model_cfg.backend == "flux-fill"
