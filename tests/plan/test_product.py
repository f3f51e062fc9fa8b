"""Planning product photos: the product-photo columns validated, ``anchor: subject``
placing the product's box, routes from the manifest's analysis, ``sizing.min_side`` and
the presets (docs/product-photos.md)."""

from __future__ import annotations

import pytest

from pipeline import config as config_mod
from pipeline.io import manifest
from pipeline.plan.stage import plan_manifest
from pipeline.plan.summary import summarise

from ..conftest import make_config, write_manifest

BOX = {"subject_x0": 100, "subject_y0": 150, "subject_x1": 400, "subject_y1": 450}  # 300 px


def plan(tmp_path, rows, **sections):
    cfg = make_config(tmp_path, write_manifest(tmp_path / "m.parquet", rows), **sections)
    manifest.read_schema(cfg)
    table = plan_manifest(cfg, manifest.read(cfg))
    return {r["id"]: r for r in table.to_pylist()}, table, cfg


def row(rid, **kw):
    # sizes given: nothing to read (the box is checked against them)
    return {"id": rid, "image": "p.png", "image_width": 500, "image_height": 600, **kw}


def product_span(r, box=BOX) -> tuple[float, float, int]:
    """The product's box on the canvas: its centre's offset from the canvas's centre (x, y)
    and its longer side, in canvas px."""
    s = r["reference_width"] / r["source_width"]
    x0, x1 = r["offset_x"] + box["subject_x0"] * s, r["offset_x"] + box["subject_x1"] * s
    y0, y1 = r["offset_y"] + box["subject_y0"] * s, r["offset_y"] + box["subject_y1"] * s
    dx = (x0 + x1) / 2 - r["canvas_width"] / 2
    dy = (y0 + y1) / 2 - r["canvas_height"] / 2
    return dx, dy, max(x1 - x0, y1 - y0)


def test_anchor_subject_centres_the_box_at_its_fill(tmp_path):
    rows = [
        row("square", width=2000, height=2000, **BOX),  # 300 px -> 1700: enlarged (allowed)
        row("banner", width=1600, height=900, **BOX),
        row("ratio", aspect_ratio="4:5", **BOX),
        row("ratio-wide", aspect_ratio="16:9", **BOX),
        row("no-box", width=800, height=800),
        row("offsets-win", width=800, height=800, reference_offset_x=0, **BOX),
    ]
    got, table, cfg = plan(
        tmp_path,
        rows,
        defaults={"anchor": "subject", "auto_crop": True},
        sizing={"subject_fill": 0.85, "allow_upscale": True},
    )
    for rid in ("square", "banner", "ratio", "ratio-wide"):
        r = got[rid]
        assert r["status"] == "ok", r["error_message"]
        dx, dy, span = product_span(r)
        short = min(r["canvas_width"], r["canvas_height"])
        assert abs(dx) <= 1 and abs(dy) <= 1, (rid, dx, dy)
        assert abs(span - 0.85 * short) <= 1, (rid, span, short)
        assert r["placement_note"] is None
    # ratios: the canvas comes from the box (300 / 0.85 = 353 on the shorter side)
    assert (got["ratio"]["canvas_width"], got["ratio"]["canvas_height"]) == (353, 442)
    assert (got["ratio-wide"]["canvas_width"], got["ratio-wide"]["canvas_height"]) == (628, 353)
    assert got["ratio"]["scale"] == 1.0 and got["square"]["scale"] == pytest.approx(
        5.6666, abs=1e-4
    )
    # no box: centred like anchor: center, and said so
    assert got["no-box"]["offset_x"] == 150 and "centred" in got["no-box"]["placement_note"]
    assert got["offsets-win"]["offset_x"] == 0
    s = summarise(table, cfg)["subject"]
    assert s == {"by_box": 5, "centred": 1}


def test_a_box_that_would_need_enlarging(tmp_path):
    rows = [row("big-canvas", width=2000, height=2000, **BOX)]
    defaults = {"anchor": "subject", "auto_crop": True}
    got, _, _ = plan(tmp_path, rows, defaults=defaults)
    assert (
        got["big-canvas"]["status"] == "ok" and got["big-canvas"]["scale"] == 1.0
    )  # as large as it goes
    got, _, _ = plan(tmp_path, rows, defaults=defaults, sizing={"require_subject_fill": True})
    r = got["big-canvas"]
    assert (r["status"], r["error_code"]) == ("rejected", "preset_too_small")
    assert "enlarged to span 85%" in r["error_message"]


@pytest.mark.parametrize(
    "cells, words",
    [
        ({"subject_x0": 10, "subject_y0": 10}, "go together"),
        ({**BOX, "subject_x1": 50}, "empty or negative"),
        ({**BOX, "subject_x1": 900}, "reaches past the 500×600 source"),
        ({**BOX, "subject_y0": "top"}, "subject_y0 must be an integer"),
        ({"backdrop_kind": "white"}, "backdrop_kind 'white' is not one of flat, gradient, scene"),
        ({"backdrop_color": "white"}, "not a #rrggbb colour"),
        ({"backdrop_sides": "lx"}, "letters other than l, t, r, b"),
    ],
)
def test_product_columns_are_checked(tmp_path, cells, words):
    got, _, _ = plan(tmp_path, [row("r", width=800, height=800, **cells)])
    r = got["r"]
    assert (r["status"], r["error_code"]) == ("rejected", "invalid_request")
    assert words in r["error_message"]


def test_routes_from_the_manifests_analysis(tmp_path):
    wide = {"width": 900, "height": 600}  # left and right generated
    rows = [
        row("flat", backdrop_kind="flat", backdrop_sides="ltrb", **wide),
        row("gradient", backdrop_kind="gradient", **wide),  # no sides: all, as the kind says
        row("cut-left", backdrop_kind="flat", backdrop_sides="trb", **wide),
        row("cut-bottom", backdrop_kind="flat", backdrop_sides="ltr", **wide),  # bottom not needed
        row("scene", backdrop_kind="scene", backdrop_sides="", **wide),
        row("unknown", **wide),
        row("same-size", backdrop_kind="flat", width=500, height=600),  # nothing to generate
    ]
    got, table, cfg = plan(tmp_path, rows, model={"backend": "flux-fill", "path": "/nowhere"})
    routes = {rid: r["route"] for rid, r in got.items()}
    assert routes == {
        "flat": "backdrop",
        "gradient": "backdrop",
        "cut-left": "model",
        "cut-bottom": "backdrop",
        "scene": "model",
        "unknown": None,
        "same-size": None,
    }
    assert got["flat"]["steps"] == 0 and got["scene"]["steps"] == cfg.model.steps
    s = summarise(table, cfg)
    assert s["routes"] == {"backdrop": 3, "model": 2, "at_load": 1}
    assert s["saved_gpu_seconds"] > 0 and s["api_tasks"] == 3
    forced, _, _ = plan(tmp_path, rows, model={"route": "model"})
    assert {r["route"] for rid, r in forced.items() if rid != "same-size"} == {"model"}


def test_min_side(tmp_path):
    rows = [row("small-ratio", aspect_ratio="1:1"), row("small-size", width=300, height=300)]
    got, _, _ = plan(tmp_path, rows, sizing={"min_side": 1000})
    for rid in got:
        assert got[rid]["error_code"] == "preset_too_small"
        assert "under sizing.min_side = 1,000 px" in got[rid]["error_message"]
    got, _, _ = plan(tmp_path, rows, sizing={"min_side": 1000, "allow_upscale": True})
    r = got["small-ratio"]
    assert r["status"] == "ok" and (r["canvas_width"], r["canvas_height"]) == (1000, 1000)
    assert got["small-size"]["error_code"] == "preset_too_small"  # an asked size is not grown


def test_presets_expand_and_yield_to_the_config(tmp_path):
    base = {"input": {"manifest": "m.parquet"}, "output": {"uri": str(tmp_path)}}
    amazon = config_mod.from_dict({**base, "preset": "amazon-main"})
    assert amazon.defaults.aspect_ratio == "1:1" and amazon.defaults.anchor == "subject"
    assert amazon.sizing.subject_fill == 0.85 and amazon.sizing.min_side == 1600
    assert amazon.model.route == "backdrop" and amazon.model.backdrop.color == (255, 255, 255)
    own = config_mod.from_dict(
        {**base, "preset": "amazon-main", "defaults": {"width": 2000, "height": 2000}}
    )
    assert (own.defaults.width, own.defaults.aspect_ratio) == (2000, None)  # the config's target
    insta = config_mod.from_dict({**base, "preset": "instagram-portrait"})
    assert (insta.defaults.width, insta.defaults.height) == (1080, 1350)
    with pytest.raises(config_mod.ConfigError, match="`preset`: 'ebay' is not a preset"):
        config_mod.from_dict({**base, "preset": "ebay"})
    with pytest.raises(
        config_mod.ConfigError, match="`model.backend`: 'solid' does not meet preset"
    ):
        config_mod.from_dict({**base, "preset": "google-shopping", "model": {"backend": "solid"}})
