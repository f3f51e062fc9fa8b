"""Crop-and-restore quality of the CPU backends: cut a real photo, outpaint it back to its
original size, compare the new area with the truth.

Methods, same crops, same run: ``classical`` (ours), OpenCV's Telea inpainting (the
usual CPU baseline, radius 5), PatchMatch (``pypatchmatch``, exemplar synthesis; skipped
if not installed) and ``solid`` (edge extension). For each photo of scikit-image's
bundled set and each crop (centre 60 %, a side band, a corner), three measures of the
restored area against the truth, then the means:

- low-pass PSNR (Gaussian σ = 4): structure and colour (higher is better);
- texture: mean |Laplacian| of the new area over the photo's own there (1 = as textured
  as the photo; << 1 blurred, >> 1 noisy);
- seam: step across the boundary over the step just inside (the photo itself ~1; above a
  hard edge, below an over-smoothed ramp).

Target (issue 17) for classical: PSNR >= 15.9 dB, texture 0.6-1.4, seam 0.8-1.25, all on
the means, at <= 1 s per output megapixel on one core.

    python benchmarks/classical_quality.py [--no-patchmatch]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline import config as config_mod
from pipeline.backends import Job
from pipeline.backends.classical import ClassicalBackend
from pipeline.backends.solid import SolidBackend
from pipeline.common.box import Box
from pipeline.review.compose import paste_back
from pipeline.review.quality import psnr, seam_score

PHOTOS = [
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "camera.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
]


def crops(h: int, w: int):
    yield "centre60", (int(h * 0.2), int(w * 0.2), int(h * 0.8), int(w * 0.8))
    yield "left70", (0, int(w * 0.3), h, w)  # extend to the left only
    yield "corner", (0, 0, int(h * 0.7), int(w * 0.7))  # extend right and down


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
    along, across = (
        (dx, dy)
        if horizontal and not (top or bottom)
        else ((dy, dx) if (top or bottom) and not horizontal else (min(dx, dy), max(dx, dy)))
    )
    return float(across / (along + 0.05))


def patchmatch(canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from patchmatch import patch_match

    return patch_match.inpaint(canvas, mask.astype(np.uint8), patch_size=3)


def texture(out: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    import cv2

    lap = [
        np.abs(cv2.Laplacian(x.astype(np.float32).mean(axis=2), cv2.CV_32F, ksize=1))[mask]
        for x in (out, truth)
    ]
    return float((lap[0].mean() + 0.05) / (lap[1].mean() + 0.05))


def main() -> int:
    import skimage

    from pipeline.review.quality import lowpass_psnr
    from tests.conftest import read_png

    data = Path(skimage.__file__).parent / "data"
    cfg = config_mod.from_dict({"input": {"manifest": "-"}, "output": {"uri": "-"}})
    classical = ClassicalBackend(cfg.model)
    solid = SolidBackend(
        config_mod.from_dict(
            {"input": {"manifest": "-"}, "output": {"uri": "-"}, "model": {"backend": "solid"}}
        ).model
    )
    methods = {
        "classical": lambda job: classical.outpaint([job])[0],
        "telea": lambda job: telea(*job.canvas()),
        "solid": lambda job: solid.outpaint([job])[0],
    }
    try:
        if "--no-patchmatch" not in sys.argv:
            from patchmatch import patch_match

            if patch_match.patchmatch_available:
                methods["patchmatch"] = lambda job: patchmatch(*job.canvas())
    except ImportError:
        print("pypatchmatch not installed: PatchMatch skipped (pip install pypatchmatch)")
    keys = ("lp_psnr", "texture", "seam", "psnr", "streak")
    results = {k: {**{m: [] for m in keys}, "s": 0.0, "mp": 0.0} for k in methods}
    print(f"{'photo':<24}{'crop':<10}" + "".join(f"{k + ' lpPSNR/tex/seam':>30}" for k in methods))
    for name in PHOTOS:
        truth = read_png(data / name)
        H, W = truth.shape[:2]
        for crop, (y0, x0, y1, x1) in crops(H, W):
            ref = truth[y0:y1, x0:x1]
            job = Job(ref, W, H, x0, y0, seed=0)
            mask = np.ones((H, W), bool)
            mask[y0:y1, x0:x1] = False
            box = Box(x0, y0, x1, y1)
            sides = box.sides(W, H)
            line = f"{name:<24}{crop:<10}"
            for k, fn in methods.items():
                t0 = time.perf_counter()
                out = paste_back(fn(job), ref, box)
                r = results[k]
                r["s"] += time.perf_counter() - t0
                r["mp"] += H * W / 1e6
                r["lp_psnr"].append(lowpass_psnr(out, truth, mask))
                r["texture"].append(texture(out, truth, mask))
                r["seam"].append(seam_score(out, box, sides))
                r["psnr"].append(psnr(out, truth, mask))
                r["streak"].append(streak_index(out, mask, sides))
                line += (
                    f"{r['lp_psnr'][-1]:>18.2f} / {r['texture'][-1]:4.2f} / {r['seam'][-1]:4.2f}"
                )
            print(line, flush=True)
    truth_seams = []
    for name in PHOTOS:  # the photo's own boundary, for reference
        truth = read_png(data / name)
        H, W = truth.shape[:2]
        for _, (y0, x0, y1, x1) in crops(H, W):
            truth_seams.append(
                seam_score(truth, Box(x0, y0, x1, y1), Box(x0, y0, x1, y1).sides(W, H))
            )
    n = len(results["classical"]["psnr"])
    print(
        f"\nmeans over {n} crops of {len(PHOTOS)} photos; the photos themselves: seam "
        f"{np.mean(truth_seams):.2f}, texture 1.00"
    )
    print(
        f"{'method':<12}{'lowpass PSNR':>13}{'texture':>9}{'seam':>7}{'PSNR':>8}{'streak':>8}{'s/MP':>8}"
    )
    for k, r in results.items():
        print(
            f"{k:<12}{np.mean(r['lp_psnr']):>10.2f} dB{np.mean(r['texture']):>9.2f}{np.mean(r['seam']):>7.2f}"
            f"{np.mean(r['psnr']):>8.2f}{np.mean(r['streak']):>8.2f}{r['s'] / r['mp']:>8.2f}"
        )
    c = results["classical"]
    ok = (
        np.mean(c["lp_psnr"]) >= 15.9,
        0.6 <= np.mean(c["texture"]) <= 1.4,
        0.8 <= np.mean(c["seam"]) <= 1.25,
        c["s"] / c["mp"] <= 1.0,
    )
    print(
        "classical targets (lowpass PSNR >= 15.9, texture 0.6-1.4, seam 0.8-1.25, <= 1 s/MP): "
        + ", ".join("met" if x else "MISSED" for x in ok)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
