"""The review page: every failed row, a before/after gallery, columnar at scale, and
what a browser shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import config as config_mod

from ..conftest import write_manifest


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, photos, ray_local):
    from pipeline.run.runner import run

    tmp = tmp_path_factory.mktemp("report")
    rows = [
        {"id": f"ok{i}", "image": str(photos[n]), "aspect_ratio": r}
        for i, (n, r) in enumerate(
            (("coffee", "1:1"), ("chelsea", "16:9"), ("camera", "4:5"), ("rocket", "1:1"))
        )
    ]
    rows += [
        {"id": "gone", "image": str(tmp / "missing.png"), "aspect_ratio": "1:1"},
        {"id": "huge", "image": str(photos["coffee"]), "width": 4096, "height": 4096},
        {"id": "../bad", "image": str(photos["coffee"]), "aspect_ratio": "1:1"},
        {"id": "<script>", "image": str(photos["coffee"]), "aspect_ratio": "1:1"},
    ]
    m = write_manifest(tmp / "m.parquet", rows)
    out = tmp / "out"
    run(config_mod.from_dict({"input": {"manifest": m}, "output": {"uri": str(out)}}), quiet=True)
    return out


@pytest.mark.ray
def test_report_lists_every_failed_row_and_a_gallery(reported_run):
    page = (reported_run / "report.html").read_text()
    meta = pq.read_table(reported_run / "metadata").to_pylist()
    bad = [r for r in meta if r["status"] != "ok"]
    assert len(bad) == 4
    table = page.split('<table id="failures">')[1].split("</table>")[0]
    for r in bad:  # every rejected/failed row with its code and message (escaped)
        assert f"<code>{r['error_code']}</code>" in table
        assert r["id"].replace("<", "&lt;").replace(">", "&gt;") in table
    assert "<script>" not in table  # ids are escaped, never markup
    assert len(re.findall(r'src="data:image/jpeg;base64,', page)) >= 8  # before + after thumbnails
    assert os.path.getsize(reported_run / "report.html") < 2_000_000  # thumbnails, not full images
    os.remove(reported_run / "report.html")
    r = subprocess.run(
        ["outpaint", "report", str(reported_run)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "failed 1" in r.stdout and "image_not_found" in r.stdout
    assert (reported_run / "report.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@pytest.mark.ray
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by .ci/run (Debian package)")
def test_report_opens_in_headless_chromium(reported_run, tmp_path):
    url = f"file://{reported_run / 'report.html'}"
    shot = tmp_path / "report.png"
    r = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'p1'}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000, r.stderr[-1000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 1600)
        px = np.asarray(im.convert("RGB"))
    assert px.std() > 10  # rendered content, not a blank page
    dom = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'p2'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert total >= 8 and loaded == total  # every gallery image decodes in the browser
    # the original area is outlined on every after image, inside it
    outlines = re.findall(
        r'class="outline" style="left:([\d.]+)%;top:([\d.]+)%;width:([\d.]+)%;height:([\d.]+)%"',
        dom,
    )
    assert len(outlines) >= 4 and all(
        float(x) + float(w) <= 100.01 and float(y) + float(h) <= 100.01 for x, y, w, h in outlines
    )
    # the enlarge view: a row's full-resolution output, loaded only when opened (#zoom=ID opens it)
    rid = re.search(r'<a class="zoom" href="images/([^"]+)" data-id="([^"]+)"', dom)
    zoom = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'p3'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            f"{url}#zoom={rid.group(2)}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert re.search(r'<dialog id="zoom" open="">', zoom)
    assert f'<img alt="full size" src="images/{rid.group(1)}">' in zoom
    from PIL import Image as _Image

    with _Image.open(reported_run / "images" / rid.group(1)) as full:
        assert re.search(r'data-zoom-width="(\d+)"', zoom).group(1) == str(
            full.width
        )  # full size, decoded
    assert "data-zoom-width" not in dom  # not loaded until opened
    # the before/after slider over the canvas: the original, placed, left of the divider
    split = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'p4'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            f"{url}#zoom={rid.group(2)}&split=30",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-split="30"' in split and "clip-path: inset(0px 70% 0px 0px)" in split
    before = re.search(
        r'<img alt="before" id="before-img" src="(report_files/before-[^"]+)"', split
    ).group(1)
    with _Image.open(reported_run / before) as b:
        assert re.search(r'data-before-width="(\d+)"', split).group(1) == str(
            b.width
        )  # loaded in the browser
    assert "data-before-width" not in dom  # and only when a row is opened


def test_report_is_columnar_stable_and_complete(tmp_path):
    """5,000 synthetic metadata rows (no images): the summary counts, a stable sample of
    24 generated ok rows, the 12 worst seams in order, and every bad row, built from
    Arrow columns (only the rows shown become Python objects)."""
    import pyarrow as pa

    from pipeline.io.outputs import OutputStore
    from pipeline.review import report

    n = 5000
    rng = np.random.default_rng(3)
    status = np.where(np.arange(n) % 50 == 0, "failed", "ok")
    seam = rng.random(n) * 3
    store = OutputStore(str(tmp_path))
    store.metadata.write_part(
        pa.table(
            {
                "id": [f"sku-{i:05d}" for i in range(n)],
                "status": status,
                "error_code": [("image_not_found" if s == "failed" else None) for s in status],
                "error_message": [("gone" if s == "failed" else None) for s in status],
                "canvas_width": np.full(n, 1000),
                "canvas_height": np.full(n, 500),
                "generated": np.arange(n) % 2 == 0,
                "seam_score": seam,
                "quality_distance": np.abs(np.log(seam + 1e-3)),
                "completed_at": np.arange(n, dtype=float),
                "image": [None] * n,
                "output_uri": [None] * n,
            }
        ),
        "a",
    )
    page, summary = report.build(store, {})
    assert summary["by_status"] == {"ok": 4900, "rejected": 0, "failed": 100}
    assert (
        summary["by_code"] == {"image_not_found": 100}
        and summary["output_megapixels"] == 4900 * 0.5
    )
    sample = re.findall(
        r'<div class="card"[^>]*><h3>(sku-\d+)</h3>', page.split('id="sample"')[1].split("<h2>")[0]
    )
    assert len(sample) == 24 and all(int(s[4:]) % 2 == 0 and int(s[4:]) % 50 for s in sample)
    assert sample == re.findall(
        r'<div class="card"[^>]*><h3>(sku-\d+)</h3>',
        report.build(store, {})[0].split('id="sample"')[1].split("<h2>")[0],
    )
    worst = re.findall(r"<h3>(sku-\d+)</h3>", page.split('id="worst"')[1].split("<h2>")[0])
    ok_ids = np.flatnonzero(status == "ok")
    dist = np.abs(np.log(seam + 1e-3))  # far from natural either way: tiny and large seam scores
    assert worst == [f"sku-{i:05d}" for i in ok_ids[np.argsort(-dist[ok_ids], kind="stable")][:12]]
    assert "n/a" in page.split('id="metrics"')[1]  # fill leakage: not computed for these rows
    assert len(
        re.findall(r"<tr data-route=\"\w*\"><td>sku-", page.split('id="metrics"')[1])
    ) == len(ok_ids)  # every measured row listed
    table = page.split('<table id="failures">')[1]
    assert table.count("<code>image_not_found</code>") == 100


def test_thumbnails_show_true_colour(tmp_path, photos):
    """A ProPhoto RGB output: its thumbnail shows what a colour-managed viewer shows (the
    stored values through the profile), not the stored values read as sRGB."""
    import base64
    import io

    from PIL import Image

    from pipeline.io import manifest
    from pipeline.io.outputs import OutputStore
    from pipeline.plan.stage import PlanStage
    from pipeline.review import report
    from pipeline.run.stages import ProcessStage

    from ..conftest import make_config
    from ..io.test_color import PROFILES, icc, into

    if not PROFILES["prophoto"].exists():
        pytest.skip("ICC profiles of Debian's colord-data (.ci/run installs them)")
    patch = np.zeros((200, 300, 3), np.uint8)
    patch[:] = (200, 40, 40)  # a saturated red: ProPhoto stores it far from its sRGB value
    src = tmp_path / "red.png"
    into(patch, icc("prophoto")).save(src, icc_profile=icc("prophoto"))
    m = write_manifest(
        tmp_path / "m.parquet", [{"id": "red", "image": str(src), "width": 400, "height": 200}]
    )
    cfg = make_config(tmp_path, m)
    store = OutputStore(cfg.output.uri)
    store.metadata.write_part(
        ProcessStage.from_config(cfg, store, "r")(
            PlanStage(cfg, identify=True)(manifest.read(cfg))
        ),
        "r",
    )
    page, _ = report.build(store, {}, sample=0, worst=1)
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(thumbs) == 2  # before and after of the one row
    stored = np.asarray(Image.open(src).convert("RGB")).astype(int)[100, 150]
    assert np.abs(stored - (200, 40, 40)).max() > 30
    for b64 in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as t:
            assert "icc_profile" not in t.info  # sRGB, untagged: what browsers assume
            centre = np.asarray(t.convert("RGB")).astype(int)[t.height // 2, t.width // 2]
        assert np.abs(centre - (200, 40, 40)).max() <= 6, centre  # JPEG thumbnails: a few levels
