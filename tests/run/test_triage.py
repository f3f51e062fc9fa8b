"""Triage: manifest slices -> work rows only; everything else finished in bulk."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io import manifest
from pipeline.io.outputs import OutputStore
from pipeline.run.triage import TriageStage, slices_table

from ..conftest import make_config, write_manifest


def _rows(photos, tmp_path, n=12):
    """Every third row is rejected by geometry (sizes known: no image access), one has
    a missing image, the rest are work."""
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append(
                {
                    "id": f"r{i}",
                    "image": str(tmp_path / "nowhere" / f"{i}.png"),
                    "image_width": 100,
                    "image_height": 100,
                    "width": 32,
                    "height": 32,
                }
            )
        else:
            rows.append({"id": f"r{i}", "image": str(photos["coffee"]), "aspect_ratio": "1:1"})
    rows[1]["image"] = str(tmp_path / "gone.png")
    return rows


def test_only_work_rows_leave_triage(tmp_path, photos):
    m = write_manifest(tmp_path / "m.parquet", _rows(photos, tmp_path))
    cfg = make_config(tmp_path, m)
    store = OutputStore(cfg.output.uri)
    index = manifest.scan(cfg)
    stage = TriageStage(cfg, store, "run1", chunk_rows=5)  # chunks of 5: three bulk parts
    work = pa.concat_tables(list(stage(slices_table(index.slices))))
    ids = work.column("id").to_pylist()
    assert ids == [f"r{i}" for i in range(12) if i % 3 and i != 1]
    assert (
        set(work.column("status").to_pylist()) == {"ok"}
        and work.column("request_hash").null_count == 0
    )
    bulk = store.metadata.read()
    assert sorted(bulk.column("id").to_pylist()) == sorted(
        ["r1"] + [f"r{i}" for i in range(0, 12, 3)]
    )
    codes = dict(zip(bulk.column("id").to_pylist(), bulk.column("error_code").to_pylist()))
    assert codes["r1"] == "image_not_found" and codes["r0"] == "canvas_too_small"
    assert len(store.metadata.files()) == 2  # chunks r0-r4 and r5-r9 had bulk rows, r10-r11 none
    assert (stage.counts.rows, stage.counts.work, stage.counts.bulk, stage.counts.done) == (
        12,
        7,
        5,
        0,
    )


def test_done_rows_are_dropped(tmp_path, photos):
    m = write_manifest(tmp_path / "m.parquet", _rows(photos, tmp_path, 6))
    cfg = make_config(tmp_path, m)
    store = OutputStore(cfg.output.uri)
    index = manifest.scan(cfg)
    first = pa.concat_tables(list(TriageStage(cfg, store, "a").chunks(index.slices[0])))
    from pipeline.io.done import EarlierRuns, fingerprints, key_fingerprints

    hi, lo, _ = fingerprints(first.column("request_hash").slice(0, 2))
    ihi, ilo = key_fingerprints(first.column("id").slice(0, 2))
    stage = TriageStage(cfg, store, "b", earlier=EarlierRuns(ihi, ilo, hi, lo, [0, 0], [0, 0]))
    again = pa.concat_tables(list(stage.chunks(index.slices[0])))
    assert again.column("id").to_pylist() == first.column("id").to_pylist()[2:]
    assert stage.counts.done == 2


def test_slices_cover_every_row_once(tmp_path):
    """Row groups -> slices -> chunks: every row once, with its global manifest_row."""
    d = tmp_path / "parts"
    d.mkdir()
    n0 = 0
    for k, n in enumerate((7, 0, 13)):
        t = pa.table(
            {
                "id": [f"f{k}-{i}" for i in range(n)],
                "image": ["x.png"] * n,
                "aspect_ratio": ["1:1"] * n,
            },
            schema=pa.schema(
                [("id", pa.string()), ("image", pa.string()), ("aspect_ratio", pa.string())]
            ),
        )
        pq.write_table(t, d / f"part-{k}.parquet", row_group_size=3)
        n0 += n
    cfg = make_config(tmp_path, str(d))
    index = manifest.scan(cfg, slice_rows=5)
    assert (
        index.rows == 20 and len(index.slices) == 2 + 3
    )  # 7 rows: groups 3+3 | 1; 13: 3+3 | 3+3 | 1; 0: none
    got = pa.concat_tables(
        [
            t
            for s in index.slices
            for t in manifest.read_slice(s, cfg.input, cfg.limits, chunk_rows=2)
        ]
    )
    assert got.column("id").to_pylist() == index.ids.to_pylist()
    assert got.column("manifest_row").to_pylist() == list(range(20))


@pytest.mark.ray
def test_duplicates_across_files_through_ray(tmp_path, photos, ray_local):
    """Many Parquet files, ids repeated across them: the first in file order wins,
    through the distributed triage (several slices)."""
    from pipeline.run.runner import run

    d = tmp_path / "manifest"
    d.mkdir()
    img = str(photos["chelsea"])
    files = [
        [("a", 500), ("b", 500)],
        [("c", 500), ("a", 520)],
        [("b", 540), ("d", 500), ("a", 560)],
    ]
    for k, rows in enumerate(files):
        write_manifest(
            d / f"part-{k}.parquet",
            [{"id": i, "image": img, "width": w, "height": 400} for i, w in rows],
        )
    cfg = make_config(
        tmp_path,
        str(d),
        runtime={"plan_block_rows": 1, "block_rows": 2},
        model={"backend": "solid"},
    )
    r = run(cfg, quiet=True)
    assert r["rows"] == 7 and r["work_rows"] == 4
    t = pq.read_table(os.path.join(cfg.output.uri, "metadata")).sort_by("manifest_row")
    got = list(
        zip(
            t.column("id").to_pylist(),
            t.column("error_code").to_pylist(),
            t.column("canvas_width").to_pylist(),
        )
    )
    assert got == [
        ("a", None, 500),
        ("b", None, 500),
        ("c", None, 500),
        ("a", "duplicate_id", None),
        ("b", "duplicate_id", None),
        ("d", None, 500),
        ("a", "duplicate_id", None),
    ]
    assert "row 0" in t.column("error_message")[3].as_py()
    assert sorted(os.listdir(os.path.join(cfg.output.uri, "images"))) == [
        "a.png",
        "b.png",
        "c.png",
        "d.png",
    ]
    # the rerun: the four done rows are skipped, the duplicates recorded again
    r2 = run(cfg, quiet=True)
    assert (
        r2["work_rows"] == 0
        and r2["counts"]["skipped"] == 4
        and r2["manifest"]["by_status"] == {"ok": 4, "rejected": 3, "failed": 0}
    )
