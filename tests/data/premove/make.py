"""Record an output written by an earlier outpaint, for the "a rerun skips every row"
regression test (tests/run/test_compat.py).

Recorded once, from the repository root, with the outpaint of the commit named in
``recorded.json`` (the last one before the package was split into sub-packages):

    python tests/data/premove/make.py

It only uses the command line (``python -m pipeline run``), so it runs the same with
any version. Sources are small crops of the bundled example photos; one row has its
image inline. Local sources are identified by size + mtime, so their mtimes are
recorded too and the test restores them on its copies.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

HERE = Path(__file__).parent
ROOT = HERE.parents[2]


def main() -> None:
    src = HERE / "src"
    out = HERE / "out"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    src.mkdir()
    crops = {"astro.png": ("astronaut.jpg", (100, 20, 228, 116)),
             "cat.png": ("chelsea.jpg", (150, 40, 246, 136))}
    for name, (photo, box) in crops.items():
        Image.open(ROOT / "configs/example/images" / photo).convert("RGB").crop(box).save(src / name)
    cat = io.BytesIO()
    Image.open(src / "cat.png").save(cat, format="PNG")
    rows = [
        {"id": "astro-square", "image": "astro.png", "aspect_ratio": "1:1"},
        {"id": "astro-wide-jpeg", "image": "astro.png", "aspect_ratio": "16:9", "output_format": "jpeg"},
        {"id": "cat-fast", "image": "cat.png", "width": 160, "height": 128, "mode": "fast"},
        {"id": "cat-same", "image": "cat.png", "width": 96, "height": 96},
        {"id": "cat-inline", "image_bytes": cat.getvalue(), "aspect_ratio": "4:5", "output_format": "webp"},
        {"id": "too-small", "image": "cat.png", "width": 32, "height": 32},
    ]
    types = {"id": pa.string(), "image": pa.string(), "image_bytes": pa.binary(), "aspect_ratio": pa.string(),
             "width": pa.int64(), "height": pa.int64(), "mode": pa.string(), "output_format": pa.string()}
    pq.write_table(pa.table({c: pa.array([r.get(c) for r in rows], t) for c, t in types.items()}),
                   HERE / "manifest.parquet")
    config = {"input": {"manifest": str(HERE / "manifest.parquet"), "image_root": str(src)},
              "output": {"uri": str(out), "report": False}, "runtime": {"seed": 3}}
    (HERE / "config.yaml").write_text(yaml.safe_dump(config))
    subprocess.run([sys.executable, "-m", "pipeline", "run", str(HERE / "config.yaml"), "--quiet"], check=True,
                   cwd=ROOT)
    shutil.rmtree(out / "_tmp", ignore_errors=True)
    os.remove(out / "run.json")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    (HERE / "recorded.json").write_text(json.dumps({
        "commit": commit, "config": {k: v for k, v in config.items() if k != "input"},
        "mtime_ns": {p.name: p.stat().st_mtime_ns for p in sorted(src.iterdir())}}, indent=2) + "\n")
    (HERE / "config.yaml").unlink()


if __name__ == "__main__":
    main()
