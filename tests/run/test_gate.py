"""The quality gate (best of N) with a real diffusers model: the tiny random-weight FLUX
Fill checkpoint makes noise, which fails the score every time, so its rows are retried
with the next attempt's seed (the failing rows of a batch together, one backend call per
attempt) and then held under held/; a plain studio backdrop beside them passes at once."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import api
from pipeline.backends import spec_of
from pipeline.review.gate import attempt_seed
from pipeline.run.generate import OutpaintStage, gate_of

from ..backdrops import product_photo, scene_photos
from ..conftest import write_manifest


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    scenes = scene_photos()
    for name in ("astronaut", "chelsea"):
        Image.fromarray(scenes[name][:160, :128]).save(d / f"{name}.png")
    Image.fromarray(product_photo("white", 128, 160, size=80)[0]).save(d / "white.png")
    return [
        {"id": n, "image": str(d / f"{n}.png"), "width": 192, "height": 160}
        for n in ("astronaut", "chelsea", "white")
    ]


def _config(tmp_path, model, manifest, **quality) -> dict:
    return {
        "input": {"manifest": manifest},
        "output": {"uri": str(tmp_path / "out")},
        "model": {"backend": "flux-fill", "path": model, "dtype": "float32", "steps": 1},
        "runtime": {"batch_size": 4, "num_actors": 1},
        "quality": {"max_attempts": 3, **quality},
    }


@pytest.mark.ray
def test_noise_is_retried_then_held_and_a_studio_backdrop_published(
    tmp_path, rows, tiny_flux, ray_local
):
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    result = api.run(_config(tmp_path, tiny_flux, manifest), quiet=True)
    out = tmp_path / "out"
    meta = {r["id"]: r for r in pq.read_table(out / "metadata").to_pylist()}
    for rid in ("astronaut", "chelsea"):
        r = meta[rid]
        assert r["status"] == "ok" and r["route"] == "model"
        assert r["quality_attempts"] == 3 and r["review_status"] == "held"
        assert r["quality_pass"] is False and r["quality_distance"] > 1
        assert r["output_uri"] == str(out / "held" / f"{rid}.png")
        plan_seed = api.plan(manifest, _config(tmp_path, tiny_flux, manifest))
        own = dict(zip(plan_seed["id"].to_pylist(), plan_seed["seed"].to_pylist()))[rid]
        assert r["seed"] in {attempt_seed(own, a) for a in range(3)}
    white = meta["white"]
    assert white["route"] == "backdrop" and white["review_status"] == "passed"
    assert white["quality_attempts"] == 1 and white["quality_pass"] is True
    assert sorted(os.listdir(out / "images")) == ["white.png"]  # nothing held is published
    assert sorted(os.listdir(out / "held")) == ["astronaut.png", "chelsea.png"]
    summary = json.loads((out / "run.json").read_text())
    assert summary["counts"]["retries"] == 4  # two rows, two more attempts each
    assert summary["manifest"]["by_review"] == {"held": 2, "passed": 1}
    assert result.by_review == {"held": 2, "passed": 1}
    # a rerun skips held rows like any done row
    again = api.run(_config(tmp_path, tiny_flux, manifest), quiet=True)
    assert again.skipped == 3 and again.images_written == 0


def test_retries_are_batched_and_reproducible(tmp_path, rows, tiny_flux):
    """Without Ray: the model stage asked once per attempt for all the failing rows of its
    batch, each with its attempt's seed; the same run again keeps the same pixels."""
    manifest = write_manifest(tmp_path / "m.parquet", rows[:2])
    cfg = api.load_config(_config(tmp_path, tiny_flux, manifest))
    stages = api.stages(cfg, run_id="r")
    planned = stages.plan(pq.read_table(manifest).append_column("manifest_row", pa.array([0, 1])))
    routed = stages.route(stages.load(planned))

    calls = []

    def generate():
        model, context, intent, _ = stages.outpaint_args
        backend = spec_of(model).build(model, context)
        real = backend.outpaint

        def spy(jobs):
            calls.append([(j.row_id, j.seed) for j in jobs])
            return real(jobs)

        backend.outpaint = spy
        stage = OutpaintStage(model, context, intent, gate_of(cfg), backend=backend)
        return stage(routed)

    first = generate()
    assert [len(c) for c in calls] == [2, 2, 2]  # the first pass, then two retries together
    seeds = dict(zip(planned["id"].to_pylist(), planned["seed"].to_pylist()))
    for attempt, call in enumerate(calls):
        assert call == [(rid, attempt_seed(seeds[rid], attempt)) for rid, _ in call]
    assert first["quality_attempts"].to_pylist() == [3, 3]
    calls.clear()
    second = generate()
    assert second["out_pixels"].to_pylist() == first["out_pixels"].to_pylist()
    assert second["seed"].to_pylist() == first["seed"].to_pylist()


def test_the_gate_s_score_is_the_written_image_s_and_made_once(
    tmp_path, rows, tiny_flux, monkeypatch
):
    """The gate judges each attempt as the write stage will write it (colours matched,
    the reference feathered back in) and passes its kept attempt's score on: the write
    stage scores nothing again, and the metadata's columns are those of the image on disk."""
    import numpy as np

    from pipeline.common.box import Box
    from pipeline.review import score
    from pipeline.review.compose import effective_feather
    from pipeline.run import write

    manifest = write_manifest(tmp_path / "m.parquet", rows[:2])
    raw = _config(tmp_path, tiny_flux, manifest)
    raw["output"]["color_match"] = True  # the written pixels are not the model's
    cfg = api.load_config(raw)
    stages = api.stages(cfg, run_id="r")
    planned = stages.plan(pq.read_table(manifest).append_column("manifest_row", pa.array([0, 1])))
    model, context, intent, gate = stages.outpaint_args
    generated = OutpaintStage(model, context, intent, gate)(stages.route(stages.load(planned)))
    assert generated["quality_attempts"].to_pylist() == [3, 3]
    assert generated["quality_pass"].to_pylist() == [False, False]  # judged in the model stage

    calls = []
    monkeypatch.setattr(write, "judge", lambda *a: calls.append(a) or score.judge(*a))
    meta = stages.write(generated).to_pylist()
    assert calls == []  # each kept attempt scored once: by the gate
    thresholds = cfg.quality.thresholds
    for r in meta:
        assert r["review_status"] == "held" and r["quality_distance"] > 1
        written = np.asarray(Image.open(r["output_uri"]).convert("RGB"))
        box = Box.visible(r)
        feather = max(1, effective_feather(cfg.output.feather_px, box.height, box.width))
        want = score.judge(written, box, thresholds, feather)
        assert {k: r[k] for k in want} == want


def test_one_attempt_is_today_s_behaviour(tmp_path, rows, tiny_flux):
    manifest = write_manifest(tmp_path / "m.parquet", rows[:1])
    cfg = api.load_config(_config(tmp_path, tiny_flux, manifest, max_attempts=1))
    stages = api.stages(cfg, run_id="r")
    planned = stages.plan(pq.read_table(manifest).append_column("manifest_row", pa.array([0])))
    model, context, intent, gate = stages.outpaint_args
    assert gate.max_attempts == 1 and cfg.quality.holds is False
    out = OutpaintStage(model, context, intent, gate)(stages.route(stages.load(planned)))
    assert out["quality_attempts"].to_pylist() == [1]
    assert out["seed"].to_pylist() == planned["seed"].to_pylist()
