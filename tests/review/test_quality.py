"""Seams: feathered paste-back, quality metrics, colour matching."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backends.canvas import FILL_COLORS
from pipeline.common.box import NO_SIDES, Box
from pipeline.review.compose import feathered_paste, match_colors
from pipeline.review.quality import (
    fidelity,
    fill_leakage,
    quality_distance,
    seam_score,
    texture_score,
    untouched,
)


def scene(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 100 + 60 * np.sin(xx / 9.0) + 40 * np.cos(yy / 7.0)
    return np.clip(base[:, :, None] + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "box,expect_sides",
    [
        ((40, 30, 120, 90), (True, True, True, True)),  # centred: every side generated
        ((0, 0, 80, 60), (False, False, True, True)),  # top-left corner: touches two edges
        ((0, 30, 160, 90), (False, True, False, True)),  # full width band
    ],
)
def test_feather_only_on_generated_sides(box, expect_sides):
    W, H = 160, 120
    vx0, vy0, vx1, vy1 = box
    truth = scene()
    ref = truth[vy0:vy1, vx0:vx1]
    gen = np.full((H, W, 3), 7, np.uint8)  # a generator that got everything wrong
    box = Box(vx0, vy0, vx1, vy1)
    sides = box.sides(W, H)
    assert sides == expect_sides
    px = 6
    out = feathered_paste(gen, ref, box, sides, px)
    y0, y1, x0, x1 = untouched(vy1 - vy0, vx1 - vx0, sides, px)
    assert np.array_equal(
        out[vy0 + y0 : vy0 + y1, vx0 + x0 : vx0 + x1], ref[y0:y1, x0:x1]
    )  # exact outside the band
    v = out[vy0:vy1, vx0:vx1].astype(int)
    r = ref.astype(int)
    rows, cols = slice(y0, y1), slice(x0, x1)  # away from the corners other bands cross
    lines = ((rows, 0), (0, cols), (rows, -1), (-1, cols))
    for side, sl in zip(sides, lines):
        if side:  # generated side: the outermost line is mostly the generated value
            assert np.abs(v[sl] - 7).mean() < np.abs(r[sl] - 7).mean() * 0.5
        else:  # canvas edge: exact reference, no feather
            assert np.array_equal(v[sl], r[sl])
    assert fidelity(out, ref, box, sides, px) == (0, 0.0)
    assert fidelity(out, ref, box, sides, 0)[0] > 0  # inside the band the pixels did change


def _real_crop():
    """A real photo, and a box inside it: its own boundary is the natural reference."""
    import skimage.data

    truth = skimage.data.chelsea()  # 300 x 451
    return truth, (90, 60, 360, 240)


def test_seam_score_is_two_sided_and_a_photo_is_natural():
    """A real photo's own boundary scores ~1; a hard edge scores well above and an
    over-smoothed ramp (the generated side blurred up to the boundary) well below: both are
    far from natural."""
    truth, (vx0, vy0, vx1, vy1) = _real_crop()
    H, W = truth.shape[:2]
    box = Box(vx0, vy0, vx1, vy1)
    sides = box.sides(W, H)
    mask = np.ones((H, W), bool)
    mask[vy0:vy1, vx0:vx1] = False
    natural = seam_score(truth, box, sides)
    hard = truth.copy()
    hard[mask] = 250
    from pipeline.backends.solid import nearest_edge_fill

    canvas = truth.copy()
    canvas[mask] = 0
    # the fill continues the boundary's own values: no step at the seam at all, where the
    # photo itself steps (what the old classical fill leaned towards in its first pixels)
    ramp = nearest_edge_fill(canvas, mask)
    assert 0.8 <= natural <= 1.25
    assert seam_score(hard, box, sides) > 3
    smooth = seam_score(ramp, box, sides)
    assert smooth < 0.6
    dist = {
        k: quality_distance(
            seam_score(img, box, sides),
            texture_score(img, box, sides),
        )
        for k, img in (("natural", truth), ("hard", hard), ("ramp", ramp))
    }
    assert dist["natural"] < 0.23 < dist["ramp"] and dist["natural"] < 0.23 < dist["hard"]


def test_texture_score_flags_blur_and_noise():
    import cv2

    truth, (vx0, vy0, vx1, vy1) = _real_crop()
    H, W = truth.shape[:2]
    box = Box(vx0, vy0, vx1, vy1)
    sides = box.sides(W, H)
    mask = np.ones((H, W), bool)
    mask[vy0:vy1, vx0:vx1] = False
    blurred, noisy = truth.copy(), truth.copy()
    blurred[mask] = cv2.GaussianBlur(truth, (0, 0), 4)[mask]
    rng = np.random.default_rng(0)
    noisy[mask] = np.clip(truth.astype(int) + rng.normal(0, 40, truth.shape).astype(int), 0, 255)[
        mask
    ]
    t = {
        k: texture_score(img, box, sides)
        for k, img in (("natural", truth), ("blurred", blurred), ("noisy", noisy))
    }
    assert 0.8 <= t["natural"] <= 1.25 and t["blurred"] < 0.5 and t["noisy"] > 2.5, t
    assert texture_score(truth, Box(0, 0, W, H), NO_SIDES) is None  # nothing generated


def test_leakage_detector_catches_planted_fill():
    truth = scene()
    vx0, vy0, vx1, vy1 = 40, 30, 120, 90
    assert fill_leakage(truth, Box(vx0, vy0, vx1, vy1), "green") < 0.01
    planted = truth.copy()
    planted[0:30, 0:80] = FILL_COLORS["green"]  # fill colour left in part of the generated area
    leak = fill_leakage(planted, Box(vx0, vy0, vx1, vy1), "green")
    assert (
        abs(leak - 2400 / 14400) < 0.01
    )  # 30 x 80 planted of 160 x 120 - 80 x 60 generated pixels
    assert fill_leakage(planted, Box(vx0, vy0, vx1, vy1), "magenta") < 0.01
    assert (
        fill_leakage(planted, Box(vx0, vy0, vx1, vy1), "grey") is None
    )  # grey is not a colour fill


def test_color_match_moves_generated_area_to_the_border():
    truth = scene()
    vx0, vy0, vx1, vy1 = 40, 30, 120, 90
    ref = truth[vy0:vy1, vx0:vx1]
    shifted = np.clip(truth.astype(int) + np.array([40, -30, 20]), 0, 255).astype(np.uint8)
    box = Box(vx0, vy0, vx1, vy1)
    fixed = match_colors(shifted, ref, box, box.sides(160, 120))
    mask = np.ones((120, 160), bool)
    mask[vy0:vy1, vx0:vx1] = False
    before = np.abs(shifted[mask].astype(int) - truth[mask]).mean()
    after = np.abs(fixed[mask].astype(int) - truth[mask]).mean()
    assert after < 0.5 * before
    assert np.array_equal(fixed[~mask], shifted[~mask])  # the reference area is not touched


def test_psnr_values():
    from pipeline.review.quality import psnr

    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    assert psnr(a, b) == float("inf")
    b[0, 0, 0] = 255  # mse = 255^2 / 48 -> 10 log10(48)
    assert psnr(a, b) == pytest.approx(10 * np.log10(48))
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True  # over that pixel only: mse = 255^2 / 3
    assert psnr(a, b, mask) == pytest.approx(10 * np.log10(3))
