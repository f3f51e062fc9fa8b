"""The public Python API (``pipeline.api``), used the way its users do: nothing from
``pipeline.run`` or other internals is imported here."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import api as outpaint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "example"


def _config(tmp_path, passthrough=(), **extra) -> outpaint.Config:
    data = {
        "input": {"image_root": str(EXAMPLE / "images")},
        "output": {"uri": str(tmp_path / "out"), "passthrough_columns": list(passthrough)},
    }
    data.update(extra)
    return outpaint.load_config(data)


def test_this_file_uses_only_the_public_api():
    tree = ast.parse(Path(__file__).read_text())
    used = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in used if m.startswith("pipeline")} == {"pipeline"}
    names = {
        a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "pipeline"
        for a in n.names
    }
    assert names == {"api"}


@pytest.mark.ray
def test_plan_and_run_the_example_manifest_from_a_ray_dataset(tmp_path, ray_local):
    ds = ray_local.data.from_arrow(pq.read_table(EXAMPLE / "manifest.parquet"))
    cfg = _config(tmp_path, passthrough=["sku"])

    planned = outpaint.plan(ds, cfg)
    assert planned.num_rows == 12
    by_id = {r["id"]: r for r in planned.to_pylist()}
    # the same plan as the example job's own manifest file
    reference = outpaint.plan(
        None,
        outpaint.load_config(
            ROOT / "configs" / "example.yaml",
            [
                f"input.image_root={EXAMPLE / 'images'}",
                f"input.manifest={EXAMPLE / 'manifest.parquet'}",
            ],
        ),
    )
    for row in reference.to_pylist():
        got = by_id[row["id"]]
        assert (
            got["status"],
            got["error_code"],
            got["canvas_width"],
            got["canvas_height"],
            got["offset_x"],
        ) == (
            row["status"],
            row["error_code"],
            row["canvas_width"],
            row["canvas_height"],
            row["offset_x"],
        )
    summary = outpaint.plan_summary(planned, cfg)
    assert summary["by_status"] == {"ok": 10, "rejected": 1, "failed": 1}
    assert "rows: 12" in outpaint.format_plan_summary(summary)

    result = outpaint.outpaint(ds, cfg, quiet=True)
    assert result.by_status == {"ok": 10, "rejected": 1, "failed": 1}
    assert result.by_code == {"canvas_too_large": 1, "image_not_found": 1}
    assert result.images_written == 10 and result.rows == 12
    meta = result.metadata(["id", "status", "canvas_width", "canvas_height", "output_uri", "sku"])
    assert meta.num_rows == 12
    for r in meta.to_pylist():
        if r["status"] == "ok":
            with Image.open(r["output_uri"]) as im:
                assert im.size == (r["canvas_width"], r["canvas_height"])
    assert not list((tmp_path / "out" / "_tmp").glob("manifest-*")), (
        "the staged manifest is removed after the run"
    )

    again = outpaint.outpaint(ds, cfg, quiet=True)
    assert again.skipped == 10 and again.images_written == 0 and again.by_status == result.by_status


def test_rows_in_memory_plan_like_a_file_and_bad_columns_are_named(tmp_path):
    cfg = _config(tmp_path, defaults={"aspect_ratio": "1:1"})
    rows = [
        {"id": "a", "image": "coffee.jpg"},
        {"id": "b", "image": "coffee.jpg", "width": 40, "height": 40},
        {"id": "a", "image": "chelsea.jpg"},
    ]
    planned = outpaint.plan(rows, cfg).to_pylist()
    assert [(r["status"], r["error_code"]) for r in planned] == [
        ("ok", None),
        ("rejected", "canvas_too_small"),
        ("rejected", "duplicate_id"),
    ]
    with Image.open(EXAMPLE / "images" / "coffee.jpg") as im:
        side = max(im.size)
    assert (planned[0]["canvas_width"], planned[0]["canvas_height"]) == (side, side)
    with pytest.raises(outpaint.ConfigError, match="bbox_x1.*reference_offset_x"):
        outpaint.plan([{"id": "a", "image": "coffee.jpg", "bbox_x1": 3}], cfg)
    with pytest.raises(outpaint.ConfigError, match="sizing.max_pixels"):
        outpaint.load_config({"output": {"uri": "x"}, "sizing": {"max_pixels": 5_000_000}})
    with pytest.raises(outpaint.ConfigError, match="no manifest"):
        outpaint.run(cfg)


def test_stages_run_without_ray_on_a_table(tmp_path):
    cfg = _config(tmp_path, defaults={"width": 900, "height": 500})
    stages = outpaint.stages(cfg, run_id="r1")
    assert not stages.needs_actor
    planned = stages.plan(pa.table({"id": ["cup", "gone"], "image": ["coffee.jpg", "nope.jpg"]}))
    assert planned.column("status").to_pylist() == ["ok", "failed"]
    meta = stages.process(planned).to_pylist()
    assert [(m["id"], m["status"], m["error_code"], m["run_id"]) for m in meta] == [
        ("cup", "ok", None, "r1"),
        ("gone", "failed", "image_not_found", "r1"),
    ]
    with Image.open(meta[0]["output_uri"]) as im:
        out = np.asarray(im.convert("RGB"))
    assert out.shape == (500, 900, 3)
    with Image.open(EXAMPLE / "images" / "coffee.jpg") as im:
        src = np.asarray(im.convert("RGB"))
    x0, y0 = meta[0]["visible_x0"], meta[0]["visible_y0"]
    inner = out[y0 + 8 : y0 + src.shape[0] - 8, x0 + 8 : x0 + src.shape[1] - 8].astype(int)
    assert (
        np.abs(inner - src[8:-8, 8:-8].astype(int)).max() <= 1
    )  # the original pixels, untouched (PNG)
