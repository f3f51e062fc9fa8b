"""The hosted-API backend against the loopback conformance server (tests/bfl_server.py)
with a realistic latency scaled down: how close a run comes to the account's bound
(``max_active`` tasks at a time, each taking the task latency), and the driver's CPU per row.

Tasks take 10-20 s on the hosted API; here ``--scale 0.1`` makes them 1-2 s, and the
polling intervals are scaled the same (0.5 s backing off to 1 s -> 0.05 s to 0.1 s: the defaults). The
bound is ``max_active / mean latency`` rows/s. Measured by the server: "steady" over the
middle 80 % of task completions, "span" from the first submission to the last task
finished (ramp and tail in); "whole run" also includes the run's start (Ray, the actor)
and end (report, compaction).

    python benchmarks/api_backend.py [--rows 480] [--max-active 24] [--scale 0.1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=480)
    ap.add_argument("--max-active", type=int, default=24)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--json")
    args = ap.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq
    import skimage
    import yaml
    from PIL import Image

    from tests.bfl_server import BflServer

    work = tempfile.mkdtemp(prefix="apibench-")
    key = "bench-" + os.urandom(6).hex()
    lat = (10 * args.scale, 20 * args.scale)
    try:
        base = Image.open(
            os.path.join(os.path.dirname(skimage.__file__), "data", "chelsea.png")
        ).convert("RGB")
        rows = []
        for i in range(args.rows):
            path = os.path.join(work, f"p{i}.jpg")
            base.crop((i % 200, i % 100, i % 200 + 200, i % 100 + 150)).save(path, quality=90)
            rows.append({"id": f"sku-{i:05d}", "image": path, "width": 320, "height": 240})
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(work, "m.parquet"))
        with BflServer(key=key, max_active=args.max_active, latency=lat, credits=1e9) as srv:
            config = {
                "input": {"manifest": os.path.join(work, "m.parquet")},
                "output": {"uri": os.path.join(work, "out")},
                "model": {
                    "backend": "bfl-api",
                    "api": {
                        "endpoint": srv.endpoint,
                        "key_env": "BENCH_BFL_KEY",
                        "max_active": args.max_active,
                        "poll_interval_s": 0.5 * args.scale,
                        "poll_max_interval_s": 1.0 * args.scale,
                    },
                },
                "runtime": {"progress_interval_s": 3600},
            }
            cfg = os.path.join(work, "c.yaml")
            with open(cfg, "w") as f:
                yaml.safe_dump(config, f)
            code = (
                "import resource, sys, time; from pipeline.cli import main; t = time.perf_counter(); "
                f"rc = main(['run', {cfg!r}, '--quiet']); u = resource.getrusage(resource.RUSAGE_SELF); "
                "print('STATS', time.perf_counter() - t, u.ru_utime + u.ru_stime); sys.exit(rc)"
            )
            samples: list[int] = []
            stop = threading.Event()

            def sample():  # how many tasks the account has in flight, every 0.25 s
                while not stop.is_set():
                    if srv.submissions:
                        samples.append(srv.active())
                    time.sleep(0.25)

            threading.Thread(target=sample, daemon=True).start()
            t0 = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=3600,
                env=dict(os.environ, PYTHONPATH=ROOT, BENCH_BFL_KEY=key),
            )
            wall_outer = time.perf_counter() - t0
            stop.set()
            if r.returncode:
                raise RuntimeError(r.stderr[-3000:])
            _, wall, cpu = r.stdout.strip().splitlines()[-1].split()
            wall, cpu = float(wall), float(cpu)
            finished = sorted(t["finished"] for t in srv.tasks.values() if t["finished"])
            first = min(s["time"] for s in srv.submissions)
            span = args.rows / (
                finished[-1] - first
            )  # first submission to last finish: ramp and tail in
            lo, hi = int(0.1 * len(finished)), int(0.9 * len(finished))
            steady = (hi - lo) / (finished[hi] - finished[lo])  # the middle 80 % of completions
            mean_latency = sum(lat) / 2
            bound = args.max_active / mean_latency
            result = {
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "rows": args.rows,
                "max_active": args.max_active,
                "latency_s": lat,
                "bound_rows_per_s": round(bound, 2),
                "steady_rows_per_s": round(steady, 2),
                "steady_vs_bound": round(steady / bound, 3),
                "span_rows_per_s": round(span, 2),
                "span_vs_bound": round(span / bound, 3),
                "whole_run_s": round(wall, 1),
                "whole_run_rows_per_s": round(args.rows / wall, 2),
                "driver_cpu_s": round(cpu, 2),
                "driver_cpu_ms_per_row": round(1000 * cpu / args.rows, 2),
                "submissions": len(srv.submissions),
                "max_seen_active": srv.max_seen_active,
                "mean_active": round(sum(samples) / max(1, len(samples)), 2),
                "refused": srv.refused,
                "polls": srv.polls,
                "polls_per_task": round(srv.polls / args.rows, 2),
                "outer_wall_s": round(wall_outer, 1),
            }
        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
