"""The output store's state: streaming compaction, the resume check, superseded images."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.outputs import OutputStore


def part(store, ids, t, status="ok", ext="png", extra=None, **cols):
    n = len(ids)
    data = {
        "id": ids,
        "status": [status] * n,
        "error_code": [None if status == "ok" else "image_not_found"] * n,
        "completed_at": [float(t)] * n,
        "run_id": [f"run{t}"] * n,
        "request_hash": [f"h{t}"] * n,
        "output_uri": [
            store.folder.uri_of("images", f"{i}.{ext}") if status == "ok" else None for i in ids
        ],
        **cols,
    }
    if extra:
        data.update(extra)
    return store.metadata.write_part(pa.table(data), f"r{t}")


def test_compaction_streams_into_bounded_parts_with_one_schema(tmp_path):
    """Three runs' parts (the oldest without a later column): one row per id, the
    latest; at most part_rows rows per new part; every part has the unified schema;
    ids ascending inside each part."""
    store = OutputStore(str(tmp_path))
    part(store, [f"a{i:03d}" for i in range(120)], 1)  # old schema: no seam_score
    part(store, [f"a{i:03d}" for i in range(0, 120, 2)], 2, extra={"seam_score": [0.5] * 60})
    part(
        store,
        [f"b{i:03d}" for i in range(30)],
        3,
        status="failed",
        extra={"seam_score": [None] * 30},
    )
    assert store.compact("c", part_rows=50) == 150
    files = store.metadata.files()
    tables = [pq.read_table(f) for f in files]
    # one old part at a time, flushed once past part_rows: 60 kept of run 1, 60 of run 2, 30 of run 3
    assert [t.num_rows for t in tables] == [60, 60, 30]
    assert len({t.schema for t in tables}) == 1 and "seam_score" in tables[0].column_names
    for t in tables:
        ids = t.column("id").to_pylist()
        assert ids == sorted(ids)
    meta = {r["id"]: r for t in tables for r in t.to_pylist()}
    assert len(meta) == 150
    assert meta["a000"]["run_id"] == "run2" and meta["a000"]["seam_score"] == 0.5
    assert meta["a001"]["run_id"] == "run1" and meta["a001"]["seam_score"] is None
    assert meta["b000"]["status"] == "failed"
    assert store.compact("d", part_rows=50) == 150  # idempotent
    assert {
        r["id"]: r["run_id"] for f in store.metadata.files() for r in pq.read_table(f).to_pylist()
    } == {k: v["run_id"] for k, v in meta.items()}


def test_superseded_images_go_current_and_failed_ones_stay(tmp_path):
    store = OutputStore(str(tmp_path))
    os.makedirs(tmp_path / "images")
    for name in ("x.png", "y.png", "z.png", "x.jpg", "q.png"):
        (tmp_path / "images" / name).write_bytes(b"img")
    part(store, ["x", "y", "z"], 1)  # all png
    part(store, ["x"], 2, ext="jpg")  # x redone as jpeg: x.png is superseded
    part(store, ["y"], 3, status="failed")  # y failed later: keeps y.png
    part(store, ["q"], 4)  # untouched
    store.compact("c")
    assert sorted(os.listdir(tmp_path / "images")) == ["q.png", "x.jpg", "y.png", "z.png"]


def test_resume_check_needs_every_output(tmp_path):
    """prior: ok rows whose image (every variant) exists; checked by one listing of
    images/ or a request per image, whichever is cheaper: the same answer."""
    import hashlib

    store = OutputStore(str(tmp_path))
    os.makedirs(tmp_path / "images")
    for name in ("a.png", "v-0.png", "v-1.png", "w-0.png"):
        (tmp_path / "images" / name).write_bytes(b"img")
    uris = lambda *names: [store.folder.uri_of("images", n) for n in names]
    h = {k: hashlib.sha256(k.encode()).hexdigest()[:32] for k in "abvwf"}
    store.metadata.write_part(
        pa.table(
            {
                "id": ["a", "b", "v", "w", "f"],
                "status": ["ok", "ok", "ok", "ok", "failed"],
                "request_hash": [h[k] for k in "abvwf"],
                "completed_at": [1.0] * 5,
                "error_code": [None, None, None, None, "x"],
                "source_width": [10, 20, 30, 40, 50],
                "source_height": [11, 21, 31, 41, 51],
                "output_uri": [
                    uris("a.png")[0],
                    uris("b.png")[0],
                    uris("v-0.png")[0],
                    uris("w-0.png")[0],
                    None,
                ],
                "output_uris": [
                    None,
                    None,
                    uris("v-0.png", "v-1.png"),
                    uris("w-0.png", "w-1.png"),
                    None,
                ],
            }
        ),
        "p",
    )

    def done_ids(prior, ids=("a", "b", "v", "w", "f", "new")):
        at = prior.find(pa.array(list(ids)))
        return sorted(i for i, k in zip(ids, at) if k >= 0)

    listed, info = store.earlier_runs(pa.array(["a", "b", "v", "w", "f", "new"]))
    assert done_ids(listed) == ["a", "v"] and "checked one request each" in info["existence"]
    # b's image is missing, w lacks variant 1, f failed; the sizes they had come along
    assert listed.sizes(listed.find(pa.array(["v", "a", "b"])))[0].tolist() == [30, 10, 0]
    assert listed.done.contains(pa.array([h["a"], h["b"], h["v"]])).tolist() == [True, False, True]
    # only the manifest's ids are checked (a daily manifest of new rows checks nothing)
    assert done_ids(store.earlier_runs(pa.array(["v", "new"]))[0]) == ["v"]
    assert len(store.earlier_runs(pa.array(["new"]))[0]) == 0
    # a later row of another request for the same id decides (its image replaced a's)
    store.metadata.write_part(
        pa.table(
            {
                "id": ["a"],
                "status": ["ok"],
                "request_hash": ["0" * 32],
                "completed_at": [2.0],
                "output_uri": uris("a.png"),
            }
        ),
        "q",
    )
    later, _ = store.earlier_runs(pa.array(["a", "v"]))
    assert later.done.contains(pa.array([h["a"], "0" * 32])).tolist() == [False, True]


def test_prior_lists_images_when_cheaper_than_a_request_each(tmp_path):
    """1,500 ok rows in the metadata, 1,200 images on disk: more than 1,000 names to check
    on a local disk, so one listing of images/ answers (hashed names, no set of strings)."""
    import hashlib

    store = OutputStore(str(tmp_path))
    os.makedirs(tmp_path / "images")
    n = 1500
    ids = [f"sku-{i:05d}" for i in range(n)]
    for i in range(1200):
        (tmp_path / "images" / f"{ids[i]}.png").write_bytes(b"x")
    store.metadata.write_part(
        pa.table(
            {
                "id": ids,
                "status": ["ok"] * n,
                "completed_at": [1.0] * n,
                "request_hash": [hashlib.sha256(i.encode()).hexdigest()[:32] for i in ids],
                "output_uri": [store.folder.uri_of("images", f"{i}.png") for i in ids],
            }
        ),
        "p",
    )
    prior, info = store.earlier_runs(pa.array(ids))
    assert len(prior) == 1200 and info["existence"].startswith("images/ listed (1,200 names")
    assert (prior.find(pa.array(ids)) >= 0).tolist() == [True] * 1200 + [False] * 300
