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


def _records(cases: list) -> list:
    """Work rows as the routing stage receives them: (kind, name, truth, box) each."""
    from pipeline.run.load import from_columns
    from pipeline.run.records import Record

    out = []
    for i, (kind, name, truth, box) in enumerate(cases):
        H, W = truth.shape[:2]
        row = {
            "id": f"{kind}/{name}",
            "status": "ok",
            "generated": True,
            "canvas_width": W,
            "canvas_height": H,
            "visible_x0": box.x0,
            "visible_y0": box.y0,
            "visible_x1": box.x1,
            "visible_y1": box.y1,
            "seed": 7000 + i,
            "route": None,
            "num_variants": 1,
            "ref_pixels": np.ascontiguousarray(truth[box.region]).tobytes(),
        }
        out.append(Record(row, ref=from_columns(row, "relative")))
    return out


def cascade(seed: int, n: int, sample: str | None = None) -> dict:
    """``model.route: cascade``'s routing stage (``run.route.BackdropStage``, as a run
    builds it) on a mixed set: studio product shots (the cup on four backdrops), textured
    and object-rich scenes. Per kind: rows per step; CPU time per generated MP of the
    routing stage. ``sample``: a picture of every row the scene fill kept, to judge by eye."""
    from pipeline.config import OutputConfig, QualityConfig, SizingConfig
    from pipeline.review.gate import Gate
    from pipeline.run.route import BackdropStage
    from tests.backdrops import KINDS, product_photo

    studio = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        truth, _ = product_photo(kind, 320, 256, size=120, seed=i)
        x0 = 48 + (i % 3) * 16
        studio.append(("studio", f"{kind}/{i}", truth, Box(x0, 0, x0 + 200, 256)))
    sets = {
        "studio": studio,
        "textured": [("textured", w[0], w[1], w[2]) for w in windows(seed, n, photos=TEXTURED)],
        "object_rich": [
            ("object_rich", w[0], w[1], w[2]) for w in windows(seed, n, photos=OBJECTS)
        ],
    }
    stage = BackdropStage(
        ModelConfig(route="cascade"),
        SizingConfig(),
        "relative",
        None,
        Gate.of(QualityConfig(), OutputConfig(uri="-"), keeps_reference=False),
    )
    out, kept = {}, []
    for kind, cases in sets.items():
        recs = _records(cases)
        t0 = time.perf_counter()
        stage.process(recs)
        wall = time.perf_counter() - t0
        generated = sum(int(_generated(c[2].shape, c[3]).sum()) for c in cases)
        routes = [r.row.get("route") for r in recs]
        tried = sum(r.row.get("scene_distance") is not None for r in recs)
        out[kind] = {
            "rows": len(recs),
            "backdrop": routes.count("backdrop"),
            "scene": routes.count("scene"),
            "model": routes.count("model"),
            "scene_tried": tried,
            "routing_s_per_generated_mp": round(wall / (generated / 1e6), 3),
        }
        kept += [(r.row["id"], r.out[0]) for r in recs if r.row.get("route") == "scene"]
    rows = sum(v["rows"] for v in out.values())
    out["model_rows"] = {
        "route_model": rows,
        "route_auto": rows - sum(v["backdrop"] for v in out.values()),
        "route_cascade": sum(v["model"] for v in out.values()),
    }
    if sample and kept:
        _sheet(kept, sample)
    return out


def _sheet(kept: list, path: str, height: int = 160, cols: int = 6) -> None:
    from PIL import Image, ImageDraw

    tiles = []
    for k, (name, image) in enumerate(kept):
        im = Image.fromarray(image)
        im = im.resize((round(im.width * height / im.height), height))
        ImageDraw.Draw(im).text((3, 3), f"{k} {name}", fill=(255, 0, 0))
        tiles.append(im)
    w = max(t.width for t in tiles) + 4
    sheet = Image.new("RGB", (cols * w, -(-len(tiles) // cols) * (height + 4)), "white")
    for k, im in enumerate(tiles):
        sheet.paste(im, ((k % cols) * w, (k // cols) * (height + 4)))
    sheet.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--json")
    p.add_argument("--figure")
    p.add_argument("--sample", help="a picture of the rows the cascade's scene step kept")
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
            "cascade": cascade(args.seed, args.windows, args.sample),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
