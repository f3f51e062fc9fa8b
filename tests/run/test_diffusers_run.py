"""``outpaint run`` with ``model.backend: diffusers`` on the session's real Ray: tiny
random-weight checkpoints of two families on model actors, every row accounted for, canvases
exactly the size asked with the reference untouched outside the feather band, the outputs
labelled as trained-media composites, the licence in ``run.json`` and on the review page,
the quality gate retrying (new seeds) and holding as with flux-fill, resume by hash."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import cli
from pipeline import config as config_mod
from pipeline.common.box import Box
from pipeline.review.quality import untouched

from ..conftest import read_png, write_manifest

pytestmark = pytest.mark.ray
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


@pytest.fixture(scope="module")
def source(photos, tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for n in ("coffee", "chelsea"):
        img = read_png(photos[n])
        Image.fromarray(img[:120, :160]).save(src / f"{n}.png")
    return src


def _rows():
    return [
        {
            "id": "wide",
            "image": "coffee.png",
            "width": 250,
            "height": 130,
            "prompt": "a cafe table",
        },
        {"id": "tall-fast", "image": "chelsea.png", "width": 170, "height": 200, "mode": "fast"},
        {"id": "same", "image": "coffee.png", "width": 160, "height": 120},  # nothing to generate
        {"id": "bad", "image": "missing.png", "width": 200, "height": 200},
    ]


@pytest.mark.parametrize("family", ["z-image", "sdxl"])
def test_outpaint_run_with_a_diffusers_checkpoint(
    tiny_inpaint, source, tmp_path, ray_local, family, capsys
):
    manifest = write_manifest(tmp_path / "m.parquet", _rows())
    out = tmp_path / "out"
    doc = {
        "input": {"manifest": manifest, "image_root": str(source)},
        "output": {"uri": str(out)},
        "model": {
            "backend": "diffusers",
            "path": tiny_inpaint[family],
            "dtype": "float32",
            "steps": 2,
            "fast_steps": 1,
        },
        "runtime": {"batch_size": 4, "num_actors": 1, "num_cpus_per_actor": 1},
        "quality": {"max_attempts": 1},
    }
    job = tmp_path / "job.json"
    job.write_text(json.dumps(doc))  # YAML is a superset of JSON
    assert cli.main(["run", str(job)]) == 0
    said = "".join(capsys.readouterr())  # stdout and stderr
    assert "[outpaint] model licence: " in said and "known to permit commercial use" in said
    meta = {r["id"]: r for r in pq.read_table(out / "metadata").to_pylist()}
    assert sorted(meta) == ["bad", "same", "tall-fast", "wide"]  # every row, once
    assert meta["bad"]["status"] == "failed" and meta["bad"]["error_code"] == "image_not_found"
    assert meta["same"]["status"] == "ok" and meta["same"]["generated"] is False
    for rid in ("wide", "tall-fast"):
        row = meta[rid]
        assert row["status"] == "ok" and row["generated"] and row["route"] == "model"
        assert row["model"] == f"diffusers:{tiny_inpaint[family]}"
        assert row["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
        path = out / "images" / f"{rid}.png"
        assert row["output_uri"] == str(path)  # one attempt: nothing held
        data = path.read_bytes()
        assert TRAINED.encode() in data  # the IPTC term, in the file's XMP
        got = read_png(path)
        assert got.shape == (row["canvas_height"], row["canvas_width"], 3)
        ref = read_png(source / os.path.basename(row["image"]))
        y, x, f = row["visible_y0"], row["visible_x0"], row["feather_px"]
        sides = Box.visible(row).sides(row["canvas_width"], row["canvas_height"])
        y0, y1, x0, x1 = untouched(ref.shape[0], ref.shape[1], sides, f)
        assert np.array_equal(got[y + y0 : y + y1, x + x0 : x + x1], ref[y0:y1, x0:x1]), rid
    assert meta["wide"]["steps"] == 2 and meta["tall-fast"]["steps"] == 1
    run = json.loads((out / "run.json").read_text())
    expected = "apache-2.0" if family == "z-image" else "openrail++"
    assert (
        run["model_license"]["id"] == expected and run["model_license"]["verdict"] == "commercial"
    )
    assert f"model licence: {expected}" in (out / "report.html").read_text()
    # a rerun skips every done row by its hash: no model call
    assert cli.main(["run", str(job), "--quiet"]) == 0
    again = json.loads((out / "run.json").read_text())
    assert again["counts"]["skipped"] == 3 and again["images_written"] == 0


def test_the_gate_retries_a_diffusers_row_with_new_seeds_and_holds_it(
    tiny_inpaint, source, tmp_path, ray_local
):
    """Random weights make noise: the score fails it every time, so the row is retried with
    the next attempts' seeds (the backend is reseedable) and then held for a reviewer."""
    manifest = write_manifest(tmp_path / "m.parquet", _rows()[:1])
    cfg = config_mod.from_dict(
        {
            "input": {"manifest": manifest, "image_root": str(source)},
            "output": {"uri": str(tmp_path / "out")},
            "model": {
                "backend": "diffusers",
                "path": tiny_inpaint["flux2-klein"],
                "dtype": "float32",
            },
            "runtime": {"batch_size": 2, "num_actors": 1, "num_cpus_per_actor": 1},
            "quality": {"max_attempts": 3},
        }
    )
    from pipeline.run.runner import run

    result = run(cfg, quiet=True)
    row = pq.read_table(tmp_path / "out" / "metadata").to_pylist()[0]
    assert row["quality_attempts"] == 3 and row["review_status"] == "held"
    assert row["steps"] == 4  # the distilled klein's recipe
    assert result["counts"]["retries"] == 2
    assert os.listdir(tmp_path / "out" / "held") == ["wide.png"]
    shutil.rmtree(tmp_path / "out")
