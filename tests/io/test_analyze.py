"""``outpaint manifest --analyze`` and ``api.analyze_manifest``: one decode per source,
the product-photo columns written into the manifest (pipeline/io/analyze.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import api

from ..backdrops import product_photo, scene_photos
from ..conftest import write_config, write_manifest


def test_manifest_analyze_from_a_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    img, box = product_photo("sweep", at=(100, 120), size=280)
    Image.fromarray(img).save(src / "sweep.png")
    Image.fromarray(scene_photos()["rocket"]).save(src / "rocket.jpg", quality=92)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "m.csv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "manifest",
            str(src),
            "--out",
            str(out),
            "--aspect-ratio",
            "1:1",
            "--aspect-ratio",
            "16:9",
            "--analyze",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "analysed:" in r.stdout and "0 flat, 2 gradient, 2 scene" in r.stdout
    assert "2 not judged" in r.stdout and "2 rows with a product box" in r.stdout
    nulls = pcsv.ConvertOptions(strings_can_be_null=True)
    rows = {row["id"]: row for row in pcsv.read_csv(out, convert_options=nulls).to_pylist()}
    sweep = rows["sweep-1x1"]
    assert (sweep["backdrop_kind"], sweep["backdrop_sides"]) == ("gradient", "ltrb")
    assert (sweep["subject_x0"], sweep["subject_y0"], sweep["subject_x1"], sweep["subject_y1"]) == (
        box.x0,
        box.y0,
        box.x1,
        box.y1,
    )
    assert rows["sweep-16x9"]["subject_x1"] == box.x1  # the same image, every target
    assert (
        rows["rocket-1x1"]["backdrop_kind"] == "scene" and rows["rocket-1x1"]["subject_x0"] is None
    )
    assert rows["broken-1x1"]["backdrop_kind"] is None  # the run says why, with its code


def test_analyze_an_existing_manifest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    img, box = product_photo("white")
    Image.fromarray(img).save(src / "a.png")
    # a cut-out: transparency around the product is its box; the fill is left to the run
    rgba = np.zeros((300, 400, 4), np.uint8)
    rgba[50:250, 120:300] = (200, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(src / "cutout.png")
    rows = [
        {"id": "one", "image": "a.png", "aspect_ratio": "1:1", "sku": "S1"},
        {"id": "two", "image": "a.png", "width": 900, "height": 900, "sku": "S1"},
        {"id": "cut", "image": "cutout.png", "aspect_ratio": "1:1", "sku": "S2"},
    ]
    cfg = write_config(
        tmp_path / "job.yaml",
        {
            "input": {
                "manifest": write_manifest(tmp_path / "m.parquet", rows),
                "image_root": str(src),
            },
            "output": {"uri": str(tmp_path / "out"), "passthrough_columns": ["sku"]},
        },
    )
    table = api.analyze_manifest(cfg, str(tmp_path / "analysed.parquet"))
    got = {r["id"]: r for r in pq.read_table(tmp_path / "analysed.parquet").to_pylist()}
    assert got == {r["id"]: r for r in table.to_pylist()}
    assert got["one"]["image"] == "a.png" and got["one"]["sku"] == "S1"  # the rows as given
    assert got["one"]["backdrop_kind"] == got["two"]["backdrop_kind"] == "flat"
    assert (got["two"]["subject_x0"], got["two"]["subject_y1"]) == (box.x0, box.y1)
    assert got["cut"]["backdrop_kind"] is None
    assert (got["cut"]["subject_x0"], got["cut"]["subject_y0"]) == (120, 50)
    assert (got["cut"]["subject_x1"], got["cut"]["subject_y1"]) == (300, 250)
    # the CLI form: the config's manifest, analysed
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "manifest",
            "--analyze",
            "--from",
            cfg,
            "--out",
            str(tmp_path / "again.parquet"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "again.parquet").to_pylist() == table.to_pylist()


@pytest.mark.ray
def test_analysis_on_ray_equals_the_threads(tmp_path, ray_local):
    """The same stage as Ray Data tasks over the cluster (several blocks): the same columns."""
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i, kind in enumerate(["white", "vignette", "sweep", "shadow"] * 2):
        img, _ = product_photo(kind, seed=i, at=(60 + 7 * i, 90))
        Image.fromarray(img).save(src / f"{kind}-{i}.png")
        rows.append({"id": f"r{i}", "image": f"{kind}-{i}.png", "aspect_ratio": "16:9"})
    Image.fromarray(scene_photos()["rocket"]).save(src / "rocket.jpg", quality=92)
    rows.append({"id": "scene", "image": "rocket.jpg", "aspect_ratio": "16:9"})
    rows.append({"id": "again", "image": "white-0.png", "aspect_ratio": "1:1"})
    cfg = {
        "input": {"manifest": write_manifest(tmp_path / "m.parquet", rows), "image_root": str(src)},
        "output": {"uri": str(tmp_path / "out")},
        "runtime": {"block_rows": 3},
    }
    here = api.analyze_manifest(cfg, on_ray=False)
    there = api.analyze_manifest(cfg, on_ray=True)
    assert there.to_pylist() == here.to_pylist()
    kinds = {r["id"]: r["backdrop_kind"] for r in here.to_pylist()}
    assert kinds["scene"] == "scene" and kinds["r0"] == "flat" and kinds["again"] == "flat"
    assert sum(r["subject_x0"] is not None for r in here.to_pylist()) == 9
