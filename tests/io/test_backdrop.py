"""The backdrop analysis and fill (pipeline/backdrop.py) on a real object composited onto
studio backdrops (tests/backdrops.py) and on scikit-image's scene photos."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.common.box import Box, Sides
from pipeline.io import backdrop

from ..backdrops import KINDS, product_photo, scene_photos

ALL = Sides(True, True, True, True)
LEFT_RIGHT = Sides(True, False, True, False)


@pytest.mark.parametrize(
    "kind, want",
    [("white", "flat"), ("shadow", "flat"), ("vignette", "gradient"), ("sweep", "gradient")],
)
def test_studio_backdrops_are_plain(kind, want):
    img, _ = product_photo(kind)
    found = backdrop.analyse(img, ALL)
    assert found.kind == want and found.plain
    assert found.residual < 1.0  # block means within a level of the fit
    assert 1.8 < found.noise < 2.3  # the sensor noise the helper added (sigma 2, 8-bit)


@pytest.mark.parametrize("name", list(scene_photos()))
def test_scene_photos_are_scenes(name):
    img = scene_photos()[name]
    assert backdrop.analyse(img, ALL).kind == "scene"
    assert backdrop.analyse(img, LEFT_RIGHT).kind == "scene"


def test_a_product_cut_by_the_frame_makes_that_side_a_scene():
    img, box = product_photo("white", at=(-80, 150))
    assert box.x0 == 0  # the product touches the left edge
    assert backdrop.analyse(img, Sides(True, False, False, False)).kind == "scene"
    assert backdrop.analyse(img, ALL).kind == "scene"
    assert backdrop.analyse(img, Sides(False, True, True, True)).kind == "flat"


@pytest.mark.parametrize("noise, within", [(0.5, 0.08), (1.0, 0.08), (2.0, 0.08), (4.0, 0.08)])
def test_the_noise_estimate_matches_the_sensor_noise(noise, within):
    img, _ = product_photo("white", noise=noise, seed=3)
    # 8-bit rounding adds 1/12 of a level's variance
    assert backdrop.analyse(img, ALL).noise == pytest.approx(np.hypot(noise, 0.289), rel=within)


@pytest.mark.parametrize("kind", KINDS)
def test_the_fill_continues_the_backdrop_with_its_grain(kind):
    img, _ = product_photo(kind, seed=1)
    h, w = img.shape[:2]
    box = Box.placed(250, 40, w, h)  # a wider, taller canvas: all four sides generated
    found = backdrop.analyse(img, box.sides(1000, 700))
    out = backdrop.fill(img, found, 1000, 700, box, seed=7)
    assert out.shape == (700, 1000, 3) and out.dtype == np.uint8
    assert np.array_equal(out[box.region], img)  # the reference untouched
    # the margins right beside the photo: the fitted backdrop there, the photo's own grain
    left = out[box.y0 : box.y1, box.x0 - 40 : box.x0].astype(np.float64)
    fitted = found.field(np.zeros(h), np.arange(h, dtype=np.float64))  # the photo's left column
    assert np.abs(left.mean(axis=(0, 1)) - fitted.mean(axis=0)).max() < 1.0
    strip = out[box.y0 : box.y1, box.x0 - 40 : box.x0]
    grain = backdrop.noise_sigma([(strip, 0, 0)])
    assert abs(grain - found.noise) <= 0.25 * found.noise
    # the same seed, the same canvas; another seed, other grain
    assert np.array_equal(out, backdrop.fill(img, found, 1000, 700, box, seed=7))
    assert not np.array_equal(out, backdrop.fill(img, found, 1000, 700, box, seed=8))


def test_a_fill_colour_is_clean_and_exact():
    img, _ = product_photo("white")
    box = Box.placed(100, 0, 500, 600)
    found = backdrop.analyse(img, box.sides(700, 600))
    out = backdrop.fill(img, found, 700, 600, box, seed=0, color=(255, 255, 255))
    assert (out[:, :100] == 255).all() and (out[:, 600:] == 255).all()
    assert found.distance((255, 255, 255)) == pytest.approx(10, abs=1.0)  # the backdrop is 245


@pytest.mark.parametrize("kind", ["white", "vignette", "sweep"])
def test_the_subject_box_is_the_products(kind):
    img, box = product_photo(kind, at=(90, 140), size=260)
    found = backdrop.analyse(img, ALL)
    assert backdrop.subject_box(img, found) == box


def test_describe_names_the_plain_sides_and_the_box():
    img, box = product_photo("white", at=(120, 350), size=300)  # cut by the bottom edge
    d = backdrop.describe(img)
    assert d["backdrop_kind"] == "flat" and d["backdrop_sides"] == "ltr"
    assert d["backdrop_color"] == "#f5f5f5"
    assert (d["subject_x0"], d["subject_y0"], d["subject_x1"], d["subject_y1"]) == (
        box.x0,
        box.y0,
        box.x1,
        box.y1,
    )
    scene = backdrop.describe(scene_photos()["chelsea"])
    assert scene["backdrop_kind"] == "scene" and scene["backdrop_sides"] == ""
    assert scene["subject_x0"] is None
