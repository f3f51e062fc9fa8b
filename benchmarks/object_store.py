"""Requests a catalogue in object storage and behind HTTP costs, counted by the servers.

S3: a moto server on loopback behind a counting proxy; 3,000 source images under one
prefix, manifest and outputs in S3, ``solid`` backend, every run through the command
line (``python -m pipeline run``) in a fresh process: a first run, a rerun with every
row done, and the daily shape (the 3,000 done plus 100 new rows in the same prefix).
HTTP: the same images served by a loopback HTTP server (ETag, Last-Modified), outputs on
local disk: first run, rerun, and a rerun with ``image_version``. With ``--baseline-rev``
the S3 scenarios also run with that revision's code (a git worktree), against the same
server, in the same run. ``--local-rows N``: a rerun of N done rows on local disk, the
driver's peak RSS per row.

    python benchmarks/object_store.py [--rows 3000] [--new 100] [--baseline-rev REV]
        [--local-rows 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto():
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def images(n: int, start: int = 0) -> dict[str, bytes]:
    """n small JPEG crops of a real photo, each different."""
    import skimage
    from PIL import Image

    base = Image.open(
        os.path.join(os.path.dirname(skimage.__file__), "data", "chelsea.png")
    ).convert("RGB")
    out = {}
    for i in range(start, start + n):
        buf = io.BytesIO()
        base.crop((i % 300, (i // 300) % 150, i % 300 + 96, (i // 300) % 150 + 72)).save(
            buf, "JPEG", quality=85
        )
        out[f"sku-{i:05d}.jpg"] = buf.getvalue()
    return out


def manifest_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, [])
    table = pa.table({k: [r.get(k) for r in rows] for k in cols})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def run_cli(code_root: str, config: dict, work: str, name: str) -> dict:
    """``python -m pipeline run`` in a fresh process with ``code_root``'s package."""
    import yaml

    path = os.path.join(work, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    env = dict(
        os.environ,
        PYTHONPATH=code_root,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", path],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=3600,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{name}: {r.stderr[-2000:]}")
    lines = [x for x in r.stderr.splitlines() if x.startswith("[outpaint] sources")]
    return {"wall_s": round(wall, 2), "line": lines[0] if lines else None}


def s3_scenarios(
    code_root: str, label: str, endpoint: str, proxy, n: int, new: int, work: str
) -> dict:
    import s3fs

    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": endpoint, "region_name": "eu-west-1"},
    )
    bucket = f"bench-{label}"
    fs.mkdir(bucket)
    day1, extra = images(n), images(new, start=n)
    for name, data in {**day1, **extra}.items():
        fs.pipe_file(f"{bucket}/src/{name}", data)
    rows = [{"id": k[:-4], "image": k, "width": 128, "height": 96} for k in day1]
    fs.pipe_file(f"{bucket}/manifests/day1.parquet", manifest_bytes(rows))
    fs.pipe_file(
        f"{bucket}/manifests/day2.parquet",
        manifest_bytes(
            rows + [{"id": k[:-4], "image": k, "width": 128, "height": 96} for k in extra]
        ),
    )
    opts = {
        "key": "testing",
        "secret": "testing",
        "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": proxy.endpoint, "region_name": "eu-west-1"},
    }

    def cfg(day):
        return {
            "input": {
                "manifest": f"s3://{bucket}/manifests/{day}.parquet",
                "image_root": f"s3://{bucket}/src",
                "storage_options": opts,
            },
            "output": {"uri": f"s3://{bucket}/out", "storage_options": opts},
            "model": {"backend": "solid"},
            "runtime": {"progress_interval_s": 3600},
        }

    out = {}
    for step, day, rows_n in (
        ("first", "day1", n),
        ("rerun", "day1", n),
        ("daily", "day2", n + new),
    ):
        proxy.reset()
        r = run_cli(code_root, cfg(day), work, f"{label}-{step}")
        counts = dict(proxy.reset())
        fs.invalidate_cache()
        r["run_wall_s"] = json.loads(fs.cat_file(f"{bucket}/out/run.json"))["wall_s"]
        total = sum(counts.values())
        out[step] = {
            "rows": rows_n,
            "requests": total,
            "per_row": round(total / rows_n, 3),
            "by_kind": counts,
            "rows_per_s": round(rows_n / r["wall_s"], 1),
            "run_rows_per_s": round(rows_n / r["run_wall_s"], 1),
            **r,
        }
        print(
            f"  [{label}] S3 {step}: {rows_n:,} rows, {total:,} requests ({total / rows_n:.3f} a row) "
            f"{counts} in {r['wall_s']:.1f} s (run.json: {r['run_wall_s']:.2f} s)",
            flush=True,
        )
    return out


def http_scenarios(n: int, work: str) -> dict:
    from tests.servers import ImageServer

    src = os.path.join(work, "cdn")
    os.makedirs(src, exist_ok=True)
    for name, data in images(n).items():
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)
    out = {}
    with ImageServer(src) as srv:
        names = sorted(os.listdir(src))
        rows = [{"id": k[:-4], "image": srv.url(k), "aspect_ratio": "4:3"} for k in names]
        versioned = [dict(r, image_version="2026-11-30") for r in rows]
        for name, rs in (("plain", rows), ("versioned", versioned)):
            with open(os.path.join(work, f"http-{name}.parquet"), "wb") as f:
                f.write(manifest_bytes(rs))

        def cfg(m, outdir):
            return {
                # the stand-in CDN runs on loopback: allowed on purpose
                "input": {
                    "manifest": os.path.join(work, f"http-{m}.parquet"),
                    "http": {"allow_private_networks": True},
                },
                "output": {"uri": os.path.join(work, outdir)},
                "model": {"backend": "solid"},
                "runtime": {"progress_interval_s": 3600},
            }

        for step, m, outdir in (
            ("first", "plain", "http-out"),
            ("rerun", "plain", "http-out"),
            ("versions, first", "versioned", "http-v"),
            ("versions, rerun", "versioned", "http-v"),
        ):
            srv.reset()
            r = run_cli(ROOT, cfg(m, outdir), work, f"http-{step.replace(', ', '-')}")
            counts = dict(srv.reset())
            total = sum(counts.values())
            out[step] = {
                "rows": n,
                "requests": total,
                "per_row": round(total / n, 3),
                "by_kind": counts,
                **r,
            }
            r["run_wall_s"] = json.loads(Path(work, outdir, "run.json").read_text())["wall_s"]
            print(
                f"  HTTP {step}: {n:,} rows, {total:,} requests ({total / n:.3f} a row) {counts} in "
                f"{r['wall_s']:.1f} s (run.json: {r['run_wall_s']:.2f} s)",
                flush=True,
            )
    return out


def local_rss(rows: int, work: str) -> dict:
    """A rerun of ``rows`` done rows on local disk (image paths, no sizes in the manifest),
    against the same run with 1,000 rows: the driver's peak RSS per done row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from pipeline import config as config_mod
    from pipeline.io import manifest
    from pipeline.io.outputs import OutputStore
    from pipeline.plan.stage import PlanStage

    src = os.path.join(work, "local-src")
    os.makedirs(src, exist_ok=True)
    files = list(images(8).items())
    for name, data in files:
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)
    result = {}
    for n in (1000, rows):
        base = os.path.join(work, f"local-{n}")
        os.makedirs(os.path.join(base, "out", "images"), exist_ok=True)
        ids = [f"row-{i:08d}" for i in range(n)]
        pq.write_table(
            pa.table(
                {
                    "id": ids,
                    "image": [files[i % 8][0] for i in range(n)],
                    "aspect_ratio": ["4:3"] * n,
                }
            ),
            os.path.join(base, "m.parquet"),
            row_group_size=65_536 if n > 1000 else 500,
        )
        # the small run in slices too, so both start Ray and the difference is per row
        config = {
            "input": {"manifest": os.path.join(base, "m.parquet"), "image_root": src},
            "output": {"uri": os.path.join(base, "out"), "report": False},
            "model": {"backend": "solid"},
            "runtime": {
                "progress_interval_s": 3600,
                "plan_block_rows": 65_536 if n > 1000 else 500,
            },
        }
        cfg = config_mod.from_dict(config)
        store = OutputStore(cfg.output.uri)
        # the metadata a first run would have left: planned and hashed by the same code
        table = manifest.read(cfg)
        for start in range(0, n, 250_000):
            plan = PlanStage(cfg, identify=True)(table.slice(start, 250_000))
            k = plan.num_rows
            out_uri = pa.array(
                [store.folder.uri_of("images", f"{i}.png") for i in plan.column("id").to_pylist()]
            )
            meta = (
                plan.drop_columns(["request_json"])
                .append_column("output_uri", out_uri)
                .append_column("completed_at", pa.array(np.full(k, 1.0)))
            )
            store.metadata.write_part(meta, f"seed-{start:09d}")
            for j, i in enumerate(
                plan.column("id").to_pylist()
            ):  # hard links: a file system allows 65,000 a file
                target = os.path.join(base, f"img-{(start + j) // 60_000}.png")
                if not os.path.exists(target):
                    with open(target, "wb") as f:
                        f.write(files[0][1])
                os.link(target, os.path.join(base, "out", "images", f"{i}.png"))
        path = os.path.join(base, "c.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        # the peak as the kernel keeps it for this process image (VmHWM, in kB): ru_maxrss would
        # carry over the benchmark's own size from the fork
        code = (
            "import re, sys, time; from pipeline.cli import main; t = time.perf_counter(); "
            f"rc = main(['run', {path!r}, '--quiet']); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
            "print('RSS', hwm, time.perf_counter() - t); sys.exit(rc)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=7200,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        _, kb, wall = r.stdout.strip().splitlines()[-1].split()
        run_json = json.loads(Path(base, "out", "run.json").read_text())
        assert run_json["counts"]["skipped"] == n, run_json["counts"]
        result[n] = {
            "rss_mib": round(int(kb) / 1024, 1),
            "wall_s": round(float(wall), 1),
            "rows_per_s": round(n / float(wall)),
        }
        print(
            f"  local rerun, {n:,} done rows: driver peak RSS {int(kb) / 1024:,.0f} MiB, {float(wall):.1f} s",
            flush=True,
        )
        shutil.rmtree(base, ignore_errors=True)
    small, big = result[1000], result[rows]
    per_row = (big["rss_mib"] - small["rss_mib"]) * 1024 * 1024 / (rows - 1000)
    print(f"  => {per_row:.0f} bytes of driver RSS per done row", flush=True)
    return {"runs": result, "bytes_per_done_row": round(per_row)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--new", type=int, default=100)
    ap.add_argument("--baseline-rev")
    ap.add_argument("--local-rows", type=int, default=0)
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    from tests.servers import CountingProxy

    work = tempfile.mkdtemp(prefix="objstore-")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    try:
        if not args.skip_s3:
            proc, endpoint = moto()
            proxy = CountingProxy(endpoint)
            try:
                result["s3"] = s3_scenarios(ROOT, "new", endpoint, proxy, args.rows, args.new, work)
                if args.baseline_rev:
                    old = os.path.join(work, "baseline-code")
                    subprocess.run(
                        ["git", "-C", ROOT, "worktree", "add", "--detach", old, args.baseline_rev],
                        check=True,
                        capture_output=True,
                    )
                    try:
                        result["s3_baseline"] = s3_scenarios(
                            old, "old", endpoint, proxy, args.rows, args.new, work
                        )
                    finally:
                        subprocess.run(
                            ["git", "-C", ROOT, "worktree", "remove", "--force", old],
                            capture_output=True,
                        )
                    new, old_r = result["s3"]["rerun"], result["s3_baseline"]["rerun"]
                    print(
                        f"S3 rerun: {old_r['requests']:,} -> {new['requests']:,} requests; "
                        f"{old_r['run_rows_per_s']:,} -> {new['run_rows_per_s']:,} rows/s by run.json "
                        f"({new['run_rows_per_s'] / old_r['run_rows_per_s']:.1f}x; with the interpreter's start "
                        f"{new['rows_per_s'] / old_r['rows_per_s']:.1f}x)",
                        flush=True,
                    )
            finally:
                proxy.close()
                proc.terminate()
            result["http"] = http_scenarios(args.rows, work)
        if args.local_rows:
            result["local"] = local_rss(args.local_rows, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
