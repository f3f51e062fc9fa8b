"""Planner throughput: vectorised vs a straightforward per-row implementation.

Plans N rows (default 1,000,000) with known source sizes, a realistic mix of
targets (aspect ratios and explicit sizes, offsets, auto-crop, both modes, some
rows needing scaling and some rejected), in one run:

  per-row   : ``geometry_ref.plan_row`` on each row (the same rules, plain Python)
  vectorised: ``geometry.plan_geometry`` over the columns
  stage     : the whole ``PlanStage`` over an Arrow table (parsing, defaults, ids,
              seeds, messages, output table) — what ``outpaint plan`` runs

Prints rows/s for each and the ratios; the per-row baseline is timed on a sample
(default 100,000 rows) and checked to agree with the vectorised result there.

    python benchmarks/plan_throughput.py [--rows 1000000] [--baseline-rows 100000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline import config as config_mod
from pipeline.common.codes import CODES
from pipeline.io.manifest import ROW_INDEX
from pipeline.plan.geometry import SizingRules, plan_geometry, plan_geometry_threaded
from pipeline.plan.geometry_ref import columns_from_rows, plan_row
from pipeline.plan.stage import PlanStage, plan_manifest

RATIOS = [(1, 1), (4, 5), (16, 9), (9, 16), (3, 2), (191, 100)]


MIXES = {
    # sources up to 6000 px: about half the aspect-ratio rows need the scale search
    "stress": (200, 6000, 2600),
    # typical e-commerce sources (500-2500 px) and tiles up to 2048
    "catalogue": (500, 2500, 2048),
}


def synth_rows(n: int, seed: int = 0, mix: str = "stress") -> list[dict]:
    lo, hi, canvas_hi = MIXES[mix]
    rng = np.random.default_rng(seed)
    w = rng.integers(lo, hi, n)
    h = rng.integers(lo, hi, n)
    kind = rng.random(n)
    rows = []
    for i in range(n):
        r = {
            "src_w": int(w[i]),
            "src_h": int(h[i]),
            "fast": bool(i % 3 == 0),
            "auto_crop": bool(i % 7 == 0),
        }
        if kind[i] < 0.6:
            r["ratio"] = RATIOS[i % len(RATIOS)]
        else:
            r["width"], r["height"] = (
                int(rng.integers(256, canvas_hi)),
                int(rng.integers(256, canvas_hi)),
            )
            if kind[i] > 0.9:
                r["offset_x"], r["offset_y"] = (
                    int(rng.integers(-300, 800)),
                    int(rng.integers(-300, 800)),
                )
        rows.append(r)
    return rows


def synth_table(rows: list[dict]) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "id": [f"sku-{i:08d}" for i in range(n)],
            "image": [f"images/sku-{i:08d}.jpg" for i in range(n)],
            "image_width": [r["src_w"] for r in rows],
            "image_height": [r["src_h"] for r in rows],
            "aspect_ratio": [
                f"{r['ratio'][0]}:{r['ratio'][1]}" if "ratio" in r else None for r in rows
            ],
            "width": [r.get("width") for r in rows],
            "height": [r.get("height") for r in rows],
            "reference_offset_x": [r.get("offset_x") for r in rows],
            "reference_offset_y": [r.get("offset_y") for r in rows],
            "auto_crop": [r["auto_crop"] for r in rows],
            "mode": ["fast" if r["fast"] else "high" for r in rows],
            ROW_INDEX: pa.array(np.arange(n, dtype=np.int64)),
        }
    )


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--baseline-rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mix", choices=[*MIXES, "both"], default="both")
    args = ap.parse_args(argv)
    for mix in MIXES if args.mix == "both" else [args.mix]:
        bench(args, mix)
    return 0


def bench(args, mix: str) -> None:

    rules = SizingRules()
    rows = synth_rows(args.rows, mix=mix)
    cols = columns_from_rows(rows)
    sample = rows[: args.baseline_rows]

    t_ref = best_of(lambda: [plan_row(r, rules) for r in sample], 1)
    t_vec = best_of(lambda: plan_geometry(cols, rules), args.repeats)
    t_thr = best_of(lambda: plan_geometry_threaded(cols, rules), args.repeats)
    thr = plan_geometry_threaded(cols, rules)
    whole = plan_geometry(cols, rules)
    assert all((thr[k] == whole[k]).all() for k in whole), "threaded result differs"

    # agreement on the sample (a benchmark of wrong answers is worthless)
    out = plan_geometry(columns_from_rows(sample), rules)
    want = [plan_row(r, rules)["code"] for r in sample]
    assert [CODES[c] for c in out["code"]] == want, "vectorised and per-row planners disagree"

    table = synth_table(rows)
    cfg = config_mod.from_dict({"input": {"manifest": "-"}, "output": {"uri": "-"}})
    stage = PlanStage(cfg)
    t_stage = best_of(lambda: stage(table), args.repeats)
    t_manifest = best_of(lambda: plan_manifest(cfg, table), args.repeats)
    plan = stage(table)
    ok = int(np.sum(np.asarray(plan.column("status").to_numpy(zero_copy_only=False)) == "ok"))

    ref_rps = len(sample) / t_ref
    vec_rps = args.rows / t_vec
    stage_rps = args.rows / t_stage
    thr_rps = args.rows / t_thr
    man_rps = args.rows / t_manifest
    cpus = os.cpu_count()
    print(
        f"machine: {platform.machine()} {cpus} cpus, python {platform.python_version()}, numpy {np.__version__}"
    )
    scaled = int(np.sum(plan.column("scale").fill_null(1.0).to_numpy() < 1.0))
    print(
        f"== mix '{mix}': {args.rows:,} rows (ok {ok:,}, rejected/failed {args.rows - ok:,}, "
        f"reference scaled {scaled:,}); per-row baseline on {len(sample):,}"
    )
    print(f"geometry, per-row plan_row (1 thread)     {ref_rps:>12,.0f} rows/s")
    print(
        f"geometry, vectorised (1 thread)           {vec_rps:>12,.0f} rows/s  {vec_rps / ref_rps:6.1f}x per-row"
    )
    print(
        f"geometry, vectorised ({cpus} threads, chunks)  {thr_rps:>12,.0f} rows/s  {thr_rps / ref_rps:6.1f}x per-row"
    )
    print("full PlanStage, 1 thread (parse, ids, seeds, messages, Arrow out)")
    print(
        f"                                          {stage_rps:>12,.0f} rows/s  {stage_rps / ref_rps:6.1f}x per-row geometry"
    )
    print(
        f"plan_manifest, {cpus} threads (outpaint plan) {man_rps:>12,.0f} rows/s  {man_rps / ref_rps:6.1f}x per-row geometry"
    )


if __name__ == "__main__":
    sys.exit(main())
