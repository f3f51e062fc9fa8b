"""The scene fill (``model.backend: scene``) against ``classical`` on the same canvases.

    python benchmarks/scene_fill.py --json benchmarks/results/scene_fill-DATE.json \
        --figure docs/images/scene_fill.jpg

Canvases: windows of scikit-image's photos (tests/quality_set.py), the original a part of
each window and the rest of it the true surroundings, in five layouts (sides, top and
bottom, all around, one side, a banner). Two kinds of photo: textured scenes (grass,
gravel, brick, a micrograph, a star field) and object-rich ones (a person, a cat, a cup,
coins, a motorcycle, a rocket, a camera operator, a retina). Per backend and kind: the
share of outputs passing the project's score at its defaults (``review.score.judge``),
the fine detail of the generated area over the truth's (mean |Laplacian|), the
low-passed PSNR against the truth (structure and colour, texture aside), and the CPU
time per generated megapixel (on these canvases and on a 1 MP one). ``--figure``: truth,
classical and scene side by side for docs/backends.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.record import record
from pipeline.backends import Job, make_backend
from pipeline.common.box import Box
from pipeline.config import ModelConfig, QualityThresholds
from pipeline.review.quality import lowpass_psnr
from pipeline.review.score import judge
from tests.quality_set import windows

TEXTURED = ("brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry")
OBJECTS = ("astronaut", "camera", "chelsea", "coffee", "coins", "motorcycle", "retina", "rocket")
BACKENDS = ("classical", "scene")


def _generated(shape, box: Box) -> np.ndarray:
    mask = np.ones(shape[:2], bool)
    mask[box.region] = False
    return mask


def _detail(image: np.ndarray, mask: np.ndarray) -> float:
    import cv2

    lap = np.abs(cv2.Laplacian(image.astype(np.float32).mean(axis=2), cv2.CV_32F))
    return float(lap[mask].mean())


def compare(seed: int, n: int, photos, backends: dict) -> tuple[dict, list]:
    t = QualityThresholds()
    found = {name: {"pass": [], "detail": [], "psnr": [], "s": 0.0} for name in backends}
    generated_px = 0
    examples = []
    for i, (name, window, box, _, _) in enumerate(windows(seed=seed, n=n, photos=photos)):
        H, W = window.shape[:2]
        mask = _generated(window.shape, box)
        generated_px += int(mask.sum())
        truth_detail = _detail(window, mask)
        outs = []
        for backend_name, backend in backends.items():
            job = Job(window[box.region].copy(), W, H, box.x0, box.y0, seed * 1000 + i)
            t0 = time.perf_counter()
            out = backend.outpaint([job])[0]
            f = found[backend_name]
            f["s"] += time.perf_counter() - t0
            f["pass"].append(bool(judge(out, box, t)["quality_pass"]))
            f["detail"].append(_detail(out, mask) / max(truth_detail, 1e-6))
            f["psnr"].append(lowpass_psnr(out, window, mask))
            outs.append(out)
        examples.append((name, window, box, outs))
    summary = {
        name: {
            "pass": round(float(np.mean(f["pass"])), 3),
            "detail_over_truth": round(float(np.median(f["detail"])), 3),
            "lowpass_psnr_db": round(float(np.median(f["psnr"])), 2),
            "s_per_generated_mp": round(f["s"] / (generated_px / 1e6), 3),
        }
        for name, f in found.items()
    }
    summary["canvases"] = n
    summary["truth_pass"] = round(
        float(np.mean([bool(judge(w, b, t)["quality_pass"]) for _, w, b, _ in examples])), 3
    )
    return summary, examples


def cost(backends: dict, repeats: int = 2) -> dict:
    """CPU seconds per generated MP on a 1 MP canvas (a photo in the middle 2/3)."""
    import skimage.data
    from PIL import Image

    side = 1000
    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((side, side)))
    x0 = side // 6
    ref = photo[:, x0 : side - x0].copy()
    generated = side * side - ref.shape[0] * ref.shape[1]
    out = {}
    for name, backend in backends.items():
        backend.outpaint([Job(ref, side, side, x0, 0, 0)])  # warm
        t0 = time.perf_counter()
        for k in range(repeats):
            backend.outpaint([Job(ref, side, side, x0, 0, k)])
        out[name] = round((time.perf_counter() - t0) / repeats / (generated / 1e6), 3)
    return out


def figure(examples: list, path: str, picks: int = 6) -> None:
    """Rows of truth | classical | scene for ``picks`` canvases of each kind."""
    from PIL import Image, ImageDraw

    height, gap, label = 200, 8, 24
    rows = []
    for name, window, _, outs in examples[:picks]:
        tiles = [window, *outs]
        scaled = [
            Image.fromarray(x).resize((round(x.shape[1] * height / x.shape[0]), height))
            for x in tiles
        ]
        width = sum(s.width for s in scaled) + gap * (len(scaled) - 1)
        row = Image.new("RGB", (width, height + label), "white")
        draw = ImageDraw.Draw(row)
        x = 0
        for caption, s in zip(("truth", *BACKENDS), scaled):
            row.paste(s, (x, label))
            draw.text((x + 4, 6), f"{caption} - {name.split('/')[0]}", fill=(0, 0, 0))
            x += s.width + gap
        rows.append(row)
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height + gap for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + gap
    out.save(path, quality=88)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--json")
    p.add_argument("--figure")
    args = p.parse_args()
    backends = {name: make_backend(ModelConfig(backend=name)) for name in BACKENDS}
    textured, tex_examples = compare(args.seed, args.windows, TEXTURED, backends)
    objects, obj_examples = compare(args.seed, args.windows, OBJECTS, backends)
    if args.figure:
        figure(tex_examples[:4] + obj_examples[:3], args.figure, picks=7)
    record(
        {
            "textured": textured,
            "object_rich": objects,
            "s_per_generated_mp_at_1mp": cost(backends),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
