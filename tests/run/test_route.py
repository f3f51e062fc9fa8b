"""Runs over product photos: plain studio backdrops continued without the model, scenes
and products cut by the frame sent to it; no model call, actor or API task for a backdrop
row; ``anchor: subject`` placing the product; the amazon-main preset's rows meeting it or
saying why not (docs/product-photos.md)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import api
from pipeline.common.box import Box, Sides
from pipeline.io import backdrop

from ..backdrops import KINDS, product_photo, scene_photos
from ..bfl_server import BflServer
from ..conftest import BFL_KEY_ENV, read_png, write_manifest

ALL = Sides(True, True, True, True)
PLAIN = list(KINDS)  # white, vignette, sweep, shadow
MODEL = ["astronaut", "chelsea", "cut-off"]  # scenes, and a product cut by the left edge


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Product shots on the four backdrops, two scene photos, a product cut by the frame."""
    d = tmp_path_factory.mktemp("catalogue")
    for i, kind in enumerate(KINDS):
        Image.fromarray(product_photo(kind, seed=i)[0]).save(d / f"{kind}.png")
    scenes = scene_photos()
    for name in ("astronaut", "chelsea"):
        Image.fromarray(scenes[name]).save(d / f"{name}.png")
    Image.fromarray(product_photo("white", at=(-90, 150))[0]).save(d / "cut-off.png")
    return d


def rows_of(directory, names, **target) -> list[dict]:
    target = target or {"aspect_ratio": "16:9"}  # left and right generated on portraits
    return [{"id": n, "image": str(directory / f"{n}.png"), **target} for n in names]


def metadata(out) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out / "metadata").to_pylist()}


def image(out, row) -> np.ndarray:
    return read_png(out / "images" / os.path.basename(row["output_uri"]))


@pytest.mark.ray
def test_plain_backdrops_are_continued_without_the_model(tmp_path, catalogue, ray_local):
    """The CPU default, no analysis: each row judged once decoded."""
    m = write_manifest(tmp_path / "m.parquet", rows_of(catalogue, PLAIN + MODEL))
    data = {"input": {"manifest": m}, "output": {"uri": str(tmp_path / "out")}}
    result = api.run(data, quiet=True)
    meta = metadata(tmp_path / "out")
    assert {r["status"] for r in meta.values()} == {"ok"}
    assert result.summary["counts"]["by_route"] == {"backdrop": 4, "model": 3}
    for rid, r in meta.items():
        out = image(tmp_path / "out", r)
        assert out.shape == (r["canvas_height"], r["canvas_width"], 3)
        assert r["ref_max_abs_diff"] == 0  # the photo untouched outside the feather band
        if rid in MODEL:
            assert (r["route"], r["model"], r["backdrop_kind"]) == ("model", "classical", "scene")
            continue
        assert (r["route"], r["model"], r["steps"]) == ("backdrop", "backdrop", 0)
        assert r["backdrop_kind"] == ("gradient" if rid in ("vignette", "sweep") else "flat")
        # a backdrop fill holds no trained model's output (IPTC: a composite with synthetic parts)
        assert r["digital_source_type"] == "compositeSynthetic"
        assert 0.8 <= r["seam_score"] <= 1.25, (rid, r["seam_score"])
        # the margin beside the photo: the photo's own border colour (its first columns, as
        # the fill continues the backdrop from the nearest point of the photo) and grain
        box = Box.visible(r)
        margin = out[box.y0 : box.y1, box.x0 - 40 : box.x0]
        edge = read_png(catalogue / f"{rid}.png")[:, :4]
        gap = np.abs(margin.mean(axis=(0, 1)) - edge.mean(axis=(0, 1))).max()
        assert gap < 1.0, (rid, gap)
        grain = backdrop.noise_sigma([(margin, 0, 0)])
        assert abs(grain - r["backdrop_noise"]) <= 0.25 * r["backdrop_noise"], (rid, grain)
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["counts"]["by_route"] == {"backdrop": 4, "model": 3}


@pytest.mark.ray
def test_backdrop_rows_never_reach_the_model(tmp_path, catalogue, tiny_flux, ray_local):
    """FLUX on actors: rows the analysed manifest routes to the fill start no actor; with
    all of them so routed, no weights are loaded (the model directory is gone)."""
    table, _ = api.make_manifest(
        [str(catalogue)], str(tmp_path / "m.parquet"), aspect_ratios=["16:9"], analyze=True
    )
    assert (
        dict(zip(table["id"].to_pylist(), table["backdrop_kind"].to_pylist()))["sweep"]
        == "gradient"
    )
    model = tmp_path / "model"
    shutil.copytree(tiny_flux, model)
    data = {
        "input": {"manifest": str(tmp_path / "m.parquet")},
        "output": {"uri": str(tmp_path / "out")},
        "model": {"backend": "flux-fill", "path": str(model), "dtype": "float32", "steps": 1},
        "runtime": {"batch_size": 2, "num_actors": 1},
    }
    summary = api.plan_summary(api.plan(str(tmp_path / "m.parquet"), data), data)
    assert summary["routes"] == {"backdrop": 4, "model": 3, "at_load": 0}
    result = api.run(data, quiet=True)
    meta = metadata(tmp_path / "out")
    assert {r["status"] for r in meta.values()} == {"ok"}
    generated_by = {rid: r["model_actor"] for rid, r in meta.items()}
    # the model's calls: one per scene row, none for a backdrop row
    assert {rid for rid, a in generated_by.items() if a is not None} == set(MODEL)
    assert all(meta[rid]["model"] == "backdrop" for rid in PLAIN)
    assert all(meta[rid]["model"].startswith("flux-fill:") for rid in MODEL)
    assert result.summary["model_busy"] is not None
    # only backdrop rows: no actor, no weights
    plain = write_manifest(
        tmp_path / "plain.parquet", [r for r in table.to_pylist() if r["id"] in PLAIN]
    )
    shutil.rmtree(model)
    data.update(input={"manifest": plain}, output={"uri": str(tmp_path / "plain")})
    again = api.run(data, quiet=True)
    assert again.summary["manifest"]["by_status"] == {"ok": 4, "rejected": 0, "failed": 0}
    assert again.summary["model_busy"] is None
    assert {r["model"] for r in metadata(tmp_path / "plain").values()} == {"backdrop"}


@pytest.mark.ray
def test_backdrop_rows_submit_no_api_task(tmp_path, catalogue, ray_local):
    rows = rows_of(catalogue, PLAIN + MODEL)
    with BflServer(key=os.environ[BFL_KEY_ENV], latency=(0.05, 0.1)) as srv:
        data = {
            "input": {"manifest": write_manifest(tmp_path / "m.parquet", rows)},
            "output": {"uri": str(tmp_path / "out")},
            "model": {
                "backend": "bfl-api",
                "api": {"endpoint": srv.endpoint, "key_env": BFL_KEY_ENV, "poll_interval_s": 0.05},
            },
        }
        result = api.run(data, quiet=True)
        submitted = len(srv.submissions)
    meta = metadata(tmp_path / "out")
    assert {r["status"] for r in meta.values()} == {"ok"}
    assert submitted == len(MODEL) and result.summary["api"]["submitted"] == len(MODEL)
    for rid in PLAIN:
        r = meta[rid]
        assert r["api_task_id"] is None and not r["cost_credits"] and r["model"] == "backdrop"
    assert result.summary["api"]["cost_credits"] == 2.5 * len(MODEL)


@pytest.mark.ray
@pytest.mark.parametrize("target", [{"width": 1200, "height": 600}, {"aspect_ratio": "16:9"}])
def test_anchor_subject_places_the_product_at_its_fill(tmp_path, target, ray_local):
    img, truth = product_photo("white", width=800, height=700, size=600, at=(90, 40))
    (tmp_path / "src").mkdir()
    Image.fromarray(img).save(tmp_path / "src" / "cup.png")
    table, _ = api.make_manifest(
        [str(tmp_path / "src")], str(tmp_path / "m.parquet"), analyze=True, **_target_args(target)
    )
    assert table["subject_x0"].to_pylist() == [truth.x0]
    data = {
        "input": {"manifest": str(tmp_path / "m.parquet")},
        "output": {"uri": str(tmp_path / "out")},
        "defaults": {"anchor": "subject", "auto_crop": True},
        "sizing": {"subject_fill": 0.85},
    }
    api.run(data, quiet=True)
    (r,) = metadata(tmp_path / "out").values()
    assert r["status"] == "ok" and r["route"] == "backdrop"
    out = image(tmp_path / "out", r)
    box = backdrop.subject_box(out, backdrop.analyse(out, ALL))
    W, H = r["canvas_width"], r["canvas_height"]
    assert abs((box.x0 + box.x1) / 2 - W / 2) <= 1 and abs((box.y0 + box.y1) / 2 - H / 2) <= 1
    assert abs(max(box.width, box.height) - 0.85 * min(W, H)) <= 1


def _target_args(target: dict) -> dict:
    if "aspect_ratio" in target:
        return {"aspect_ratios": [target["aspect_ratio"]]}
    return {"size": (target["width"], target["height"])}


@pytest.mark.ray
def test_amazon_main_meets_the_preset_or_says_why(tmp_path, ray_local):
    src = tmp_path / "src"
    src.mkdir()
    # shot on white (255): the margins it gets are pure white too, the photo untouched
    big = product_photo("blown", width=1800, height=1500, size=1600, at=(100, -50), noise=0.7)[0]
    Image.fromarray(big).save(src / "big.png")
    Image.fromarray(product_photo("blown")[0]).save(src / "small.png")  # a 271 px product
    Image.fromarray(
        product_photo("white", width=1800, height=1500, size=1600, at=(100, -50))[0]
    ).save(
        src / "off-white.png"
    )  # a 245 backdrop: a pure-white margin beside it would be a visible step
    Image.fromarray(product_photo("vignette", width=1800, height=1800, size=1600)[0]).save(
        src / "grey.png"
    )
    Image.fromarray(scene_photos()["chelsea"]).save(src / "scene.png")
    api.make_manifest([str(src)], str(tmp_path / "m.parquet"), aspect_ratios=["1:1"], analyze=True)
    data = {
        "preset": "amazon-main",
        "input": {"manifest": str(tmp_path / "m.parquet")},
        "output": {"uri": str(tmp_path / "out")},
    }
    api.run(data, quiet=True)
    meta = metadata(tmp_path / "out")
    big = meta["big"]
    assert big["status"] == "ok" and big["canvas_width"] == big["canvas_height"] >= 1600
    assert big["output_format"] == "jpeg"
    out = np.asarray(Image.open(tmp_path / "out" / "images" / "big.jpg").convert("RGB"))
    box = Box.visible(big)
    assert box.y0 > 16 and box.y1 < big["canvas_height"] - 16  # generated above and below
    assert (out[: box.y0 - 16] >= 254).all() and (out[box.y1 + 16 :] >= 254).all()  # pure white
    assert meta["off-white"]["error_code"] == "preset_not_met"
    assert "#f5f5f5" in meta["off-white"]["error_message"]
    assert (meta["small"]["error_code"], meta["small"]["status"]) == (
        "preset_too_small",
        "rejected",
    )
    assert "sizing.min_side = 1,600 px" in meta["small"]["error_message"]
    assert (
        meta["grey"]["error_code"] == "preset_not_met"
        and "max_color_distance" in meta["grey"]["error_message"]
    )
    # a grey sweep that fills the canvas (nothing generated) is still no white backdrop
    assert meta["grey"]["error_code"] == "preset_not_met"
    assert meta["scene"]["error_code"] == "preset_too_small"  # 451 px: planning says so first
    assert not {"grey.jpg", "off-white.jpg", "scene.jpg", "small.jpg"} & set(
        os.listdir(tmp_path / "out" / "images")
    )


@pytest.mark.ray
def test_route_backdrop_fails_rows_that_are_not_plain(tmp_path, catalogue, ray_local):
    rows = rows_of(catalogue, ["white", "chelsea", "cut-off"])
    data = {
        "input": {"manifest": write_manifest(tmp_path / "m.parquet", rows)},
        "output": {"uri": str(tmp_path / "out")},
        "model": {"route": "backdrop"},
    }
    api.run(data, quiet=True)
    meta = metadata(tmp_path / "out")
    assert meta["white"]["status"] == "ok" and meta["white"]["model"] == "backdrop"
    for rid in ("chelsea", "cut-off"):
        r = meta[rid]
        assert (r["status"], r["error_code"], r["backdrop_kind"]) == (
            "failed",
            "backdrop_not_plain",
            "scene",
        )
        assert "the border to continue (left, right) is not a plain backdrop" in r["error_message"]


@pytest.mark.ray
def test_the_review_page_filters_by_route(tmp_path, catalogue, ray_local):
    import re
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    m = write_manifest(tmp_path / "m.parquet", rows_of(catalogue, ["white", "sweep", "chelsea"]))
    api.run({"input": {"manifest": m}, "output": {"uri": str(tmp_path / "out")}}, quiet=True)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "generated by backdrop: <b>2</b>" in page and "generated by model: <b>1</b>" in page
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'p'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"file://{tmp_path / 'out' / 'report.html'}#route=model",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-route="model"' in dom
    shown = re.findall(r'<tr data-route="(\w+)"(?: hidden="")?>', dom)
    hidden = re.findall(r'<tr data-route="(\w+)" hidden="">', dom)
    assert sorted(shown) == ["backdrop", "backdrop", "model"] and hidden == ["backdrop", "backdrop"]
