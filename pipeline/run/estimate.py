"""``outpaint plan --sample N``: the routes of the rows planning cannot decide without
their pixels (no ``--analyze`` columns; under ``model.route: cascade`` every row not
already a backdrop fill), estimated on a sample before any work: N of them, drawn with
the run's seed, loaded and routed by the run's own stages (load, then the routing stage:
backdrop fill, scene fill and its score), nothing written. Each share comes with its 95 %
interval (Wilson's), and the rows the model would make are projected to the manifest."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from ..common import codes
from ..config import Config
from ..io import manifest as manifest_io
from .records import BACKDROP, MODEL, SCENE
from .stages import stages as build

Z = 1.96  # 95 %


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % score interval of a share of ``k`` in ``n``."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def undecided(plan: pa.Table, cfg: Config) -> np.ndarray:
    """Indices of the planned rows the routing stage decides once loaded: generated ok rows
    not planned for the backdrop fill (nor, unless cascading, for the model)."""
    if cfg.model.route == "model":
        return np.array([], np.int64)
    ok = plan.column("status").to_numpy(zero_copy_only=False) == codes.OK
    gen = plan.column("generated").to_numpy(zero_copy_only=False) & ok
    route = plan.column("route").fill_null("").to_numpy(zero_copy_only=False)
    open_ = route != BACKDROP if cfg.model.route == "cascade" else route == ""
    return np.flatnonzero(gen & open_)


def sample_routes(plan: pa.Table, cfg: Config, n: int) -> dict:
    """Route ``n`` of the undecided rows of ``plan`` (``api.plan``'s table, in manifest
    order) as a run would; their shares, intervals and what they project to."""
    population = undecided(plan, cfg)
    rng = np.random.default_rng(cfg.runtime.seed)
    k = min(n, len(population))
    pick = np.sort(rng.choice(population, size=k, replace=False)) if k else population[:0]
    found = {BACKDROP: 0, SCENE: 0, MODEL: 0, "failed": 0}
    if k:
        rows = manifest_io.read(cfg).take(pa.array(pick))
        stages = build(cfg, run_id="plan-sample")
        routed = stages.route(stages.load(stages.plan(rows)))
        status = routed.column("status").to_pylist()
        for s, r in zip(status, routed.column("route").to_pylist()):
            key = "failed" if s != codes.OK else (r if r in (BACKDROP, SCENE) else MODEL)
            found[key] += 1
    shares = {}
    for key, count in found.items():
        lo, hi = wilson(count, k)
        shares[key] = {
            "rows": count,
            "share": round(count / k, 4) if k else None,
            "low": round(lo, 4),
            "high": round(hi, 4),
        }
    model = shares[MODEL]
    return {
        "population": int(len(population)),
        "sampled": int(k),
        "routes": shares,
        "projected_model_rows": {
            "estimate": round(len(population) * (model["share"] or 0.0)),
            "low": math.floor(len(population) * model["low"]) if k else None,
            "high": math.ceil(len(population) * model["high"]) if k else None,
        },
    }


def format_sample(s: dict) -> str:
    if not s["sampled"]:
        return "sample: no row is left for the routing stage to decide"
    parts = []
    for key, v in s["routes"].items():
        if v["rows"]:
            parts.append(f"{key} {v['share']:.0%} ({v['low']:.0%}-{v['high']:.0%})")
    m = s["projected_model_rows"]
    return (
        f"sample: {s['sampled']:,} of the {s['population']:,} rows routed once loaded: "
        + ", ".join(parts)
        + f"; the model would make ~{m['estimate']:,} of them ({m['low']:,}-{m['high']:,}, 95 %)"
    )
