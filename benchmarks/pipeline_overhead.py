"""Pipeline overhead: ``outpaint run`` (solid backend) vs a serial single-process loop.

Both do the same work on the same images in the same run: read -> decode -> compose
(edge-extend to a 1024x1024 canvas, ~1 MP) -> encode PNG -> write. The pipeline adds
planning, request hashing, metadata, resume bookkeeping and Ray scheduling, and can
use every core; the loop uses one. Ray is started before timing (a one-off cost,
printed separately). Target: pipeline >= 1.5x the loop on 2 cores.

    python benchmarks/pipeline_overhead.py [--rows 96] [--size 1024] [--block-rows 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline import config as config_mod
from pipeline.backends.canvas import compose
from pipeline.backends.solid import nearest_edge_fill
from pipeline.common.box import Box
from pipeline.io.headers import SourceLimits
from pipeline.io.imageio import decode, encode
from pipeline.review.compose import paste_back


def make_sources(d: Path, rows: int) -> list[Path]:
    """Real photos (scikit-image's), one file per row so no cache makes rows free."""
    import skimage
    from PIL import Image

    data = Path(skimage.__file__).parent / "data"
    photos = [
        "astronaut.png",
        "coffee.png",
        "chelsea.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "camera.png",
    ]
    out = []
    for i in range(rows):
        src = Image.open(data / photos[i % len(photos)]).convert("RGB")
        p = d / f"src-{i:04d}.png"
        src.save(p)
        out.append(p)
    return out


def serial_loop(sources: list[Path], out_dir: Path, size: int) -> float:
    limits = SourceLimits(64 << 20, 256 << 20)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, p in enumerate(sources):
        img = decode(p.read_bytes(), limits).rgb
        h, w = img.shape[:2]
        x, y = (size - w) // 2, (size - h) // 2
        canvas, mask = compose(img, size, size, x, y)
        out = paste_back(nearest_edge_fill(canvas, mask), img, Box.placed(x, y, w, h))
        (out_dir / f"row-{i:04d}.png").write_bytes(encode(out, "png"))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--block-rows", type=int, default=4)
    args = ap.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from PIL import Image

    from pipeline.run.runner import run

    work = Path(tempfile.mkdtemp(prefix="outpaint-bench-"))
    try:
        (work / "src").mkdir()
        sources = make_sources(work / "src", args.rows)
        ids = [f"row-{i:04d}" for i in range(args.rows)]
        pq.write_table(
            pa.table(
                {
                    "id": ids,
                    "image": [str(p) for p in sources],
                    "width": [args.size] * args.rows,
                    "height": [args.size] * args.rows,
                }
            ),
            work / "manifest.parquet",
        )
        cfg = config_mod.from_dict(
            {
                "input": {"manifest": str(work / "manifest.parquet")},
                # the review page is a fixed per-run cost (~1 s of thumbnails) the loop does not have
                "output": {"uri": str(work / "pipeline"), "mode": "overwrite", "report": False},
                "model": {"backend": "solid", "solid_mode": "edge"},
                "runtime": {"num_cpus": args.cpus, "block_rows": args.block_rows},
            }
        )
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t0
        # warm-up: workers started, modules imported (not timed)
        warm = config_mod.from_dict({**config_mod.dump(cfg), "output": {"uri": str(work / "warm")}})
        run(warm, quiet=True)

        t_loop = serial_loop(sources, work / "loop", args.size)
        t0 = time.perf_counter()
        result = run(cfg, quiet=True)
        t_pipe = time.perf_counter() - t0
        assert result["images_written"] == args.rows, result["counts"]
        # same images: pipeline outputs equal the loop's (solid edge is deterministic)
        a = np.asarray(Image.open(work / "pipeline" / "images" / "row-0001.png"))
        b = np.asarray(Image.open(work / "loop" / "row-0001.png"))
        assert np.array_equal(a, b), "pipeline and loop outputs differ"

        loop_ips, pipe_ips = args.rows / t_loop, args.rows / t_pipe
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cpus; ray {ray.__version__}; "
            f"{args.rows} rows -> {args.size}x{args.size} PNG ({args.size * args.size / 1e6:.2f} MP)"
        )
        print(f"ray.init (one-off, not counted)   {t_init:8.2f} s")
        print(f"serial loop (1 process)           {loop_ips:8.2f} images/s  ({t_loop:.2f} s)")
        print(
            f"outpaint run ({args.cpus} cpus, solid)      {pipe_ips:8.2f} images/s  ({t_pipe:.2f} s)"
        )
        print(f"ratio pipeline / loop             {pipe_ips / loop_ips:8.2f}x  (target >= 1.5x)")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
