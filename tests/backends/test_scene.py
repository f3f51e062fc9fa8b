"""``scene``: the patch-based CPU fill, on real photos (scikit-image's): sizes and the
original exact, seeded (batched == single), sources only from the original's border
band, and textures continued where ``classical`` smears (judged by the project's score
and against the photos' true surroundings)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.backends import Job, make_backend
from pipeline.backends.scene import BORDER, scene_fill
from pipeline.common.box import Box
from pipeline.config import ModelConfig, QualityThresholds
from pipeline.review.score import judge

from ..quality_set import LAYOUTS, _photos, windows


@pytest.fixture(scope="module")
def photos():
    return _photos()


def _job(window: np.ndarray, box: Box, seed: int) -> Job:
    H, W = window.shape[:2]
    return Job(window[box.region].copy(), W, H, box.x0, box.y0, seed)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_canvas_is_the_size_asked_and_the_original_exact(photos, layout):
    H, W = 150, 190
    fx0, fy0, fx1, fy1 = LAYOUTS[layout]
    box = Box(round(fx0 * W), round(fy0 * H), round(fx1 * W), round(fy1 * H))
    window = photos["chelsea"][:H, :W]
    out = scene_fill(window[box.region], W, H, box.x0, box.y0, 3)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.array_equal(out[box.region], window[box.region])
    generated = np.ones((H, W), bool)
    generated[box.region] = False
    assert out[generated].std() > 5  # the canvas filled with the photo, not left black


@pytest.mark.parametrize(
    "ref_shape, canvas, at",
    [((4, 4), (64, 64), (30, 30)), ((40, 3), (40, 64), (30, 0)), ((2, 90), (60, 90), (0, 29))],
)
def test_originals_too_small_for_a_block_still_give_a_whole_canvas(ref_shape, canvas, at):
    ref = np.random.default_rng(0).integers(0, 256, (*ref_shape, 3), dtype=np.uint8)
    H, W = canvas
    x0, y0 = at
    out = scene_fill(ref, W, H, x0, y0, 1)
    assert out.shape == (H, W, 3)
    assert np.array_equal(out[y0 : y0 + ref_shape[0], x0 : x0 + ref_shape[1]], ref)
    # copies of the original and blends of them: within its range on every channel
    lo, hi = ref.reshape(-1, 3).min(0), ref.reshape(-1, 3).max(0)
    assert ((out >= lo) & (out <= hi)).all()


def test_seeded_and_batched_equal_single(photos):
    cases = windows(seed=2, n=3)
    jobs = [_job(w, b, 10 + i) for i, (_, w, b, _, _) in enumerate(cases)]
    backend = make_backend(ModelConfig(backend="scene"))
    together = backend.outpaint(jobs)
    alone = [backend.outpaint([j])[0] for j in jobs]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))
    again = backend.outpaint([_job(cases[0][1], cases[0][2], 10)])[0]
    assert np.array_equal(again, together[0])
    other = backend.outpaint([_job(cases[0][1], cases[0][2], 11)])[0]
    assert not np.array_equal(other, together[0])  # another seed, other sources
    assert jobs[0].fill_color == "none"


def test_nothing_deeper_than_the_border_band_is_copied(photos):
    """A magenta square in the middle of the original (the subject, deeper than
    ``BORDER`` of the original from every generated side) never reaches the generated
    area; the grass around it does."""
    grass = photos["grass"][:200, :200].copy()
    grass[80:120, 80:120] = (255, 0, 255)
    W, H = 360, 320
    box = Box(80, 60, 280, 260)
    assert BORDER * 200 < 80  # the square lies deeper than the band on every side
    out = scene_fill(grass, W, H, box.x0, box.y0, 5)
    generated = np.ones((H, W), bool)
    generated[box.region] = False
    magenta = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] > 200)
    assert magenta[box.region].sum() == 40 * 40
    assert not magenta[generated].any()


def _detail(image: np.ndarray, box: Box) -> float:
    lap = np.abs(cv2.Laplacian(image.astype(np.float32).mean(axis=2), cv2.CV_32F))
    generated = np.ones(image.shape[:2], bool)
    generated[box.region] = False
    return float(lap[generated].mean())


def test_textures_continue_where_classical_smears():
    """Windows of real textures (grass, gravel, brick; true surroundings known): the scene
    fill passes the score on most (the truth itself passes 13 of these 15) and keeps the
    detail of the truth; ``classical`` on the same canvases fails it (its mirrored
    texture) on nearly all."""
    t = QualityThresholds()
    classical = make_backend(ModelConfig(backend="classical"))
    scene = make_backend(ModelConfig(backend="scene"))
    cases = windows(seed=6, n=15, photos=("grass", "gravel", "brick"))
    passed = {"scene": 0, "classical": 0}
    ratios = []
    for i, (_, window, box, _, _) in enumerate(cases):
        for name, backend in (("scene", scene), ("classical", classical)):
            out = backend.outpaint([_job(window, box, i)])[0]
            passed[name] += bool(judge(out, box, t)["quality_pass"])
            if name == "scene":
                ratios.append(_detail(out, box) / _detail(window, box))
    assert passed["scene"] >= 10, passed
    assert passed["classical"] <= 3, passed
    assert 0.75 <= float(np.median(ratios)) <= 1.25, ratios


def test_the_border_measures_tell_textures_from_objects_and_lines():
    """What the cascade asks before it tries the scene fill, on real photos: gravel and
    grass are textures without long lines; a brick wall is a texture of straight lines;
    people, cups and coins are not textures at all."""
    from pipeline.backends.scene import border_lines, border_variation
    from pipeline.config import SceneConfig

    limits = SceneConfig()

    def measured(photos):
        out = []
        for _, window, box, _, _ in windows(seed=11, n=20, photos=photos):
            H, W = window.shape[:2]
            ref, sides = window[box.region], box.sides(W, H)
            out.append((border_variation(ref, sides), border_lines(ref, sides)))
        return np.array(out)

    textures = measured(("gravel", "grass"))
    assert (textures[:, 0] <= limits.max_variation).all()
    assert (textures[:, 1] <= limits.max_lines).all()
    brick = measured(("brick",))
    assert (brick[:, 0] <= limits.max_variation).mean() >= 0.9  # a texture...
    assert (brick[:, 1] > limits.max_lines).all()  # ... of straight lines
    objects = measured(("astronaut", "coffee", "coins"))
    assert (objects[:, 0] > limits.max_variation).all()
    nothing = (False, False, False, False)  # no generated side: nothing to judge
    photo = _photos()["brick"][:64, :64]
    assert border_variation(photo, nothing) == 0.0 and border_lines(photo, nothing) == 0.0
