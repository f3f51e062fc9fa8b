"""The FLUX Fill backend on CPU with a tiny pipeline of random weights (real diffusers
classes, loaded by the same code as real weights)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.backends import Job
from pipeline.backends.canvas import contrast_fill
from pipeline.common.box import Box
from pipeline.review.quality import untouched

from ..conftest import read_png, write_manifest

torch = pytest.importorskip("torch")


def flux_cfg(path, **model):
    return config_mod.from_dict(
        {
            "input": {"manifest": "m"},
            "output": {"uri": "o"},
            "model": {
                "backend": "flux-fill",
                "path": path,
                "dtype": "float32",
                "steps": 3,
                "fast_steps": 2,
                **model,
            },
        }
    )


@pytest.fixture(scope="module")
def backend(tiny_flux):
    from pipeline.backends.flux import FluxFillBackend

    return FluxFillBackend(flux_cfg(tiny_flux).model, prompts=["", "a red cup"])


@pytest.fixture
def ref(photos):
    return read_png(photos["coffee"])[:150, :200]


def test_fast_mode_never_encodes_the_full_canvas(backend, ref):
    shapes = []
    hook = backend.vae.encoder.register_forward_pre_hook(
        lambda m, a: shapes.append(tuple(a[0].shape[-2:]))
    )
    try:
        # canvas 333 x 250, reference at (60, 50): pad_left = (-60) % 16 = 4, pad_top = 14
        out = backend.outpaint(
            [Job(ref, 333, 250, 60, 50, seed=1, mode="fast", steps=2, pad_left=4, pad_top=14)]
        )
    finally:
        hook.remove()
    assert out[0].shape == (250, 333, 3)
    assert (256, 336) not in shapes and (
        264,
        352,
    ) not in shapes  # neither the canvas nor its aligned form
    assert (160, 208) in shapes  # the reference, padded to the 16 grid
    assert all(h * w <= 160 * 208 for h, w in shapes)


def test_high_mode_encodes_the_aligned_canvas_never_resized(backend, ref):
    shapes = []
    hook = backend.vae.encoder.register_forward_pre_hook(
        lambda m, a: shapes.append(tuple(a[0].shape))
    )
    try:
        out = backend.outpaint(
            [
                Job(ref, 333, 250, 60, 50, seed=1, mode="high", steps=2),
                Job(ref, 333, 250, 10, 20, seed=2, mode="high", steps=2),
            ]
        )
    finally:
        hook.remove()
    assert shapes == [(2, 3, 256, 336)]  # one batched encode, padded right/bottom
    assert [o.shape for o in out] == [(250, 333, 3)] * 2


def test_deterministic_and_batch_equals_single(backend, ref):
    jobs = lambda: [
        Job(ref, 240, 200, 20, 30, seed=s, mode=m, steps=2, pad_left=(-20) % 16, pad_top=(-30) % 16)
        for s, m in ((5, "high"), (6, "high"), (7, "fast"))
    ]
    a = backend.outpaint(jobs())
    b = backend.outpaint(jobs())
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # same seed, same output
    assert not np.array_equal(a[0], a[1])  # other seed, other output
    for k, job in enumerate(jobs()):
        single = backend.outpaint([job])[0]
        # batched float32 GEMMs may round differently: at most 1 level of 255
        assert np.abs(single.astype(int) - a[k].astype(int)).max() <= 1


def test_prompts_embedded_once_and_encoders_freed(backend, ref):
    assert backend.pipe.text_encoder is None and backend.pipe.text_encoder_2 is None
    assert set(backend._prompt_cache) == {"", "a red cup"}
    out = backend.outpaint([Job(ref, 240, 200, 20, 30, seed=5, prompt="a red cup", steps=2)])[0]
    plain = backend.outpaint([Job(ref, 240, 200, 20, 30, seed=5, prompt="", steps=2)])[0]
    assert not np.array_equal(out, plain)  # the prompt reaches the transformer
    with pytest.raises(RuntimeError, match="not known"):
        backend.outpaint([Job(ref, 240, 200, 20, 30, seed=5, prompt="unseen", steps=2)])


def test_fill_rule_per_checkpoint(tiny_flux, tmp_path, ref):
    from pipeline.backends.flux import FluxFillBackend

    assert (
        FluxFillBackend(flux_cfg(tiny_flux).model, prompts=[""]).fill == "grey"
    )  # Fill-dev's convention
    contrast_model = tmp_path / "contrast-model"
    shutil.copytree(tiny_flux, contrast_model)
    (contrast_model / "outpaint_profile.json").write_text('{"fill": "contrast"}')
    b = FluxFillBackend(flux_cfg(str(contrast_model)).model, prompts=[""])
    assert b.fill == "contrast"
    green_border = np.zeros((100, 100, 3), np.uint8)
    green_border[:] = (20, 230, 40)
    jobs = [
        Job(green_border, 160, 128, 30, 14, seed=1, steps=1),
        Job(ref, 240, 200, 20, 30, seed=1, steps=1),
    ]
    b.outpaint(jobs)
    assert jobs[0].fill_color != "green" and jobs[0].fill_color == contrast_fill(green_border)
    assert (
        FluxFillBackend(flux_cfg(tiny_flux, fill="blue").model, prompts=[""]).fill == "blue"
    )  # config wins


def test_contrast_fill_rule():
    for colour, avoid in (
        ((0, 255, 0), "green"),
        ((0, 0, 255), "blue"),
        ((255, 0, 255), "magenta"),
    ):
        img = np.zeros((50, 50, 3), np.uint8)
        img[:] = colour
        assert contrast_fill(img) != avoid


def test_model_path_errors_and_s3_sync(tiny_flux, tmp_path, s3_bucket):
    from pipeline.backends.flux import resolve_model_path

    with pytest.raises(FileNotFoundError, match="local cache"):
        resolve_model_path("black-forest-labs/not-here-xyz")
    fs, bucket, opts = s3_bucket
    fs.put(tiny_flux.rstrip("/") + "/", f"{bucket}/models/tiny/", recursive=True)
    cache = tmp_path / "cache"
    local = resolve_model_path(f"s3://{bucket}/models/tiny", opts, str(cache))
    assert os.path.exists(os.path.join(local, "transformer", "config.json"))
    assert os.path.exists(os.path.join(local, ".outpaint-complete"))
    fs.rm(f"{bucket}/models/tiny", recursive=True)  # a second actor on the node: no new download
    assert resolve_model_path(f"s3://{bucket}/models/tiny", opts, str(cache)) == local


@pytest.mark.ray
def test_outpaint_run_with_flux_actors(tiny_flux, tmp_path, photos, ray_local, s3_bucket):
    fs, bucket, opts = s3_bucket
    fs.put(tiny_flux.rstrip("/") + "/", f"{bucket}/models/tiny/", recursive=True)
    src = tmp_path / "src"
    src.mkdir()
    for n in ("coffee", "chelsea", "camera"):
        shutil.copy(photos[n], src / f"{n}.png")
    rows = [
        {"id": "odd-high", "image": "coffee.png", "width": 777, "height": 555},
        {"id": "odd-fast", "image": "coffee.png", "width": 701, "height": 433, "mode": "fast"},
        {
            "id": "cat-169",
            "image": "chelsea.png",
            "aspect_ratio": "16:9",
            "prompt": "a cat",
            "num_variants": 2,
        },
        {"id": "cam-fast", "image": "camera.png", "width": 640, "height": 640, "mode": "fast"},
        {"id": "cam-same", "image": "camera.png", "width": 512, "height": 512},
        {"id": "cam-high-2", "image": "camera.png", "width": 640, "height": 640},
    ]
    m = write_manifest(tmp_path / "m.parquet", rows)
    data = {
        "input": {"manifest": m, "image_root": str(src)},
        "output": {"uri": str(tmp_path / "out")},
        "model": {
            "backend": "flux-fill",
            "path": f"s3://{bucket}/models/tiny",
            "storage_options": opts,
            "dtype": "float32",
            "steps": 2,
            "fast_steps": 1,
            "cache_dir": str(tmp_path / "cache"),
        },
        "runtime": {"batch_size": 4, "num_actors": 1, "num_cpus_per_actor": 1, "block_rows": 3},
    }
    from pipeline.run.runner import run

    result = run(config_mod.from_dict(data), quiet=True)
    assert result["manifest"]["by_status"] == {"ok": 6, "rejected": 0, "failed": 0}, result[
        "counts"
    ]
    meta = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "metadata").to_pylist()}
    assert [os.path.basename(u) for u in meta["cat-169"]["output_uris"]] == [
        "cat-169-0.png",
        "cat-169-1.png",
    ]
    assert not np.array_equal(
        read_png(tmp_path / "out" / "images" / "cat-169-0.png"),
        read_png(tmp_path / "out" / "images" / "cat-169-1.png"),
    )
    for rid, row in meta.items():
        got = read_png(tmp_path / "out" / "images" / os.path.basename(row["output_uri"]))
        assert got.shape == (row["canvas_height"], row["canvas_width"], 3), rid
        src_img = read_png(src / os.path.basename(row["image"]))
        ref = (
            np.asarray(
                Image.fromarray(src_img).resize(
                    (row["reference_width"], row["reference_height"]), Image.LANCZOS
                )
            )
            if row["scale"] != 1
            else src_img
        )
        y, x = row["visible_y0"], row["visible_x0"]
        sides = Box.visible(row).sides(row["canvas_width"], row["canvas_height"])
        f = row["feather_px"]
        y0, y1, x0, x1 = untouched(ref.shape[0], ref.shape[1], sides, f)
        # original untouched outside the feather band; the band only on generated sides
        assert np.array_equal(got[y + y0 : y + y1, x + x0 : x + x1], ref[y0:y1, x0:x1]), rid
        assert row["ref_max_abs_diff"] == 0
        if row["generated"]:
            assert f == min(8, ref.shape[0] // 4, ref.shape[1] // 4)
            assert not np.array_equal(
                got[y : y + ref.shape[0], x : x + ref.shape[1]], ref
            )  # the band blends
        assert row["model"].startswith("flux-fill:") and row["fill_color"] == (
            "grey" if row["generated"] else None
        )
    assert meta["odd-fast"]["steps"] == 1 and meta["odd-high"]["steps"] == 2
    assert meta["cam-same"]["generated"] is False
    # the model actor's busy clock: recorded on generated rows, reported per actor
    actors = {r["model_actor"] for r in meta.values() if r["generated"]}
    assert len(actors) == 1 and None not in actors and meta["cam-same"]["model_actor"] is None
    busy = result["model_busy"]
    assert list(busy["actors"]) == list(actors) and 0 < busy["fraction"] <= 1
    assert 0 < busy["loop_s"] <= busy["actor_s"]
    first = {
        p: (tmp_path / "out" / "images" / p).read_bytes()
        for p in os.listdir(tmp_path / "out" / "images")
    }
    data["output"]["mode"] = "overwrite"
    # one call at a time per actor, smaller batches: the same bytes
    data["runtime"].update(actor_concurrency=1, batch_size=2)
    run(config_mod.from_dict(data), quiet=True)
    again = {
        p: (tmp_path / "out" / "images" / p).read_bytes()
        for p in os.listdir(tmp_path / "out" / "images")
    }
    assert again == first  # deterministic per seed, across runs, batching and actor concurrency


def test_gpu_benchmark_smoke_on_cpu(tmp_path):
    """benchmarks/gpu_throughput.py runs end to end at tiny size without a GPU."""
    import subprocess
    import sys

    bench = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "gpu_throughput.py")
    out = os.path.join(tmp_path, "gpu.json")
    r = subprocess.run(
        [sys.executable, bench, "--tiny", "--json", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        figures = json.load(f)
    assert figures["e2e"]["ok"] == figures["e2e"]["rows"] == 8
    assert figures["vs_eager"]["optimised"]["max_abs"] <= 1  # on CPU: fused QKV, the same sums
    assert set(figures["s_per_image"]) == {
        "naive high",
        "eager high",
        "optimised high",
        "optimised fast",
    }
    for line in (
        "naive high",
        "eager high",
        "optimised high",
        "optimised fast",
        "ours fast / ours high",
        "optimised vs eager (same seeds)",
        "end to end: 8/8 rows ok",
    ):
        assert line in r.stdout, line


def test_failing_row_in_a_batch_fails_alone(tiny_flux, tmp_path, photos):
    """A backend exception for one row: the batch is retried row by row and only that row
    ends generation_failed (here: a prompt not embedded before the encoders were freed)."""

    from pipeline.io import manifest
    from pipeline.plan.stage import PlanStage
    from pipeline.run.stages import LoadStage, OutpaintStage

    rows = [
        {
            "id": f"r{i}",
            "image": str(photos["coffee"]),
            "width": 640,
            "height": 448,
            "prompt": "unseen" if i == 1 else "",
        }
        for i in range(3)
    ]
    m = write_manifest(tmp_path / "m.parquet", rows)
    cfg = config_mod.from_dict(
        {
            "input": {"manifest": m},
            "output": {"uri": str(tmp_path / "o")},
            "model": {"backend": "flux-fill", "path": tiny_flux, "dtype": "float32", "steps": 1},
            "runtime": {"batch_size": 3},
        }
    )
    planned = LoadStage.from_config(cfg)(PlanStage(cfg, identify=True)(manifest.read(cfg)))
    out = OutpaintStage.from_config(cfg, prompts=[""])(planned).to_pylist()
    assert [r["status"] for r in out] == ["ok", "failed", "ok"]
    assert out[1]["error_code"] == "generation_failed" and "unseen" in out[1]["error_message"]
    assert out[1]["out_pixels"] is None and all(len(r["out_pixels"]) == 1 for r in (out[0], out[2]))


def _actor_pids() -> list[int]:
    """Ray's Data actor processes (their process titles name the map worker)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if "MapWorker" in cmd and "OutpaintStage" in cmd:
            pids.append(int(pid))
    return pids


@pytest.mark.ray
@pytest.mark.slow
def test_killed_actor_is_restarted_and_its_rows_redone(tiny_flux, tmp_path, photos, ray_local):
    import signal
    import threading
    import time

    from pipeline.run.runner import run

    rows = [
        {
            "id": f"k{i:02d}",
            "image": str(photos["coffee"]),
            "width": 640 + 16 * (i % 3),
            "height": 448,
        }
        for i in range(12)
    ]
    m = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    cfg = config_mod.from_dict(
        {
            "input": {"manifest": m},
            "output": {"uri": str(out)},
            "model": {"backend": "flux-fill", "path": tiny_flux, "dtype": "float32", "steps": 2},
            "runtime": {"batch_size": 1, "block_rows": 1, "num_actors": 1},
        }
    )
    killed, titles = [], []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            imgs = os.listdir(out / "images") if (out / "images").exists() else []
            pids = _actor_pids()
            if len(imgs) >= 2 and pids:
                for pid in pids:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        titles.append(f.read().decode(errors="replace"))
                    os.kill(pid, signal.SIGKILL)  # the actor dies mid-run, as on an OOM kill
                killed.extend(pids)
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    result = run(cfg, quiet=True)
    t.join(5)
    assert killed, "no actor process was found to kill"
    # the model actor does model work only: decoding and planning run in CPU tasks before it
    assert all("LoadStage" not in t and "PlanStage" not in t for t in titles), titles
    assert result["manifest"]["by_status"] == {"ok": 12, "rejected": 0, "failed": 0}
    meta = pq.read_table(out / "metadata")
    assert sorted(meta.column("id").to_pylist()) == [f"k{i:02d}" for i in range(12)]
    assert sorted(os.listdir(out / "images")) == [f"k{i:02d}.png" for i in range(12)]


@pytest.mark.ray
def test_no_model_load_when_nothing_needs_generating(tmp_path, photos, tiny_flux, ray_local):
    """An all-done rerun, and a run whose rows all fill their canvas, start no model
    actor and load no weights: they succeed with the model directory gone."""
    import shutil

    from pipeline.run.runner import run

    model = tmp_path / "model"
    shutil.copytree(tiny_flux, model)
    rows = [
        {"id": f"g{i}", "image": str(photos["coffee"]), "width": 640, "height": 448}
        for i in range(3)
    ]
    m = write_manifest(tmp_path / "m.parquet", rows)
    data = {
        "input": {"manifest": m},
        "output": {"uri": str(tmp_path / "out")},
        "model": {"backend": "flux-fill", "path": str(model), "dtype": "float32", "steps": 1},
        "runtime": {"batch_size": 2, "num_actors": 1},
    }
    first = run(config_mod.from_dict(data), quiet=True)
    assert first["manifest"]["by_status"]["ok"] == 3 and first["model_busy"] is not None
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "images").iterdir()}
    shutil.rmtree(model)  # any weight load now fails
    again = run(config_mod.from_dict(data), quiet=True)
    assert (
        again["work_rows"] == 0 and again["counts"]["skipped"] == 3 and again["model_busy"] is None
    )
    assert again["manifest"]["by_status"] == {"ok": 3, "rejected": 0, "failed": 0}
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "images").iterdir()} == before
    # rows whose reference fills the canvas need no model either (coffee is 400x600)
    same = write_manifest(
        tmp_path / "same.parquet",
        [
            {"id": f"s{i}", "image": str(photos["coffee"]), "width": 600, "height": 400}
            for i in range(2)
        ],
    )
    data.update(input={"manifest": same}, output={"uri": str(tmp_path / "out2")})
    r = run(config_mod.from_dict(data), quiet=True)
    assert (
        r["manifest"]["by_status"] == {"ok": 2, "rejected": 0, "failed": 0}
        and r["model_busy"] is None
    )
    assert np.array_equal(
        read_png(tmp_path / "out2" / "images" / "s0.png"), read_png(photos["coffee"])
    )
