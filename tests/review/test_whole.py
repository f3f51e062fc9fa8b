"""The score's whole-area checks (pipeline/review/whole.py, the scaled copies of
``repeat``), judged on what they were not fitted on: photos held out of the fit
(tests/quality_set.py's ``HELD_PHOTOS``), defect families without the column made for
them (leave one family out), and other algorithms' real outputs (OpenCV's inpainting
methods, labelled by a rule on the true surroundings the score never sees)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import QualityThresholds
from pipeline.review.score import DEFECTS, REGION_COLUMNS, judge, score

from ..quality_set import (
    HELD_PHOTOS,
    OWN_COLUMN,
    WHOLE_DEFECTS,
    auc,
    defect,
    labelled_set,
    tool_set,
    windows,
)

# measured on the held-out photos (benchmarks/RESULTS.md, issue 41); the floors sit under
# the figures with room for another CPU's last bits. Below the goal of 0.95:
# copy (a smaller copy of the subject at an unknown scale) and shift (lines broken by
# 3-8 px), which the score does not yet see well
FLOORS = {
    "blob": 0.88,
    "frame": 0.93,
    "bars": 0.95,
    "copy": 0.62,
    "patch": 0.94,
    "smear": 0.94,
    "shift": 0.52,
}


@pytest.fixture(scope="module")
def held():
    """The held-out photos' windows: true continuations and every whole-area defect, with
    their columns (not rounded) and judged distance."""
    t = QualityThresholds()
    out = []
    for c in labelled_set(seed=3, n=36, photos=HELD_PHOTOS, kinds=WHOLE_DEFECTS):
        cols = score(c.image, c.box)
        out.append((c.kind, cols, max(cols[k] / getattr(t, k) for k in DEFECTS)))
    return out


def _distances(held, kind):
    return [d for k, _, d in held if k == kind]


def test_whole_area_defects_rank_above_true_continuations_on_held_out_photos(held):
    true = _distances(held, "true")
    assert len(true) == 36
    found = {kind: auc(true, _distances(held, kind)) for kind in WHOLE_DEFECTS}
    low = {k: round(v, 3) for k, v in found.items() if v < FLOORS[k]}
    assert not low, f"AUC under the floor: {low} (all: {found})"


def test_the_defaults_fail_the_blatant_ones_and_keep_true_continuations(held):
    true = np.array(_distances(held, "true"))
    assert (true <= 1).mean() >= 0.8  # the seam columns' own false alarms included
    for kind, least in (("blob", 0.8), ("frame", 0.9), ("bars", 0.95), ("patch", 0.9)):
        failed = np.mean([d > 1 for d in _distances(held, kind)])
        assert failed >= least, (kind, failed)


@pytest.mark.parametrize(
    "family, floor", [("bars", 0.9), ("patch", 0.85), ("frame", 0.85), ("smear", 0.7)]
)
def test_a_family_is_still_caught_without_the_column_made_for_it(held, family, floor):
    """Leave one family out: its own column dropped, the rest still rank it above true
    continuations (bars and patches are also flat; a smear loses detail at the seam's
    scale too; a frame is flat and has a line). Blobs and copies have no second column
    (benchmarks/RESULTS.md gives their figures)."""
    t = QualityThresholds()
    rest = [k for k in DEFECTS if k != OWN_COLUMN[family]]

    def without(kind):
        return [max(c[k] / getattr(t, k) for k in rest) for k2, c, _ in held if k2 == kind]

    assert auc(without("true"), without(family)) >= floor


def test_the_region_of_a_failing_row_is_where_the_defect_is():
    """A frame drawn along the canvas edge: the region named is a strip at a canvas edge;
    a blank patch: the region overlaps the patch. A passing row names none."""
    t = QualityThresholds()
    rng = np.random.default_rng(5)
    (name, window, box, photo, origin), *_ = windows(seed=9, n=1, photos=("astronaut",))
    H, W = window.shape[:2]
    got = judge(defect("frame", window, box, photo, origin, rng), box, t)
    assert got["quality_pass"] is False and got["quality_defect"] in ("frame", "blank", "flat")
    x0, y0, x1, y1 = (got[c] for c in REGION_COLUMNS)
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    outside = x1 <= box.x0 or x0 >= box.x1 or y1 <= box.y0 or y0 >= box.y1
    assert outside, ((x0, y0, x1, y1), box)  # in the generated area, not the original

    patch = window.copy()
    patch[40:120, 4:40] = 128  # a flat grey block in the left generated side
    assert box.x0 >= 48  # the window's layout leaves a left side that deep
    got = judge(patch, box, t)
    assert got["quality_defect"] == "blank", got
    x0, y0, x1, y1 = (got[c] for c in REGION_COLUMNS)
    assert x0 <= 8 and x1 >= 36 and y0 <= 44 and y1 >= 116, (x0, y0, x1, y1)

    passing = [judge(w, b, t) for _, w, b, _, _ in windows(seed=9, n=6)]
    passing = [j for j in passing if j["quality_pass"]]
    assert passing  # most true continuations pass (test_score.py)
    assert all(j[c] is None for j in passing for c in REGION_COLUMNS)


@pytest.fixture(scope="module")
def tools():
    """OpenCV's inpainting methods outpainting held-out windows (small windows: the patch
    methods take about a second each on this machine)."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "xphoto"):
        pytest.skip("opencv-contrib (cv2.xphoto) is a test dependency: pip install -e '.[test]'")
    t = QualityThresholds()
    out = []
    for case, block in tool_set(seed=4, n=16, photos=HELD_PHOTOS, size=(160, 140)):
        out.append((case.kind, block, judge(case.image, case.box, t)))
    return out


def test_other_tools_foreign_colour_blocks_fail(tools):
    """The labelling rule (``foreign_block``): a block of 0.5 % of the canvas or more in
    colours 25 CIELAB units from every colour of the true window. Those outputs fail: 6 of
    7 here (the issue's goal, 95 %, is not met: the miss is a shift-map output with two
    thin bars of saturated blue, 2.3 % of the canvas, under the foreign threshold)."""
    blocks = [j for _, block, j in tools if block >= 0.005]
    assert len(blocks) >= 3  # the rule finds some: shift-map and FSR make them
    failed = np.mean([not j["quality_pass"] for j in blocks])
    assert failed >= 0.85, failed


def test_other_tools_smeared_extensions_mostly_fail(tools):
    """Telea and Navier-Stokes propagate the border into the whole generated area:
    streaks and smears, never a plausible scene at these depths."""
    for tool in ("telea", "ns"):
        judged = [j for kind, _, j in tools if kind == tool]
        assert len(judged) == 16
        failed = np.mean([not j["quality_pass"] for j in judged])
        assert failed >= 0.75, (tool, failed)
