"""Crop-and-restore quality of the CPU backends: cut a real photo, outpaint it back to its
original size, compare the new area with the truth.

Backends, same crops, same run: ``classical`` (ours), OpenCV's Telea inpainting (the
usual CPU baseline, radius 5) and ``solid`` (edge extension). For each photo of
scikit-image's bundled set and each crop (centre 60 %, a side band, a corner) prints
PSNR over the restored area (higher is better), seam score (gradient across the boundary
over the gradient inside; ~1 is seamless, higher shows a seam) and a streak index (mean
|difference| between neighbouring rows/columns of the generated area along the extension
direction, relative to across it: high = streaks), then the means.

    python benchmarks/classical_quality.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline import config as config_mod  # noqa: E402
from pipeline.backends import Job  # noqa: E402
from pipeline.backends.classical import ClassicalBackend  # noqa: E402
from pipeline.backends.solid import SolidBackend  # noqa: E402
from pipeline.compose import generated_sides, paste_back  # noqa: E402
from pipeline.quality import psnr, seam_score  # noqa: E402

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg", "motorcycle_left.png",
          "retina.jpg", "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png", "moon.png"]


def crops(h: int, w: int):
    yield "centre60", (int(h * .2), int(w * .2), int(h * .8), int(w * .8))
    yield "left70", (0, int(w * .3), h, w)             # extend to the left only
    yield "corner", (0, 0, int(h * .7), int(w * .7))    # extend right and down


def telea(canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.inpaint(canvas, mask.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)


def streak_index(out: np.ndarray, mask: np.ndarray, sides) -> float:
    """Edge-replicating methods leave lines parallel to the extension direction."""
    g = out.astype(np.float32).mean(axis=2)
    dy = np.abs(np.diff(g, axis=0))[mask[1:] & mask[:-1]].mean()
    dx = np.abs(np.diff(g, axis=1))[mask[:, 1:] & mask[:, :-1]].mean()
    left, top, right, bottom = sides
    horizontal = left or right  # extended sideways: streaks run horizontally -> small dx, large dy
    along, across = (dx, dy) if horizontal and not (top or bottom) else ((dy, dx) if (top or bottom) and not horizontal
                                                                          else (min(dx, dy), max(dx, dy)))
    return float(across / (along + 0.05))


def main() -> int:
    import skimage

    from tests.conftest import read_png

    data = Path(skimage.__file__).parent / "data"
    cfg = config_mod.from_dict({"input": {"manifest": "-"}, "output": {"uri": "-"}})
    classical = ClassicalBackend(cfg.model)
    solid = SolidBackend(config_mod.from_dict({"input": {"manifest": "-"}, "output": {"uri": "-"},
                                               "model": {"backend": "solid"}}).model)
    methods = {"classical": lambda job: classical.outpaint([job])[0],
               "telea": lambda job: telea(*job.canvas()),
               "solid": lambda job: solid.outpaint([job])[0]}
    results = {k: {"psnr": [], "seam": [], "streak": [], "s": 0.0} for k in methods}
    print(f"{'photo':<24}{'crop':<10}" + "".join(f"{k + ' psnr/seam':>22}" for k in methods))
    for name in PHOTOS:
        truth = read_png(data / name)
        H, W = truth.shape[:2]
        for crop, (y0, x0, y1, x1) in crops(H, W):
            ref = truth[y0:y1, x0:x1]
            job = Job(ref, W, H, x0, y0, seed=0)
            mask = np.ones((H, W), bool)
            mask[y0:y1, x0:x1] = False
            sides = generated_sides(W, H, x0, y0, x1, y1)
            line = f"{name:<24}{crop:<10}"
            for k, fn in methods.items():
                t0 = time.perf_counter()
                out = paste_back(fn(job), ref, x0, y0)
                results[k]["s"] += time.perf_counter() - t0
                p, s = psnr(out, truth, mask), seam_score(out, x0, y0, x1, y1, sides)
                results[k]["psnr"].append(p)
                results[k]["seam"].append(s)
                results[k]["streak"].append(streak_index(out, mask, sides))
                line += f"{p:>14.2f} / {s:5.2f}"
            print(line)
    n = len(results["classical"]["psnr"])
    print(f"\nmeans over {n} crops of {len(PHOTOS)} photos (truth seam score for reference: a real photo scores ~1)")
    for k, r in results.items():
        print(f"{k:<10} PSNR {np.mean(r['psnr']):6.2f} dB   seam {np.mean(r['seam']):5.2f}   "
              f"streak index {np.mean(r['streak']):5.2f}   {1000 * r['s'] / n:7.1f} ms/image")
    wins = sum(a > b for a, b in zip(results["classical"]["psnr"], results["telea"]["psnr"]))
    print(f"classical beats telea on PSNR in {wins}/{n} crops; "
          f"seam lower in {sum(a < b for a, b in zip(results['classical']['seam'], results['telea']['seam']))}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
