"""``outpaint run`` end to end on a real local Ray: real photos, local files and a
moto S3 server, resume, output modes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.config import ConfigError
from pipeline.io.imageio import resize
from pipeline.run.runner import run

from ..conftest import read_png, write_config, write_manifest

pytestmark = pytest.mark.ray


@pytest.fixture
def photo_dir(tmp_path, photos):
    """A few real photos as local files (PNG and JPEG sources)."""
    d = tmp_path / "src"
    d.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "camera"):
        shutil.copy(photos[name], d / f"{name}.png")
    shutil.copy(photos["rocket"], d / "rocket.jpg")
    return d


def rows_for(root: str) -> list[dict]:
    return [
        {"id": "astro-169", "image": "astronaut.png", "aspect_ratio": "16:9"},
        {"id": "coffee-sq", "image": "coffee.png", "aspect_ratio": "1:1", "output_format": "webp"},
        {"id": "coffee-odd", "image": "coffee.png", "width": 777, "height": 555},
        {"id": "cat-fast", "image": "chelsea.png", "width": 640, "height": 480, "mode": "fast"},
        {
            "id": "cam-crop",
            "image": "camera.png",
            "width": 600,
            "height": 400,
            "reference_offset_x": -50,
            "reference_offset_y": -20,
            "auto_crop": True,
        },
        {"id": "cam-same", "image": "camera.png", "width": 512, "height": 512},
        {"id": "rocket-scaled", "image": "rocket.jpg", "aspect_ratio": "8:1"},
        {
            "id": "rocket-jpeg",
            "image": "rocket.jpg",
            "aspect_ratio": "1:1",
            "output_format": "jpeg",
        },
        {"id": "nope", "image": "missing.png", "aspect_ratio": "1:1"},
        {"id": "../evil", "image": "coffee.png", "aspect_ratio": "1:1"},
        {"id": "too-big", "image": "coffee.png", "width": 4096, "height": 4096},
    ]


def make_cfg(tmp_path, root, out, backend="classical", **extra):
    m = write_manifest(tmp_path / "manifest.parquet", rows_for(str(root)))
    data = {
        "input": {"manifest": m, "image_root": str(root)},
        "output": {"uri": str(out)},
        "model": {"backend": backend},
        "sizing": {"max_pixels": 1_000_000},
        "runtime": {"block_rows": 3},
    }
    for k, v in extra.items():
        data.setdefault(k, {}).update(v)
    return config_mod.from_dict(data)


def metadata(out) -> dict[str, dict]:
    t = pq.read_table(os.path.join(out, "metadata"))
    return {
        r["id"] + ("" if r["error_code"] != "duplicate_id" else f"#{r['manifest_row']}"): r
        for r in t.to_pylist()
    }


def expected_reference(src_path, row) -> np.ndarray:
    """The source, scaled and cropped as planned: what the output must contain exactly."""
    src = read_png(src_path)
    src = resize(src, row["reference_width"], row["reference_height"])
    x0, y0 = row["visible_x0"] - row["offset_x"], row["visible_y0"] - row["offset_y"]
    x1, y1 = row["visible_x1"] - row["offset_x"], row["visible_y1"] - row["offset_y"]
    return src[y0:y1, x0:x1]


def test_local_run_end_to_end(tmp_path, photo_dir, ray_local):
    out = tmp_path / "out"
    cfg = make_cfg(tmp_path, photo_dir, out)
    result = run(cfg, quiet=True)
    meta = metadata(out)
    assert len(meta) == 11 == result["metadata_rows"]  # one row per manifest row, whatever its fate
    assert result["model_busy"] is None and all(
        r["model_actor"] is None for r in meta.values()
    )  # CPU backend
    assert {k: v["status"] for k, v in meta.items() if v["status"] != "ok"} == {
        "nope": "failed",
        "../evil": "rejected",
        "too-big": "rejected",
    }
    assert meta["nope"]["error_code"] == "image_not_found"
    assert meta["../evil"]["error_code"] == "invalid_id"
    assert (
        meta["too-big"]["error_code"] == "canvas_too_large"
        and "reduce width or height" in meta["too-big"]["error_message"]
    )
    assert result["manifest"]["by_status"] == {"ok": 8, "rejected": 2, "failed": 1}
    assert result["images_written"] == 8

    images = sorted(os.listdir(out / "images"))
    assert images == sorted(
        [
            "astro-169.png",
            "coffee-sq.webp",
            "coffee-odd.png",
            "cat-fast.png",
            "cam-crop.png",
            "cam-same.png",
            "rocket-scaled.png",
            "rocket-jpeg.jpg",
        ]
    )
    for rid, row in meta.items():
        if row["status"] != "ok":
            assert row["output_uri"] is None
            continue
        path = out / "images" / os.path.basename(row["output_uri"])
        with Image.open(path) as im:
            assert im.size == (row["canvas_width"], row["canvas_height"]), (
                rid
            )  # exactly the size asked
        assert row["output_bytes"] == path.stat().st_size and row["request_hash"]
        vw, vh = row["visible_x1"] - row["visible_x0"], row["visible_y1"] - row["visible_y0"]
        assert row["model"] == "classical"
        assert row["feather_px"] == (min(8, vh // 4, vw // 4) if row["generated"] else 0)
        assert (row["seam_score"] is not None) == row["generated"]
        if row["output_format"] == "png":
            assert row["ref_max_abs_diff"] == 0 and row["ref_mean_abs_diff"] == 0.0
        if row["output_format"] != "png":
            continue
        got = read_png(path)
        ref = expected_reference(photo_dir / row["image"].rsplit("/", 1)[-1], row)
        vy0, vx0 = row["visible_y0"], row["visible_x0"]
        assert np.array_equal(got[vy0 : vy0 + ref.shape[0], vx0 : vx0 + ref.shape[1]], ref), rid
        if row["generated"]:  # something was actually generated around it
            mask = np.ones(got.shape[:2], bool)
            mask[vy0 : vy0 + ref.shape[0], vx0 : vx0 + ref.shape[1]] = False
            assert mask.any() and got[mask].std() > 0.5
    assert meta["cam-same"]["generated"] is False
    assert meta["rocket-scaled"]["scale"] < 1.0
    assert (
        meta["rocket-scaled"]["canvas_width"] * meta["rocket-scaled"]["canvas_height"] <= 1_000_000
    )
    assert (meta["cam-crop"]["visible_x0"], meta["cam-crop"]["visible_y0"]) == (0, 0)
    # run.json: config as run, versions, counts, timings
    import json

    rj = json.loads((out / "run.json").read_text())
    assert rj["config"]["model"]["backend"] == "classical" and rj["versions"]["ray"]
    assert rj["counts"]["by_code"] == {"image_not_found": 1, "invalid_id": 1, "canvas_too_large": 1}
    # nothing temporary left behind where users look
    assert not [p for p in os.listdir(out / "images") if not p.endswith((".png", ".jpg", ".webp"))]
    assert os.listdir(out / "_tmp") == []


def test_rerun_skips_done_rows_and_redoes_deleted(tmp_path, photo_dir, ray_local):
    out = tmp_path / "out"
    cfg = make_cfg(tmp_path, photo_dir, out, runtime={"seed": 3})
    run(cfg, quiet=True)
    before = {
        p: (os.stat(out / "images" / p).st_mtime_ns, (out / "images" / p).read_bytes())
        for p in os.listdir(out / "images")
    }
    time.sleep(0.01)

    again = run(cfg, quiet=True)
    assert again["counts"]["skipped"] == 8 and again["images_written"] == 0
    assert again["counts"]["processed"] == 3  # only rows not ok are re-checked (cheap: no images)
    after = {
        p: (os.stat(out / "images" / p).st_mtime_ns, (out / "images" / p).read_bytes())
        for p in os.listdir(out / "images")
    }
    assert after == before  # nothing rewritten, nothing duplicated
    assert len(metadata(out)) == 11

    for p in ("coffee-odd.png", "rocket-jpeg.jpg"):
        os.remove(out / "images" / p)
    third = run(cfg, quiet=True)
    assert third["images_written"] == 2 and third["counts"]["skipped"] == 6
    final = {p: (out / "images" / p).read_bytes() for p in os.listdir(out / "images")}
    assert final == {p: b for p, (_, b) in before.items()}  # redone identically (deterministic)
    assert os.stat(out / "images" / "astro-169.png").st_mtime_ns == before["astro-169.png"][0]
    meta = metadata(out)
    assert len(meta) == 11 and len(pq.read_table(out / "metadata").column("id")) == 11


def test_changed_source_or_parameter_is_redone(tmp_path, photo_dir, ray_local):
    out = tmp_path / "out"
    cfg = make_cfg(tmp_path, photo_dir, out)
    run(cfg, quiet=True)
    # a changed source: new bytes for the cat
    Image.open(photo_dir / "chelsea.png").transpose(Image.FLIP_LEFT_RIGHT).save(
        photo_dir / "chelsea.png"
    )
    r = run(cfg, quiet=True)
    assert r["images_written"] == 1 and r["counts"]["skipped"] == 7
    # a changed parameter (run seed) changes every generated row's request
    r = run(
        config_mod.from_dict(
            {**config_mod.dump(cfg), "runtime": {**config_mod.dump(cfg)["runtime"], "seed": 9}}
        ),
        quiet=True,
    )
    assert r["images_written"] == 8 and r["counts"]["skipped"] == 0


def test_output_modes(tmp_path, photo_dir, ray_local):
    out = tmp_path / "out"
    cfg = make_cfg(tmp_path, photo_dir, out, backend="solid")
    run(cfg, quiet=True)
    strict = config_mod.from_dict(
        {
            **config_mod.dump(cfg),
            "output": {**config_mod.dump(cfg)["output"], "mode": "error_if_exists"},
        }
    )
    with pytest.raises(ConfigError, match="already holds outputs"):
        run(strict, quiet=True)
    over = config_mod.from_dict(
        {**config_mod.dump(cfg), "output": {**config_mod.dump(cfg)["output"], "mode": "overwrite"}}
    )
    r = run(over, quiet=True)
    assert r["images_written"] == 8 and r["counts"]["skipped"] == 0 and len(metadata(out)) == 11
    # a new default format: each redone row's old file goes; images/ is what the metadata
    # says. A row whose source vanished fails and keeps its earlier image.
    os.remove(photo_dir / "camera.png")
    data = config_mod.dump(cfg)
    r = run(
        config_mod.from_dict({**data, "defaults": {**data["defaults"], "output_format": "jpeg"}}),
        quiet=True,
    )
    meta = metadata(out)
    assert meta["cam-crop"]["status"] == meta["cam-same"]["status"] == "failed"
    current = {os.path.basename(m["output_uri"]) for m in meta.values() if m["status"] == "ok"}
    assert {"astro-169.jpg", "coffee-odd.jpg", "coffee-sq.webp", "rocket-jpeg.jpg"} <= current
    assert sorted(os.listdir(out / "images")) == sorted(current | {"cam-crop.png", "cam-same.png"})


def test_solid_backend_fills_with_colour(tmp_path, photo_dir, ray_local):
    out = tmp_path / "out"
    cfg = make_cfg(
        tmp_path,
        photo_dir,
        out,
        backend="solid",
        model={"solid_mode": "color", "solid_color": [10, 200, 30]},
    )
    run(cfg, quiet=True)
    row = metadata(out)["coffee-odd"]
    got = read_png(out / "images" / "coffee-odd.png")
    assert tuple(got[0, 0]) == (10, 200, 30) and tuple(got[-1, -1]) == (10, 200, 30)
    assert row["fill_color"] == "#0ac81e"


def test_s3_end_to_end(tmp_path, photos, s3_bucket, ray_local):
    fs, bucket, opts = s3_bucket
    for name in ("coffee", "camera"):
        fs.put_file(str(photos[name]), f"{bucket}/images/{name}.png")
    rows = [
        {"id": "c1", "image": "coffee.png", "aspect_ratio": "1:1"},
        {"id": "c2", "image": "camera.png", "width": 640, "height": 512, "output_format": "jpeg"},
        {"id": "gone", "image": "nothing.png", "aspect_ratio": "1:1"},
    ]
    local = write_manifest(tmp_path / "m.parquet", rows)
    fs.put_file(local, f"{bucket}/manifests/day=1/part-0.parquet")
    cfg = config_mod.from_dict(
        {
            "input": {
                "manifest": f"s3://{bucket}/manifests/",
                "image_root": f"s3://{bucket}/images",
                "storage_options": opts,
            },
            "output": {"uri": f"s3://{bucket}/out", "storage_options": opts},
        }
    )
    r = run(cfg, quiet=True)
    assert r["manifest"]["by_status"] == {"ok": 2, "rejected": 0, "failed": 1}
    fs.invalidate_cache()
    assert sorted(fs.ls(f"{bucket}/out/images")) == [
        f"{bucket}/out/images/c1.png",
        f"{bucket}/out/images/c2.jpg",
    ]
    with fs.open(f"{bucket}/out/images/c1.png", "rb") as f:
        assert Image.open(f).size == (600, 600)
    meta = pq.read_table(f"{bucket}/out/metadata", filesystem=fs)
    assert meta.num_rows == 3
    uris = dict(zip(meta.column("id").to_pylist(), meta.column("output_uri").to_pylist()))
    assert uris == {
        "c1": f"s3://{bucket}/out/images/c1.png",
        "c2": f"s3://{bucket}/out/images/c2.jpg",
        "gone": None,
    }
    assert fs.exists(f"{bucket}/out/run.json")
    # rerun against S3 resumes
    r2 = run(cfg, quiet=True)
    assert r2["counts"]["skipped"] == 2 and r2["images_written"] == 0


def test_cli_run_strict_and_bad_config(tmp_path, photo_dir):
    out = tmp_path / "out"
    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {"id": "ok1", "image": str(photo_dir / "coffee.png"), "aspect_ratio": "1:1"},
            {"id": "bad", "image": str(photo_dir / "coffee.png"), "width": 10, "height": 10},
        ],
    )
    c = write_config(
        tmp_path / "c.yaml",
        {"input": {"manifest": m}, "output": {"uri": str(out)}, "runtime": {"num_cpus": 2}},
    )
    env = dict(os.environ, RAY_ADDRESS="")
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", c, "--strict"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    assert "--strict: 1 rows were rejected" in r.stderr and "outpaint run summary" in r.stderr
    assert (out / "images" / "ok1.png").exists()
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", c, "--set", "output.mode=sometimes"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert (
        r.returncode == 2 and "output.mode" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    )


def test_variants(tmp_path, photo_dir, ray_local):
    out = tmp_path / "out"
    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {
                "id": "v3",
                "image": "coffee.png",
                "width": 700,
                "height": 500,
                "num_variants": 3,
                "seed": 42,
            },
            {"id": "v1", "image": "coffee.png", "width": 700, "height": 500, "seed": 42},
            {"id": "bad", "image": "coffee.png", "width": 700, "height": 500, "num_variants": 0},
        ],
    )
    cfg = config_mod.from_dict(
        {"input": {"manifest": m, "image_root": str(photo_dir)}, "output": {"uri": str(out)}}
    )
    r = run(cfg, quiet=True)
    assert r["manifest"]["by_status"] == {"ok": 2, "rejected": 1, "failed": 0}
    assert sorted(os.listdir(out / "images")) == ["v1.png", "v3-0.png", "v3-1.png", "v3-2.png"]
    meta = metadata(out)
    assert len(meta) == 3 and meta["bad"]["error_code"] == "invalid_request"
    assert [os.path.basename(u) for u in meta["v3"]["output_uris"]] == [
        "v3-0.png",
        "v3-1.png",
        "v3-2.png",
    ]
    assert meta["v3"]["output_uri"].endswith("v3-0.png") and meta["v1"]["output_uris"][0].endswith(
        "v1.png"
    )
    imgs = [read_png(out / "images" / f"v3-{k}.png") for k in range(3)]
    src = read_png(photo_dir / "coffee.png")
    for im in imgs:  # every variant keeps the original pixels
        assert np.array_equal(im[50:450, 50:650], src)
    assert not np.array_equal(imgs[0], imgs[1])  # seeds differ per variant
    assert np.array_equal(
        imgs[0], read_png(out / "images" / "v1.png")
    )  # variant 0 = the row's own seed
    os.remove(out / "images" / "v3-1.png")
    r = run(cfg, quiet=True)
    assert r["images_written"] == 1 and r["counts"]["skipped"] == 1
    assert np.array_equal(read_png(out / "images" / "v3-1.png"), imgs[1])
    # fewer variants: v3-1/v3-2 are superseded by v3.png and removed (v1's file stays)
    write_manifest(
        tmp_path / "m.parquet",
        [
            {
                "id": "v3",
                "image": "coffee.png",
                "width": 700,
                "height": 500,
                "num_variants": 1,
                "seed": 42,
            },
            {"id": "v1", "image": "coffee.png", "width": 700, "height": 500, "seed": 42},
        ],
    )
    r = run(cfg, quiet=True)
    assert r["images_written"] == 1 and sorted(os.listdir(out / "images")) == ["v1.png", "v3.png"]


def test_local_output_with_a_cluster_address_fails_at_start(tmp_path):
    cfg = config_mod.from_dict(
        {
            "input": {"manifest": str(tmp_path / "m.parquet")},
            "output": {"uri": str(tmp_path / "out")},
            "runtime": {"ray_address": "ray://head:10001"},
        }
    )
    with pytest.raises(ConfigError, match="local path but runtime.ray_address"):
        run(cfg, quiet=True)
    assert not (tmp_path / "out").exists()


def test_incremental_daily_manifests_share_one_output(tmp_path, photo_dir, ray_local):
    """Scheduled jobs: manifests partitioned by date, one output; the metadata is the state."""
    root = tmp_path / "manifests"
    (root / "day=2026-11-20").mkdir(parents=True)
    (root / "day=2026-11-21").mkdir(parents=True)
    day1 = [
        {"id": f"d1-{i}", "image": n, "aspect_ratio": "1:1"}
        for i, n in enumerate(("coffee.png", "chelsea.png", "camera.png"))
    ]
    day2 = [
        {"id": f"d2-{i}", "image": n, "aspect_ratio": "4:5"}
        for i, n in enumerate(("coffee.png", "rocket.jpg"))
    ]
    write_manifest(root / "day=2026-11-20" / "part-0.parquet", day1)
    cfg = config_mod.from_dict(
        {
            "input": {"manifest": str(root / "day=*" / "*.parquet"), "image_root": str(photo_dir)},
            "output": {"uri": str(tmp_path / "out")},
        }
    )
    r1 = run(cfg, quiet=True)
    assert r1["images_written"] == 3
    write_manifest(root / "day=2026-11-21" / "part-0.parquet", day2)
    r2 = run(cfg, quiet=True)  # day 1 + day 2: only day 2 is processed
    assert r2["images_written"] == 2 and r2["counts"]["skipped"] == 3
    Image.open(photo_dir / "chelsea.png").rotate(180).save(
        photo_dir / "chelsea.png"
    )  # a day-1 image changes
    before = {
        p: (tmp_path / "out" / "images" / p).read_bytes()
        for p in os.listdir(tmp_path / "out" / "images")
    }
    r3 = run(cfg, quiet=True)
    assert r3["images_written"] == 1 and r3["counts"]["skipped"] == 4
    after = {
        p: (tmp_path / "out" / "images" / p).read_bytes()
        for p in os.listdir(tmp_path / "out" / "images")
    }
    assert [p for p in after if after[p] != before[p]] == ["d1-1.png"]  # only that row redone
    assert len(metadata(tmp_path / "out")) == 5
