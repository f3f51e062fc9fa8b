"""Catalogues in object storage and behind HTTP, through ``outpaint run``: what a first
run, a rerun and a daily increment cost in requests, counted by the servers themselves
(a moto S3 server behind a counting proxy; a loopback HTTP image server)."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.run.runner import run

from ..conftest import write_config, write_manifest
from ..servers import ImageServer

pytestmark = pytest.mark.ray


def tiles(photos, n: int, start: int = 0) -> dict[str, bytes]:
    """n small real-photo JPEGs, each different."""
    import io

    base = Image.open(photos["chelsea"]).convert("RGB")
    out = {}
    for i in range(start, start + n):
        buf = io.BytesIO()
        base.crop((i % 200, i % 100, i % 200 + 96, i % 100 + 72)).save(buf, "JPEG", quality=85)
        out[f"sku-{i:04d}.jpg"] = buf.getvalue()
    return out


def s3_config(tmp_path, fs, bucket, opts, names: list[str], tag: str):
    m = write_manifest(
        tmp_path / f"{tag}.parquet",
        [{"id": n[:-4], "image": n, "width": 128, "height": 96} for n in names],
    )
    fs.put_file(m, f"{bucket}/manifests/{tag}.parquet")
    return config_mod.from_dict(
        {
            "input": {
                "manifest": f"s3://{bucket}/manifests/{tag}.parquet",
                "image_root": f"s3://{bucket}/src",
                "storage_options": opts,
            },
            "output": {"uri": f"s3://{bucket}/out", "storage_options": opts, "report": False},
            "model": {"backend": "solid"},
        }
    )


def test_s3_requests_per_row_first_run_rerun_daily(tmp_path, photos, s3_counted, ray_local):
    fs, bucket, opts, proxy = s3_counted
    n = 60
    images = tiles(photos, n)
    for name, data in images.items():
        fs.pipe_file(f"{bucket}/src/{name}", data)
    cfg = s3_config(tmp_path, fs, bucket, opts, list(images), "day1")
    proxy.reset()
    first = run(cfg, quiet=True)
    paths = list(proxy.paths)
    c = proxy.reset()
    assert first["images_written"] == n and first["manifest"]["by_status"]["ok"] == n
    # no HEAD per row (the GET that loads a source identifies it): only the run's own few
    assert c["HEAD"] <= 10, "\n".join(f"{k} {p}" for k, p in paths if k not in ("GET", "PUT"))
    assert c["GET"] <= n + 10 and c["PUT"] <= n + 10 and sum(c.values()) <= 2 * n + 40, c
    again = run(cfg, quiet=True)
    c = proxy.reset()
    assert again["work_rows"] == 0 and again["counts"]["skipped"] == n
    assert sum(c.values()) <= 40, (
        c
    )  # the run's own constants (manifest, metadata, run.json): nothing per row
    assert c["LIST"] <= 10 and c["GET"] <= 10 and c["HEAD"] <= 10
    assert again["sources"]["identity"]["listed"] == n and again["sources"]["identity"]["head"] == 0
    # a replaced source and a deleted output image are redone, and nothing else
    fs.pipe_file(f"{bucket}/src/sku-0003.jpg", tiles(photos, 1, start=500)["sku-0500.jpg"])
    fs.rm_file(f"{bucket}/out/images/sku-0007.png")
    fs.invalidate_cache()
    proxy.reset()
    redo = run(cfg, quiet=True)
    assert redo["work_rows"] == 2 and redo["images_written"] == 2
    meta = pq.read_table(f"{bucket}/out/metadata", filesystem=fs).to_pylist()
    assert len(meta) == n and sorted(r["id"] for r in meta if r["run_id"] == redo["run_id"]) == [
        "sku-0003",
        "sku-0007",
    ]
    # the daily shape: yesterday's rows plus a few new ones in the same prefix
    new = tiles(photos, 5, start=n)
    for name, data in new.items():
        fs.pipe_file(f"{bucket}/src/{name}", data)
    cfg2 = s3_config(tmp_path, fs, bucket, opts, list(images) + list(new), "day2")
    proxy.reset()
    daily = run(cfg2, quiet=True)
    c = proxy.reset()
    assert daily["work_rows"] == 5 and daily["counts"]["skipped"] == n
    assert sum(c.values()) <= 45 + 3 * 5, c


@pytest.fixture
def cdn(tmp_path, photos):
    d = tmp_path / "cdn"
    d.mkdir()
    for name, data in tiles(photos, 20).items():
        (d / name).write_bytes(data)
    with ImageServer(d) as srv:
        srv.status["private.jpg"] = 403
        yield srv


def test_http_sources_one_get_each_then_one_head_each_then_none(tmp_path, cdn, ray_local):
    names = [f"sku-{i:04d}.jpg" for i in range(20)]
    rows = [{"id": n[:-4], "image": cdn.url(n), "aspect_ratio": "4:3"} for n in names]
    rows += [
        {"id": "gone", "image": cdn.url("gone.jpg"), "aspect_ratio": "1:1"},
        {"id": "private", "image": cdn.url("private.jpg"), "aspect_ratio": "1:1"},
    ]
    data = {
        # the test CDN runs on loopback: a private address, allowed here on purpose
        "input": {
            "manifest": write_manifest(tmp_path / "m.parquet", rows),
            "http": {"allow_private_networks": True},
        },
        "output": {"uri": str(tmp_path / "out"), "report": False},
        "model": {"backend": "solid"},
    }
    first = run(config_mod.from_dict(data), quiet=True)
    assert cdn.reset() == {"GET": 22}  # one GET a row, no HEAD: planned from what the GET brought
    meta = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "metadata").to_pylist()}
    assert first["images_written"] == 20 and meta["sku-0004"]["source_width"] == 96
    assert (
        meta["gone"]["error_code"] == "image_not_found"
        and meta["private"]["error_code"] == "image_access_denied"
    )
    assert meta["sku-0004"]["source_identity"].startswith("size=")
    again = run(config_mod.from_dict(data), quiet=True)
    assert cdn.reset() == {
        "HEAD": 20,
        "GET": 2,
    }  # a HEAD per done row; the two failed rows are retried
    assert again["counts"]["skipped"] == 20
    # the catalogue knows its versions: a rerun asks the server nothing
    for r in rows:
        r["image_version"] = "2026-11-30"
    versioned = dict(
        data, input=dict(data["input"], manifest=write_manifest(tmp_path / "v.parquet", rows[:20]))
    )
    run(
        config_mod.from_dict(versioned), quiet=True
    )  # the first run with versions: they enter the hash
    cdn.reset()
    last = run(config_mod.from_dict(versioned), quiet=True)
    assert cdn.reset() == {} and last["counts"]["skipped"] == 20 and last["work_rows"] == 0


def test_http_rows_planned_from_their_get_are_rejected_or_failed_there(tmp_path, cdn, ray_local):
    """Remote rows of unknown size are planned in one batch at load, from the GET's bytes:
    a placement that only the size shows to be invalid is rejected with its geometry
    code, an unreadable file fails, and the block's other rows go on."""
    (cdn.root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 8)
    rows = [
        {"id": f"sku-{i:04d}", "image": cdn.url(f"sku-{i:04d}.jpg"), "aspect_ratio": "4:3"}
        for i in range(6)
    ]
    rows += [
        {
            "id": "offset",
            "image": cdn.url("sku-0007.jpg"),
            "aspect_ratio": "4:3",
            "reference_offset_x": 500,
        },
        {"id": "broken", "image": cdn.url("broken.jpg"), "aspect_ratio": "1:1"},
    ]
    data = {
        # the test CDN runs on loopback: a private address, allowed here on purpose
        "input": {
            "manifest": write_manifest(tmp_path / "m.parquet", rows),
            "http": {"allow_private_networks": True},
        },
        "output": {"uri": str(tmp_path / "out"), "report": False},
        "model": {"backend": "solid"},
        "runtime": {"batch_size": 16},
    }
    summary = run(config_mod.from_dict(data), quiet=True)
    assert cdn.reset() == {"GET": 8}
    meta = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "metadata").to_pylist()}
    assert len(meta) == 8 and summary["images_written"] == 6
    assert (meta["offset"]["status"], meta["offset"]["error_code"]) == ("rejected", "out_of_bounds")
    assert meta["offset"]["source_width"] == 96 and meta["offset"]["output_uri"] is None
    assert (meta["broken"]["status"], meta["broken"]["error_code"]) == (
        "failed",
        "image_unreadable",
    )
    for i in range(6):
        r = meta[f"sku-{i:04d}"]
        assert r["status"] == "ok" and (r["canvas_width"], r["canvas_height"]) == (96, 72)
        assert r["request_hash"] and r["source_identity"].startswith("size=")
    hashes = {meta[f"sku-{i:04d}"]["request_hash"] for i in range(6)}
    assert len(hashes) == 6  # each row hashed with its own identity


def test_a_missing_http_client_fails_at_start_in_one_line(tmp_path):
    m = write_manifest(
        tmp_path / "m.parquet",
        [{"id": "a", "image": "https://cdn.example/a.jpg", "aspect_ratio": "1:1"}],
    )
    cfg = write_config(
        tmp_path / "c.yaml", {"input": {"manifest": m}, "output": {"uri": str(tmp_path / "out")}}
    )
    code = (
        "import sys; sys.modules['urllib3'] = None; import importlib.util as u; real = u.find_spec; "
        "u.find_spec = lambda n, *a: None if n == 'urllib3' else real(n, *a); "
        f"from pipeline.cli import main; sys.exit(main(['run', {cfg!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "https:// URIs, which need the urllib3 package" in lines[0]
    assert not (tmp_path / "out" / "images").exists()
