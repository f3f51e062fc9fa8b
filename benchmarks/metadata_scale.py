"""Driver-side metadata work at catalogue scale: end-of-run compaction, the resume
check and the review page, on N synthetic metadata rows (the real schema's width: ~45
columns) in parts of 10,000 rows as a run writes them.

Each step runs in its own process, so its peak RSS is its own. Baseline, in the same
run: reading every column of every part and keeping the latest row per id (what
compaction did before it streamed: the whole metadata in driver memory at once).

    python benchmarks/metadata_scale.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

INT_COLS = (
    "canvas_width",
    "canvas_height",
    "image_width",
    "image_height",
    "offset_x",
    "offset_y",
    "visible_x0",
    "visible_y0",
    "visible_x1",
    "visible_y1",
    "reference_width",
    "reference_height",
    "pad_left",
    "pad_top",
    "aligned_width",
    "aligned_height",
    "steps",
    "seed",
    "manifest_row",
    "output_bytes",
    "feather_px",
)
FLOAT_COLS = (
    "scale",
    "load_ms",
    "generate_ms",
    "encode_ms",
    "write_ms",
    "seam_score",
    "completed_at",
)


def make(root: str, n: int, part: int = 10_000) -> None:
    import numpy as np
    import pyarrow as pa

    from pipeline.io.outputs import OutputStore

    store = OutputStore(root)
    rng = np.random.default_rng(0)
    for k, s in enumerate(range(0, n, part)):
        m = min(part, n - s)
        ids = [f"sku-{i:09d}" for i in range(s, s + m)]
        t = pa.table(
            {
                "id": ids,
                "image": [f"s3://bucket/catalogue/{i}.jpg" for i in ids],
                "status": ["ok"] * m,
                "error_code": pa.nulls(m, pa.string()),
                "error_message": pa.nulls(m, pa.string()),
                "request_hash": [f"{s + i:032x}" for i in range(m)],
                "output_uri": [f"{root}/images/{i}.png" for i in ids],
                "output_uris": [[f"{root}/images/{i}.png"] for i in ids],
                "generated": [True] * m,
                **{c: rng.integers(0, 4000, m) for c in INT_COLS},
                **{c: rng.random(m) for c in FLOAT_COLS},
                "run_id": ["20261121T000000-abcdef"] * m,
                "mode": ["high"] * m,
                "model": ["flux-fill:/models/x"] * m,
                "fill_color": ["grey"] * m,
                "fill_leakage": rng.random(m) * 0.01,
                "fill_leak_flag": [False] * m,
            }
        )
        store.metadata.write_part(t, f"r-{k:05d}")


def step(root: str, what: str) -> None:
    from pipeline.io.outputs import OutputStore, latest_per_id
    from pipeline.review import report

    store = OutputStore(root)
    t0 = time.perf_counter()
    if what == "baseline":
        latest_per_id(store.metadata.read_all(store.metadata.files())).sort_by(
            [("id", "ascending")]
        )
    elif what == "compact":
        store.compact("c")
    elif what == "resume":
        store.earlier_runs()
    elif what == "report":
        report.build(store, {})
    print(
        f"{time.perf_counter() - t0:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.3f}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        step(args.root, args.step)
        return 0
    root = tempfile.mkdtemp()
    make(root, args.rows)

    def run(what):
        out = subprocess.run(
            [sys.executable, __file__, "--step", what, "--root", root],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return float(out[0]), float(out[1])

    base = run("baseline")
    print(
        f"{args.rows:,} metadata rows in {args.rows // 10_000 + (args.rows % 10_000 > 0):,} parts"
    )
    print(f"{'step':<34}{'time':>9}{'peak RSS':>11}")
    print(f"{'baseline: read all + latest per id':<34}{base[0]:>8.1f}s{base[1]:>9.2f} GiB")
    for what, label in (
        ("compact", "compaction (streaming)"),
        ("resume", "resume check (prior)"),
        ("report", "report.html"),
    ):
        t, rss = run(what)
        print(
            f"{label:<34}{t:>8.1f}s{rss:>9.2f} GiB   ({t / base[0]:.2f}x time, {rss / base[1]:.2f}x memory)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
