"""The quality score on a labelled set made from real photos (tests/quality_set.py): true
continuations against nine defect kinds, scored with the default thresholds, on windows
the thresholds were not fitted on (seed 2; they were fitted on seeds 0 and 1)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import api
from pipeline.common import precision
from pipeline.common.box import Box
from pipeline.config import QualityThresholds
from pipeline.io import backdrop
from pipeline.review.score import COLUMNS, DEFECTS, REGION_COLUMNS, judge, score

from ..backdrops import KINDS, product_photo
from ..quality_set import DEFECTS as KINDS_OF_DEFECT
from ..quality_set import auc, labelled_set

# measured on this set (benchmarks/RESULTS.md); the floors leave room for another CPU's
# last bits, and say where the score falls short of the goals (structure)
FLOORS = {
    "cast": 0.93,
    "step": 0.9,
    "blur": 0.9,
    "noise": 0.88,
    "flat": 0.97,
    "mirror": 0.96,
    "stretch": 0.94,
    "structure": 0.8,
    "repeat": 0.91,
}


@pytest.fixture(scope="module")
def scored():
    cases = labelled_set(seed=2, n=60, kinds=KINDS_OF_DEFECT)
    t = QualityThresholds()
    return [(c.kind, judge(c.image, c.box, t)["quality_distance"]) for c in cases]


def test_each_defect_kind_ranks_above_true_continuations(scored):
    true = [d for k, d in scored if k == "true"]
    assert len(true) == 60
    found = {kind: auc(true, [d for k, d in scored if k == kind]) for kind in KINDS_OF_DEFECT}
    low = {k: round(v, 3) for k, v in found.items() if v < FLOORS[k]}
    assert not low, f"AUC under the floor: {low} (all: {found})"
    overall = auc(true, [d for k, d in scored if k != "true"])
    assert overall >= 0.92, overall


def test_the_defaults_pass_most_true_continuations_and_fail_most_defects(scored):
    true = np.array([d for k, d in scored if k == "true"])
    defects = np.array([d for k, d in scored if k != "true"])
    assert (true <= 1).mean() >= 0.88
    assert (defects > 1).mean() >= 0.88
    # the unmistakable ones fail nearly every time
    for kind in ("mirror", "stretch", "flat"):
        assert np.mean([d > 1 for k, d in scored if k == kind]) >= 0.95, kind


@pytest.mark.parametrize("kind", KINDS)
def test_a_studio_backdrop_continued_by_the_fill_passes(kind):
    img, _ = product_photo(kind, 500, 600, seed=3)
    for W, H in ((800, 600), (600, 800), (900, 900)):
        box = Box.placed((W - 500) // 2, (H - 600) // 2, 500, 600)
        found = backdrop.analyse(img, box.sides(W, H))
        out = backdrop.fill(img, found, W, H, box, seed=1)
        got = judge(out, box, QualityThresholds())
        assert got["quality_pass"] is True, (kind, W, H, got)
        assert got["quality_distance"] < 0.8 and got["quality_defect"] is None


def test_columns_and_nothing_generated():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)
    assert score(img, Box(0, 0, 120, 100)) is None
    none = judge(img, Box(0, 0, 120, 100), QualityThresholds())
    assert set(none) == {
        *COLUMNS,
        *REGION_COLUMNS,
        "quality_distance",
        "quality_pass",
        "quality_defect",
    }
    assert all(v is None for v in none.values())
    cols = score(img, Box(20, 10, 100, 90))
    assert list(cols) == list(DEFECTS) and all(v >= 0 for v in cols.values())


def test_a_tighter_threshold_fails_what_the_default_passes():
    case = next(c for c in labelled_set(seed=1, n=12) if c.kind == "cast")
    loose = judge(case.image, case.box, QualityThresholds(color=1000.0, seam=1000.0))
    strict = judge(case.image, case.box, QualityThresholds())
    assert strict["quality_pass"] is False and strict["quality_defect"] == "color"
    assert loose["quality_distance"] < strict["quality_distance"]


def test_outpaint_score_on_a_table_of_any_tool_s_images(tmp_path, capsys):
    """``outpaint score`` over a CSV of images (ids, paths, boxes): every row scored or a
    ``score_error`` saying why (a missing file, a box outside the image), none lost."""
    from pipeline.cli import main

    cases = [c for c in labelled_set(seed=2, n=3) if c.kind in ("true", "mirror")]
    rows = []
    for i, c in enumerate(cases):
        path = tmp_path / f"{i}.png"
        Image.fromarray(c.image).save(path)
        rows.append({"id": f"r{i}-{c.kind}", "image": str(path), **_box(c.box)})
    rows.append({"id": "gone", "image": str(tmp_path / "nope.png"), **_box(Box(1, 1, 5, 5))})
    rows.append({"id": "outside", "image": rows[0]["image"], **_box(Box(0, 0, 5000, 10))})
    import pyarrow.csv as pcsv

    pcsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "in.csv")
    out = tmp_path / "scores.parquet"
    assert main(["score", str(tmp_path / "in.csv"), "--out", str(out)]) == 0
    got = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert len(got) == len(rows)
    assert "image_not_found" in got["gone"]["score_error"]
    assert "not inside" in got["outside"]["score_error"]
    for rid, r in got.items():
        if rid.endswith("-mirror"):
            assert r["quality_pass"] is False and r["quality_defect"] == "mirror"
        if rid.endswith("-true"):
            assert r["score_error"] is None and r["quality_distance"] is not None
    assert "scored 6 of 8 rows" in capsys.readouterr().out
    # missing columns: a clear error naming them, exit 2
    pcsv.write_csv(pa.table({"id": ["a"], "image": ["x"]}), tmp_path / "bad.csv")
    assert main(["score", str(tmp_path / "bad.csv"), "--out", str(out)]) == 2
    assert "visible_x0" in capsys.readouterr().err


def _box(box: Box) -> dict:
    return {
        "visible_x0": box.x0,
        "visible_y0": box.y0,
        "visible_x1": box.x1,
        "visible_y1": box.y1,
    }


def test_api_score_matches_the_stage_s_judgement(tmp_path):
    case = next(c for c in labelled_set(seed=3, n=2) if c.kind == "true")
    path = tmp_path / "a.png"
    Image.fromarray(case.image).save(path)
    table = pa.Table.from_pylist([{"id": "a", "image": str(path), **_box(case.box)}])
    pq.write_table(table, tmp_path / "m.parquet")
    got = api.score(str(tmp_path / "m.parquet")).to_pylist()[0]
    want = judge(case.image, case.box, QualityThresholds())
    assert precision.same_stored(
        "quality_distance", got["quality_distance"], want["quality_distance"]
    )
    assert got["quality_pass"] == want["quality_pass"]
