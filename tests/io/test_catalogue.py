"""``outpaint manifest``: a folder of photos -> a manifest -> outputs, no code written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.io.catalogue import ids_from_paths

from ..conftest import write_config


def outpaint(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def photo_tree(tmp_path, photos):
    """Nested folders, PNG and JPEG, a non-image file and a hidden file."""
    root = tmp_path / "photos"
    (root / "cats").mkdir(parents=True)
    (root / "things" / "deep").mkdir(parents=True)
    shutil.copy(photos["chelsea"], root / "cats" / "chelsea.png")
    Image.open(photos["coffee"]).convert("RGB").save(root / "things" / "coffee.jpg", quality=92)
    shutil.copy(photos["rocket"], root / "things" / "deep" / "rocket.jpg")
    shutil.copy(photos["astronaut"], root / "astronaut.PNG")
    (root / "notes.txt").write_text("not an image")
    shutil.copy(photos["camera"], root / ".hidden.png")
    return root


@pytest.mark.ray
def test_folder_to_manifest_to_outputs(tmp_path, photo_tree, photos):
    out = tmp_path / "manifest.csv"
    r = outpaint(
        "manifest",
        str(photo_tree),
        "--out",
        str(out),
        "--aspect-ratio",
        "1:1",
        "--aspect-ratio",
        "4:5",
        "--format",
        "jpg",
    )
    assert r.returncode == 0, r.stderr
    assert "8 rows = 4 images x 2 targets (1x1, 4x5)" in r.stdout
    c = write_config(
        tmp_path / "c.yaml",
        {
            "input": {"manifest": str(out)},
            "output": {"uri": str(tmp_path / "o")},
            "runtime": {"num_cpus": 2},
        },
    )
    r = outpaint("run", c)
    assert r.returncode == 0, r.stderr
    meta = {m["id"]: m for m in pq.read_table(tmp_path / "o" / "metadata").to_pylist()}
    expected = {
        f"{stem}-{tag}"
        for stem in ("astronaut", "cats__chelsea", "things__coffee", "things__deep__rocket")
        for tag in ("1x1", "4x5")
    }
    assert set(meta) == expected
    assert {m["status"] for m in meta.values()} == {"ok"}
    for rid, m in meta.items():
        with Image.open(tmp_path / "o" / "images" / f"{rid}.jpg") as im:
            w, h = im.size
        ratio = Fraction(1) if rid.endswith("1x1") else Fraction(4, 5)
        assert (w, h) == (m["canvas_width"], m["canvas_height"])
        assert abs(Fraction(w, h) - ratio) <= Fraction(1, h), (rid, w, h)  # ceil: within one pixel
        assert m["source_width"] > 0 and m["image"].startswith("file://")
    # the source sizes came from headers into the manifest (planning needed no image read)
    import pyarrow.csv as pcsv

    man = pcsv.read_csv(out)
    assert (
        man.column("image_width").to_pylist()[
            man.column("id").to_pylist().index("cats__chelsea-1x1")
        ]
        == 451
    )
    # a rerun: everything is already done
    r = outpaint("run", c)
    assert r.returncode == 0 and "8 already done" in r.stderr, r.stderr


def test_manifest_formats_and_single_target(tmp_path, photo_tree):
    for ext in ("parquet", "tsv", "jsonl"):
        out = tmp_path / f"m.{ext}"
        r = outpaint(
            "manifest",
            str(photo_tree / "things"),
            "--out",
            str(out),
            "--width",
            "1200",
            "--height",
            "800",
            "--mode",
            "fast",
        )
        assert r.returncode == 0, r.stderr
        assert "2 rows = 2 images x 1 target (1200x800)" in r.stdout
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["coffee", "deep__rocket"]  # one target: no suffix
    assert all(r["width"] == 1200 and r["mode"] == "fast" and "aspect_ratio" not in r for r in rows)
    assert pq.read_table(tmp_path / "m.parquet").column("id").to_pylist() == [
        "coffee",
        "deep__rocket",
    ]
    r = outpaint(
        "manifest",
        str(tmp_path / "nothing-here"),
        "--out",
        str(tmp_path / "x.csv"),
        "--aspect-ratio",
        "1:1",
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = outpaint("manifest", str(photo_tree), "--out", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and "--aspect-ratio" in r.stderr
    r = outpaint(
        "manifest", str(photo_tree), "--out", str(tmp_path / "x.csv"), "--aspect-ratio", "0:1"
    )
    assert r.returncode == 2 and "aspect-ratio" in r.stderr


def test_ids_stable_unique_and_valid():
    import re

    rel = [
        "a b/c.jpg",
        "a-b/c.jpg",
        "x.png",
        "x.jpg",
        "ünï/ça.png",
        ".dot/y.png",
        "z" * 300 + ".png",
    ]
    ids = ids_from_paths(rel)
    assert ids == ids_from_paths(rel)  # stable
    assert len(set(ids)) == len(ids)  # unique: collisions get a digest of the path
    assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}", i) for i in ids), ids
    assert ids[2].startswith("x-") and ids[3].startswith("x-") and ids[0].startswith("a-b__c-")


def test_manifest_from_a_bucket_prefix(tmp_path, photos, s3_bucket):
    """An object-storage prefix (moto S3 through s3fs): same ids, sizes from ranged reads."""
    from pipeline.io.catalogue import Target, build, write

    fs, bucket, opts = s3_bucket
    fs.put_file(str(photos["coffee"]), f"{bucket}/shop/mugs/coffee.png")
    fs.put_file(str(photos["rocket"]), f"{bucket}/shop/rocket.jpg")
    fs.pipe_file(f"{bucket}/shop/readme.txt", b"not an image")
    table = build([f"s3://{bucket}/shop/"], [Target(aspect_ratio="1:1")], storage_options=opts)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert set(rows) == {"mugs__coffee", "rocket"}
    assert (rows["mugs__coffee"]["image_width"], rows["mugs__coffee"]["image_height"]) == (600, 400)
    assert rows["rocket"]["image"] == f"s3://{bucket}/shop/rocket.jpg"
    out = write(table, f"s3://{bucket}/manifests/m.parquet", opts)
    assert out == f"s3://{bucket}/manifests/m.parquet" and fs.exists(
        f"{bucket}/manifests/m.parquet"
    )
