"""``request_hash``: what decides a row's output, hashed, so reruns can skip rows
whose output already exists for exactly this request (docs/contracts.md, Outputs)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa

from ..backends import BACKENDS, spec_of
from ..config import Config
from .sections import PlanSections


def model_identity(cfg: Config | PlanSections) -> dict:
    """The backend, its version and the settings that decide its pixels."""
    spec = spec_of(cfg.model)
    return {"backend": spec.name, "version": spec.version, **spec.settings(cfg.model)}


def model_name(cfg: Config | PlanSections) -> str:
    """What made a row (the metadata's ``model``): the backend, and its weights or endpoint."""
    return spec_of(cfg.model).where(cfg.model)


# Output settings that came after outputs already existed: in the hash only when set
# away from their default, so outputs written before them keep their hash.
LATER_OUTPUT_KEYS = (
    "color",
    "color_intent",
    "digital_source_type",
    "keep_metadata",
    "keep_gps",
    "c2pa",
)


def run_constant(cfg: Config | PlanSections) -> str:
    """Everything outside the row that changes its output bytes."""
    o = cfg.output
    const = {
        "model": model_identity(cfg),
        "encoding": o.encoding.model_dump(mode="json"),
        "alpha": o.alpha,
        "background": list(o.background),
        "feather_px": o.feather_px,
        "color_match": o.color_match,
    }
    fields, values = type(o).model_fields, o.model_dump(mode="json")
    const.update({k: values[k] for k in LATER_OUTPUT_KEYS if getattr(o, k) != fields[k].default})
    m = cfg.model
    model_fields, model_values = type(m).model_fields, m.model_dump(mode="json")
    const.update(
        {
            f"model.{k}": model_values[k]
            for k in LATER_MODEL_KEYS
            if model_values[k] != _default(model_fields[k])
        }
    )
    if m.route == "cascade":  # its scene step's pixels: a new version redoes its rows
        const["model.scene_fill"] = BACKENDS["scene"].version
    return json.dumps(const, sort_keys=True)


def _default(field) -> object:
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


# Model settings that came later still (the backdrop route, issue 28): the same rule.
LATER_MODEL_KEYS = ("route", "backdrop", "scene")

HASHED_FIELDS = (
    "id",
    "canvas_width",
    "canvas_height",
    "scale",
    "offset_x",
    "offset_y",
    "visible_x0",
    "visible_y0",
    "visible_x1",
    "visible_y1",
    "mode",
    "steps",
    "seed",
    "num_variants",
    "prompt",
    "output_format",
)


def request_hashes(plan: pa.Table, identity: np.ndarray, cfg: Config | PlanSections) -> pa.Array:
    """sha256 (hex, 32 chars) per row of (id, source identity, geometry, mode, steps,
    seed, prompt, format, model and encoding); null where the source has no identity.

    The id is part of it, so a hash alone names one row's request: the resume check
    compares 128-bit fingerprints (``io.done.fingerprints``), not strings. Only rows with an
    identity (the ones that passed planning) are hashed: one sha256 each.
    """
    const = run_constant(cfg)
    has = np.flatnonzero(np.asarray(identity, dtype=object) != None)  # noqa: E711 - elementwise
    out = np.full(len(identity), None, dtype=object)
    if len(has):
        sub = plan.select(list(HASHED_FIELDS)).take(pa.array(has))
        cols = [sub.column(c).to_pylist() for c in HASHED_FIELDS]
        for j, i in enumerate(has):
            key = json.dumps([const, identity[i], *[c[j] for c in cols]], separators=(",", ":"))
            out[i] = hashlib.sha256(key.encode()).hexdigest()[:32]
    return pa.array(out, pa.string())
