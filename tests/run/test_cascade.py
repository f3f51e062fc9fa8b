"""``model.route: cascade``: backdrop fill -> scene fill -> the backend, each row made by
the first step whose output passes the score. With the tiny random-weight FLUX Fill
checkpoint as the last step (its noise fails the score, so its rows are held): a studio
backdrop never reaches the scene fill, a textured scene (real gravel and grass) never
reaches the model, an object-rich scene (the astronaut) goes to the model, and a texture
whose scene fill fails the score is handed on to the model."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import api
from pipeline.backends import spec_of
from pipeline.backends.scene import scene_fill
from pipeline.common.box import Box
from pipeline.review import score
from pipeline.review.compose import effective_feather
from pipeline.run import write
from pipeline.run.generate import OutpaintStage, gate_of

from ..backdrops import product_photo, scene_photos
from ..conftest import write_manifest
from ..quality_set import _photos

IDS = ("white", "gravel", "grass", "astronaut")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    d = tmp_path_factory.mktemp("cascade")
    textures = _photos()
    Image.fromarray(product_photo("white", 128, 160, size=80)[0]).save(d / "white.png")
    Image.fromarray(textures["gravel"][100:260, 100:228]).save(d / "gravel.png")
    Image.fromarray(textures["grass"][200:360, 300:428]).save(d / "grass.png")
    Image.fromarray(scene_photos()["astronaut"][:160, 100:228]).save(d / "astronaut.png")
    return [{"id": n, "image": str(d / f"{n}.png"), "width": 192, "height": 160} for n in IDS]


def _config(tmp_path, model, manifest, **model_extra) -> dict:
    return {
        "input": {"manifest": manifest},
        "output": {"uri": str(tmp_path / "out")},
        "model": {
            "backend": "flux-fill",
            "path": model,
            "dtype": "float32",
            "steps": 1,
            "route": "cascade",
            **model_extra,
        },
        "runtime": {"batch_size": 4, "num_actors": 1},
        "quality": {"max_attempts": 2},
    }


def _stages(tmp_path, tiny_flux, rows, **quality):
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    raw = _config(tmp_path, tiny_flux, manifest)
    raw["quality"].update(quality)
    cfg = api.load_config(raw)
    stages = api.stages(cfg, run_id="r")
    index = pa.array(range(len(rows)))
    planned = stages.plan(pq.read_table(manifest).append_column("manifest_row", index))
    return cfg, stages, planned


def _spied_stage(cfg, stages, calls):
    model, context, intent, _ = stages.outpaint_args
    backend = spec_of(model).build(model, context)
    real = backend.outpaint

    def spy(jobs):
        calls.extend(j.row_id for j in jobs)
        return real(jobs)

    backend.outpaint = spy
    return OutpaintStage(model, context, intent, gate_of(cfg), backend=backend)


def test_each_row_is_made_by_the_first_step_that_can(tmp_path, rows, tiny_flux, monkeypatch):
    cfg, stages, planned = _stages(tmp_path, tiny_flux, rows)
    routed = stages.route(stages.load(planned))
    calls = []
    generated = _spied_stage(cfg, stages, calls)(routed)
    judged = []
    monkeypatch.setattr(write, "judge", lambda *a: judged.append(a) or score.judge(*a))
    meta = {r["id"]: r for r in stages.write(generated).to_pylist()}

    assert {k: meta[k]["route"] for k in IDS} == {
        "white": "backdrop",
        "gravel": "scene",
        "grass": "scene",
        "astronaut": "model",
    }
    assert set(calls) == {"astronaut"}  # the textures and the backdrop never reach the model
    assert meta["white"]["border_variation"] is None  # a backdrop never reaches the scene fill
    assert meta["astronaut"]["border_variation"] > cfg.model.scene.max_variation
    assert meta["astronaut"]["scene_distance"] is None  # not a texture: not tried
    assert meta["astronaut"]["review_status"] == "held"  # the model's noise fails
    assert len(judged) == 1  # the backdrop row; the scene rows were judged when routed
    for rid in ("gravel", "grass"):
        r = meta[rid]
        assert r["border_variation"] <= cfg.model.scene.max_variation
        assert r["model"] == "scene" and r["steps"] == 0 and r["quality_attempts"] == 1
        assert r["quality_pass"] is True and r["review_status"] == "passed"
        assert r["scene_distance"] == r["quality_distance"] <= 1
        assert r["digital_source_type"] == "compositeSynthetic"  # no trained model made it
        written = np.asarray(Image.open(r["output_uri"]).convert("RGB"))
        box = Box.visible(r)
        src = np.asarray(Image.open(dict((x["id"], x["image"]) for x in rows)[rid]))
        want = scene_fill(src, r["canvas_width"], r["canvas_height"], box.x0, box.y0, r["seed"])
        assert np.array_equal(written, want)  # the scene fill's pixels, the original exact
        feather = max(1, effective_feather(cfg.output.feather_px, box.height, box.width))
        score_now = score.judge(written, box, cfg.quality.thresholds, feather)
        assert {k: r[k] for k in score_now} == score_now


def test_a_scene_fill_that_fails_the_score_is_handed_on(tmp_path, rows, tiny_flux):
    """Thresholds no output passes: the textures are tried, fail and go to the model."""
    strict = {"thresholds": {"structure": 1e-6, "flat": 1e-6, "blur": 1e-6}}
    cfg, stages, planned = _stages(tmp_path, tiny_flux, rows[1:3], **strict)
    calls = []
    generated = _spied_stage(cfg, stages, calls)(stages.route(stages.load(planned)))
    meta = {r["id"]: r for r in stages.write(generated).to_pylist()}
    for rid in ("gravel", "grass"):
        assert meta[rid]["route"] == "model" and meta[rid]["scene_distance"] > 1
        assert meta[rid]["model"].startswith("flux-fill")
    assert sorted(calls) == ["grass", "grass", "gravel", "gravel"]  # two attempts each


@pytest.mark.ray
def test_a_run_counts_its_steps_and_what_they_saved(tmp_path, rows, tiny_flux, ray_local):
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    result = api.run(_config(tmp_path, tiny_flux, manifest), quiet=True)
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    counts = summary["counts"]
    assert counts["by_route"] == {"backdrop": 1, "model": 1, "scene": 2}
    assert counts["cascade"] == {
        "scene_tried": 2,
        "scene_kept": 2,
        "escalated": 0,
        "model_rows_saved_against_auto": 2,
        "model_rows_saved_against_model": 3,
    }
    assert counts["retries"] == 1  # the astronaut's second attempt only
    assert result.by_review == {"held": 1, "passed": 3}
    again = api.run(_config(tmp_path, tiny_flux, manifest), quiet=True)
    assert again.skipped == 4 and again.images_written == 0


def test_max_variation_zero_turns_the_scene_step_off(tmp_path, rows, tiny_flux):
    manifest = write_manifest(tmp_path / "m.parquet", rows[1:2])
    cfg = api.load_config(_config(tmp_path, tiny_flux, manifest, scene={"max_variation": 0}))
    stages = api.stages(cfg, run_id="r")
    planned = stages.plan(pq.read_table(manifest).append_column("manifest_row", pa.array([0])))
    routed = stages.route(stages.load(planned))
    assert routed["route"].to_pylist() == ["model"]
    assert routed["scene_distance"].to_pylist() == [None]


def test_the_plan_s_sample_routes_rows_as_the_run_does(tmp_path, rows, tiny_flux):
    """``outpaint plan --sample``: the rows are loaded and routed by the run's own stages;
    with every row sampled the shares are the run's routes (test above)."""
    from pipeline.run.estimate import format_sample, wilson

    manifest = write_manifest(tmp_path / "m.parquet", rows)
    cfg = api.load_config(_config(tmp_path, tiny_flux, manifest))
    plan = api.plan(None, cfg)
    sample = api.plan_sample(plan, cfg, 10)
    assert sample["population"] == 4 and sample["sampled"] == 4
    got = {k: v["rows"] for k, v in sample["routes"].items()}
    assert got == {"backdrop": 1, "scene": 2, "model": 1, "failed": 0}
    assert sample["projected_model_rows"]["estimate"] == 1
    assert sample["routes"]["scene"]["low"] < 0.5 < sample["routes"]["scene"]["high"]
    assert "scene 50%" in format_sample(sample)
    two = api.plan_sample(plan, cfg, 2)  # drawn with the run's seed: the same two again
    assert two == api.plan_sample(plan, cfg, 2) and two["sampled"] == 2
    assert not (tmp_path / "out").exists()  # nothing written
    lo, hi = wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert wilson(0, 10)[0] == 0.0 and round(wilson(0, 10)[1], 4) == 0.2775
