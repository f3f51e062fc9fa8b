"""Product photos routed to the backdrop fill: what ``model.route: auto`` saves against
``route: model`` (every row to the backend), in the same run, on a mixed catalogue.

The catalogue: ``--rows`` product shots, ``--backdrop-share`` of them a real object (the
cup of scikit-image's coffee photo) on studio backdrops (white, grey vignette, sweep,
white with a shadow; tests/backdrops.py), the rest crops of scikit-image's scene photos;
500 x 600 JPEGs to a 16:9 canvas (left and right generated). The manifest is analysed
first (``outpaint manifest --analyze``), so planning routes every row.

Measured, each backend run twice (``route: model``, then ``auto``, fresh outputs):

- the tiny FLUX Fill test model on CPU actors (``make-test-model``; 2 steps): model calls
  (rows a model actor generated), wall time;
- the hosted API against the loopback conformance server (tests/bfl_server.py, tasks
  taking the API's 10-20 s scaled by ``--scale``): tasks submitted, credits, wall time;
- the analysis's own cost per row (``backdrop.analyse`` on the generated sides) against a
  decode of the same JPEG, in this process.

    python benchmarks/backdrop_routing.py [--rows 100] [--backdrop-share 0.7] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from record import record  # noqa: E402 - benchmarks/ on the path first

KEY_ENV = "BENCH_BFL_KEY"


def catalogue(work: str, rows: int, share: float) -> tuple[list[dict], list[str]]:
    import numpy as np
    from PIL import Image

    from tests.backdrops import KINDS, product_photo, scene_photos

    scenes = list(scene_photos().values())
    out, kinds = [], []
    n_plain = round(rows * share)
    for i in range(rows):
        if i < n_plain:
            kind = KINDS[i % len(KINDS)]
            img, _ = product_photo(kind, seed=i, at=(100 + i % 17, 140 + i % 23))
        else:
            kind = "scene"
            src = scenes[i % len(scenes)]
            y, x = (i * 7) % max(1, src.shape[0] - 300), (i * 11) % max(1, src.shape[1] - 250)
            img = np.ascontiguousarray(src[y : y + 300, x : x + 250])
            img = np.asarray(Image.fromarray(img).resize((500, 600), Image.LANCZOS))
        path = os.path.join(work, "src", f"p{i:04d}.jpg")
        Image.fromarray(img).save(path, quality=92)
        out.append({"id": f"p{i:04d}", "image": path, "aspect_ratio": "16:9"})
        kinds.append(kind)
    return out, kinds


def analysis_cost(paths: list[str], upscale: int = 1) -> dict:
    """µs per row: the analysis of the generated sides, a decode of the same JPEG
    (``upscale``: the photos enlarged first, as catalogue masters are: a decode grows with
    the area, the analysis with the perimeter)."""
    import numpy as np
    from PIL import Image

    from pipeline.common.box import Sides
    from pipeline.io import backdrop

    sides = Sides(True, False, True, False)
    decode_us, analyse_us = [], []
    for path in paths:
        data = Path(path).read_bytes()
        if upscale > 1:
            im = Image.open(io.BytesIO(data))
            im = im.resize((im.width * upscale, im.height * upscale), Image.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            data = buf.getvalue()
        t0 = time.perf_counter()
        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        decode_us.append((time.perf_counter() - t0) * 1e6)
        backdrop.analyse(img, sides)  # warm
        t0 = time.perf_counter()
        for _ in range(5):
            backdrop.analyse(img, sides)
        analyse_us.append((time.perf_counter() - t0) / 5 * 1e6)
    d, a = statistics.median(decode_us), statistics.median(analyse_us)
    return {
        "size": f"{img.shape[1]}x{img.shape[0]}",
        "analyse_us": round(a, 1),
        "decode_us": round(d, 1),
        "analyse_over_decode": round(a / d, 3),
    }


def run_once(config: dict) -> tuple[dict, list[dict]]:
    import pyarrow.parquet as pq

    from pipeline import api

    t0 = time.perf_counter()
    result = api.run(config, quiet=True)
    wall = time.perf_counter() - t0
    meta = pq.read_table(os.path.join(config["output"]["uri"], "metadata")).to_pylist()
    return {"wall_s": round(wall, 2), "summary": result.summary}, meta


def compare(name: str, base: dict, work: str, extra) -> dict:
    """``route: model`` then ``auto`` on fresh outputs; ``extra(meta, summary)`` adds figures."""
    out = {}
    for route in ("model", "auto"):
        config = json.loads(json.dumps(base))
        config["model"]["route"] = route
        config["output"] = {"uri": os.path.join(work, f"{name}-{route}")}
        got, meta = run_once(config)
        statuses = {}
        for r in meta:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        routes = {}
        for r in meta:
            routes[r["route"]] = routes.get(r["route"], 0) + 1
        out[route] = {
            "wall_s": got["wall_s"],
            "statuses": statuses,
            "routes": routes,
            **extra(meta, got["summary"]),
        }
    out["wall_ratio_auto_over_model"] = round(out["auto"]["wall_s"] / out["model"]["wall_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--backdrop-share", type=float, default=0.7)
    ap.add_argument("--scale", type=float, default=0.1, help="API task latency: 10-20 s times this")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    from pipeline import api
    from tests.bfl_server import BflServer

    work = tempfile.mkdtemp(prefix="routebench-")
    os.makedirs(os.path.join(work, "src"))
    os.environ[KEY_ENV] = "bench-" + os.urandom(6).hex()
    try:
        rows, kinds = catalogue(work, args.rows, args.backdrop_share)
        t0 = time.perf_counter()
        table, manifest = api.make_manifest(
            [os.path.join(work, "src")],
            os.path.join(work, "m.parquet"),
            aspect_ratios=["16:9"],
            analyze=True,
        )
        analyse_wall = time.perf_counter() - t0
        judged = dict(zip(table["id"].to_pylist(), table["backdrop_kind"].to_pylist()))
        agree = sum((judged[r["id"]] != "scene") == (k != "scene") for r, k in zip(rows, kinds))
        results = {
            "rows": args.rows,
            "backdrop_share": args.backdrop_share,
            "manifest_analyze_s": round(analyse_wall, 2),
            "analysis_matches_the_truth": f"{agree}/{args.rows}",
            "analysis_cost": [
                analysis_cost([r["image"] for r in rows]),
                analysis_cost([r["image"] for r in rows[:20]], upscale=4),
            ],
        }
        model_dir = api.make_test_model(os.path.join(work, "tiny-flux"))
        flux = {
            "input": {"manifest": manifest},
            "model": {
                "backend": "flux-fill",
                "path": model_dir,
                "dtype": "float32",
                "steps": args.steps,
            },
            "runtime": {"batch_size": 4, "num_actors": 1, "progress_interval_s": 3600},
        }

        def model_calls(meta, summary):
            return {"model_calls": sum(r["model_actor"] is not None for r in meta)}

        results["flux_cpu"] = compare("flux", flux, work, model_calls)
        lat = (10 * args.scale, 20 * args.scale)
        with BflServer(key=os.environ[KEY_ENV], max_active=24, latency=lat, credits=1e9) as srv:
            hosted = {
                "input": {"manifest": manifest},
                "model": {
                    "backend": "bfl-api",
                    "api": {
                        "endpoint": srv.endpoint,
                        "key_env": KEY_ENV,
                        "poll_interval_s": 0.5 * args.scale,
                        "poll_max_interval_s": 1.0 * args.scale,
                    },
                },
                "runtime": {"progress_interval_s": 3600},
            }
            seen = {"n": 0}

            def tasks(meta, summary):
                submitted = len(srv.submissions) - seen["n"]
                seen["n"] = len(srv.submissions)
                return {"api_tasks": submitted, "credits": summary["api"]["cost_credits"]}

            results["bfl_api"] = compare("api", hosted, work, tasks)
        record(results, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
