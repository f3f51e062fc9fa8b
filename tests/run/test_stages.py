"""Stages called directly (no Ray): plan -> load -> outpaint -> write, and backends."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.backends import Job
from pipeline.backends.canvas import compose
from pipeline.backends.classical import ClassicalBackend, push_pull
from pipeline.backends.solid import SolidBackend
from pipeline.io import manifest
from pipeline.io.outputs import OutputStore, latest_per_id
from pipeline.plan.stage import PlanStage
from pipeline.run.stages import LoadStage, OutpaintStage, WriteStage

from ..conftest import make_config, read_png, write_manifest


def pipeline_once(cfg, table, run_id="r1"):
    store = OutputStore(cfg.output.uri)
    t = PlanStage(cfg, identify=True)(table)
    t = LoadStage.from_config(cfg)(t)
    t = OutpaintStage.from_config(cfg)(t)
    return WriteStage.from_config(cfg, store, run_id)(t)


def test_stages_without_ray(tmp_path, photos):
    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {"id": "a", "image": str(photos["chelsea"]), "width": 500, "height": 333},
            {
                "id": "b",
                "image": str(photos["chelsea"]),
                "aspect_ratio": "1:1",
                "output_format": "jpeg",
            },
            {"id": "x", "image": str(tmp_path / "none.png"), "aspect_ratio": "1:1"},
        ],
    )
    cfg = make_config(tmp_path, m)
    out = pipeline_once(cfg, manifest.read(cfg))
    rows = {r["id"]: r for r in out.to_pylist()}
    assert [rows[k]["status"] for k in "abx"] == ["ok", "ok", "failed"]
    assert "ref_pixels" not in out.column_names and "out_pixels" not in out.column_names
    a = read_png(tmp_path / "out" / "images" / "a.png")
    assert a.shape == (333, 500, 3)
    src = read_png(photos["chelsea"])  # 451 x 300, centred at (24, 16)
    assert np.array_equal(a[16:316, 24:475], src)
    with Image.open(tmp_path / "out" / "images" / "b.jpg") as im:
        assert im.size == (451, 451)


def test_batched_equals_single(tmp_path, photos):
    rows = [
        {"id": f"r{i}", "image": str(photos["coffee"]), "width": 700 + 16 * i, "height": 500}
        for i in range(5)
    ]
    m = write_manifest(tmp_path / "m.parquet", rows)
    cfg = make_config(tmp_path, m, runtime={"batch_size": 4})
    plan = LoadStage.from_config(cfg)(PlanStage(cfg, identify=True)(manifest.read(cfg)))
    stage = OutpaintStage.from_config(cfg)
    whole = stage(plan).column("out_pixels").to_pylist()
    single = [stage(plan.slice(i, 1)).column("out_pixels")[0].as_py() for i in range(plan.num_rows)]
    assert whole == single


def test_alpha_preserved_in_png(tmp_path):
    img = Image.new("RGBA", (200, 100), (200, 30, 30, 255))
    img.paste((0, 0, 0, 0), (0, 0, 50, 100))
    src = tmp_path / "logo.png"
    img.save(src)
    m = write_manifest(
        tmp_path / "m.parquet", [{"id": "logo", "image": str(src), "width": 300, "height": 200}]
    )
    cfg = make_config(tmp_path, m, output={"alpha": "preserve"})
    pipeline_once(cfg, manifest.read(cfg))
    with Image.open(tmp_path / "out" / "images" / "logo.png") as im:
        out = np.asarray(im)
    assert out.shape == (200, 300, 4)
    assert (out[50:150, 50:100, 3] == 0).all() and (out[50:150, 100:250, 3] == 255).all()
    assert (out[:50, :, 3] == 255).all()  # generated area opaque
    flat_cfg = make_config(tmp_path, m, output={"uri": str(tmp_path / "flat")})
    pipeline_once(flat_cfg, manifest.read(flat_cfg))
    with Image.open(tmp_path / "flat" / "images" / "logo.png") as im:
        flat = np.asarray(im)
    assert flat.shape == (200, 300, 3) and tuple(flat[100, 60]) == (
        255,
        255,
        255,
    )  # onto the background


def test_write_is_atomic_and_leaves_no_temporaries(tmp_path):
    store = OutputStore(str(tmp_path / "o"))
    uri = store.images.write("x.png", b"\x89PNG data")
    assert (
        uri.endswith("/images/x.png")
        and (tmp_path / "o" / "images" / "x.png").read_bytes() == b"\x89PNG data"
    )
    assert (
        os.listdir(tmp_path / "o" / "images") == ["x.png"]
        and os.listdir(tmp_path / "o" / "_tmp") == []
    )


def test_latest_per_id_keeps_duplicate_rows_of_the_newest_run():
    t = pa.table(
        {
            "id": ["a", "a", "b", "a", "a", "a"],
            "error_code": [None, "duplicate_id", None, None, "duplicate_id", "duplicate_id"],
            "manifest_row": [0, 2, 1, 0, 2, 3],
            "run_id": ["r1", "r1", "r1", "r2", "r2", "r2"],
            "completed_at": [1.0, 1.0, 1.0, 2.0, 2.0, 2.0],
        }
    )
    got = latest_per_id(t).to_pylist()
    assert sorted((r["id"], r["manifest_row"], r["run_id"]) for r in got) == [
        ("a", 0, "r2"),
        ("a", 2, "r2"),
        ("a", 3, "r2"),
        ("b", 1, "r1"),
    ]


# ------------------------------------------------------------------ backends


def studio_gradient(h=240, w=360):
    """A studio-like backdrop: smooth vertical and radial shading plus mild noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((xx - w / 2) / w, (yy - h / 2) / h)
    base = 220 - 60 * yy / h - 40 * r
    rng = np.random.default_rng(0)
    img = np.stack([base, base * 0.97, base * 0.92], axis=2) + rng.normal(0, 1.5, (h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_classical_continues_a_studio_backdrop(tmp_path):
    truth = studio_gradient()
    ref = truth[40:200, 60:300]
    canvas, mask = compose(ref, 360, 240, 60, 40)
    cfg = make_config(tmp_path, "m")  # model defaults
    out = ClassicalBackend(cfg.model).outpaint([Job(ref, 360, 240, 60, 40, seed=1)])[0]
    err = np.abs(out.astype(int) - truth.astype(int))[mask].mean()
    flat = np.abs(np.full_like(truth, int(ref.mean())).astype(int) - truth.astype(int))[mask].mean()
    assert err < 8.0 and err < 0.5 * flat, (err, flat)
    assert np.array_equal(out[~mask], canvas[~mask])
    # no streaks: rows of the generated side band are not copies of one edge pixel
    band = out[:30, 60:300].astype(int)
    assert np.abs(np.diff(band, axis=1)).mean() < 6  # smooth...
    assert band.std(axis=0).mean() > 0.5  # ...but not constant along columns


def test_classical_deterministic_per_seed(tmp_path):
    ref = studio_gradient()[50:150, 50:150]
    cfg = make_config(tmp_path, "m")
    b = ClassicalBackend(cfg.model)
    one = b.outpaint([Job(ref, 256, 200, 60, 40, seed=7)])[0]
    assert np.array_equal(one, b.outpaint([Job(ref, 256, 200, 60, 40, seed=7)])[0])
    assert not np.array_equal(one, b.outpaint([Job(ref, 256, 200, 60, 40, seed=8)])[0])


def test_push_pull_fills_everything_smoothly():
    img = np.zeros((64, 64, 3), np.float32)
    known = np.zeros((64, 64), bool)
    img[:, :32] = 100.0
    img[:, 32:] = 200.0
    known[20:40, 10:20] = True
    known[20:40, 44:54] = True
    out = push_pull(img, known)
    assert np.isfinite(out).all()
    assert abs(out[30, 15, 0] - 100) < 1e-3 and abs(out[30, 49, 0] - 200) < 1e-3
    assert 100 < out[30, 32, 0] < 200  # between the two, no hole


def test_solid_edge_extends_border_pixels(tmp_path):
    ref = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    cfg = make_config(tmp_path, "m", model={"backend": "solid"})
    out = SolidBackend(cfg.model).outpaint([Job(ref, 20, 16, 5, 2, seed=0)])[0]
    assert np.array_equal(out[0, 5:15], ref[0]) and np.array_equal(out[15, 5:15], ref[-1])
    assert np.array_equal(out[2:14, 0], ref[:, 0]) and np.array_equal(out[0, 0], ref[0, 0])


def test_separate_stages_equal_fused(tmp_path, photos):
    """Through Arrow between stages (actor pipelines) == in memory (ProcessStage)."""
    from pipeline.run.stages import ProcessStage

    rows = [
        {"id": "a", "image": str(photos["coffee"]), "width": 700, "height": 500},
        {"id": "b", "image": str(photos["camera"]), "aspect_ratio": "1:1", "output_format": "webp"},
        {"id": "c", "image": str(tmp_path / "gone.png"), "aspect_ratio": "1:1"},
    ]
    m = write_manifest(tmp_path / "m.parquet", rows)
    cfg = make_config(tmp_path, m)
    planned = PlanStage(cfg, identify=True)(manifest.read(cfg))
    sep = pipeline_once(cfg, manifest.read(cfg), run_id="x")
    sep_bytes = {p: (tmp_path / "out" / "images" / p).read_bytes() for p in ("a.png", "b.webp")}
    fused_cfg = make_config(tmp_path, m, output={"uri": str(tmp_path / "fused")})
    fused = ProcessStage.from_config(fused_cfg, OutputStore(fused_cfg.output.uri), "x")(planned)
    assert fused.column_names == sep.column_names
    assert (
        fused.column("status").to_pylist()
        == sep.column("status").to_pylist()
        == ["ok", "ok", "failed"]
    )
    assert {
        p: (tmp_path / "fused" / "images" / p).read_bytes() for p in ("a.png", "b.webp")
    } == sep_bytes
