"""The example job's outputs, byte for byte, against a run recorded before the codebase
refactor (issue 30): images (sha256 of each file) and every metadata value that does not
record when, where or how long. Sources get a fixed mtime, so their identity (and the
request hash) is the same in every checkout.

Record again only when a change is meant to alter outputs:
``OUTPAINT_RECORD_GOLDEN=1 python -m pytest tests/run/test_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import config as config_mod

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "golden"
# what says when, where or how long: differs on every run by nature
VOLATILE = {
    "load_ms",
    "generate_ms",
    "encode_ms",
    "write_ms",
    "run_id",
    "worker_node",
    "completed_at",
    "model_actor",
    "model_loop_s",
    "model_wall_s",
    "api_active",
    "api_spent",
}
FIXED_MTIME = 1_700_000_000


def _example(tmp_path: Path) -> config_mod.Config:
    """The example job over a copy of its sources at a fixed path (source URIs are part of
    the request hash and of messages)."""
    src = ROOT / "configs" / "example"
    dst = Path("/tmp/outpaint-golden-example")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "images", dst / "images")
    shutil.copy(src / "manifest.parquet", dst / "manifest.parquet")
    for p in (dst / "images").iterdir():
        os.utime(p, (FIXED_MTIME, FIXED_MTIME))
    data = config_mod.parse_yaml((ROOT / "configs" / "example.yaml").read_text())
    data["input"].update(manifest=str(dst / "manifest.parquet"), image_root=str(dst / "images"))
    data["output"]["uri"] = str(tmp_path / "out")
    data["runtime"]["progress_interval_s"] = 60
    return config_mod.from_dict(data)


def _record(out: Path) -> tuple[list[dict], dict[str, str]]:
    meta = pq.read_table(out / "metadata").sort_by("id")
    keep = [c for c in meta.column_names if c not in VOLATILE]
    rows = meta.select(keep).to_pylist()
    prefix = str(out) + "/"
    for r in rows:  # where the output lives differs per machine: keep the part under output.uri
        r["output_uri"] = r["output_uri"] and r["output_uri"].replace(prefix, "")
        r["output_uris"] = r["output_uris"] and [u.replace(prefix, "") for u in r["output_uris"]]
    images = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "images").iterdir())
    }
    return rows, images


@pytest.mark.ray
def test_example_outputs_are_byte_identical_to_the_recorded_run(tmp_path, ray_local):
    from pipeline.run.runner import run

    cfg = _example(tmp_path)
    run(cfg, quiet=True)
    rows, images = _record(tmp_path / "out")
    if os.environ.get("OUTPAINT_RECORD_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / "metadata.json").write_text(
            json.dumps(rows, indent=1, sort_keys=True, default=str) + "\n"
        )
        (GOLDEN / "images.json").write_text(json.dumps(images, indent=1, sort_keys=True) + "\n")
    want_rows = json.loads((GOLDEN / "metadata.json").read_text())
    want_images = json.loads((GOLDEN / "images.json").read_text())
    assert images == want_images
    got = json.loads(json.dumps(rows, sort_keys=True, default=str))
    assert len(got) == len(want_rows) == 10
    for g, w in zip(got, want_rows):
        assert g == w, f"row {w['id']}: " + ", ".join(
            f"{k}: {g.get(k)!r} != {w.get(k)!r}"
            for k in sorted(set(g) | set(w))
            if g.get(k) != w.get(k)
        )
