"""Colour management and big-source decoding, measured in one run (ratios: noisy machines).

1. Cost of colour management per output megapixel: the load stage (decode, scale, crop,
   reference to sRGB) plus the write stage's paste-back (generated pixels into the
   output's space) and PNG encode, for an untagged sRGB source (the common case: no
   transform at all) against Adobe RGB, ProPhoto, grey-with-profile and CMYK sources of
   the same photo; and the colour steps alone (ms per MP).
2. Draft decoding: a 24 MP JPEG planned onto a 1 MP canvas, the load stage with reduced-size
   decoding (``Image.draft``) against a full decode, on a natural photo and on a detailed
   mosaic; output difference in levels.

    python benchmarks/color_cost.py [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipeline import config as config_mod  # noqa: E402
from pipeline.backends import Job, make_backend  # noqa: E402
from pipeline.io.headers import SourceLimits  # noqa: E402
from pipeline.io.imageio import decode, encode, resize  # noqa: E402
from pipeline.io.outputs import OutputStore  # noqa: E402
from pipeline.plan.stage import PlanStage  # noqa: E402
from pipeline.run.stages import LoadStage, WriteStage  # noqa: E402

ICC = Path("/usr/share/color/icc")
PROFILES = {
    "adobe": ICC / "colord/AdobeRGB1998.icc",
    "prophoto": ICC / "colord/ProPhotoRGB.icc",
    "gray": ICC / "ghostscript/default_gray.icc",
    "cmyk": ICC / "ghostscript/default_cmyk.icc",
}


def median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def photo() -> np.ndarray:
    import skimage

    img = Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB")
    return np.asarray(img.resize((1200, 800), Image.LANCZOS))


def sources(rgb: np.ndarray) -> dict[str, bytes]:
    """The same photo as an untagged sRGB PNG and as stored in other spaces, profile embedded."""
    out = {}
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    out["srgb-untagged"] = buf.getvalue()
    for name, path in PROFILES.items():
        if not path.exists():
            continue
        icc = path.read_bytes()
        mode = {"gray": "L", "cmyk": "CMYK"}.get(name, "RGB")
        t = ImageCms.buildTransform(
            ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(icc)), "RGB", mode
        )
        img = ImageCms.applyTransform(Image.fromarray(rgb), t)
        buf = io.BytesIO()
        img.save(
            buf,
            "JPEG" if name == "cmyk" else "PNG",
            icc_profile=icc,
            **({"quality": 95} if name == "cmyk" else {}),
        )
        out[name] = buf.getvalue()
    return out


def colour_cost(reps: int, tmp: str) -> dict:
    rgb = photo()
    W, H = 1800, 800  # the 1200 x 800 photo centred on a wider canvas: 1.44 MP out
    results = {}
    for name, data in sources(rgb).items():
        src = os.path.join(tmp, f"{name}.bin")
        Path(src).write_bytes(data)
        cfg = config_mod.from_dict(
            {"input": {"manifest": "unused"}, "output": {"uri": os.path.join(tmp, name)}}
        )
        import pyarrow as pa

        plan = PlanStage(cfg, identify=True)(
            pa.table(
                {"id": [name], "image": [src], "width": [W], "height": [H], "manifest_row": [0]}
            )
        )
        row = plan.to_pylist()[0]
        load, write = (
            LoadStage.from_config(cfg),
            WriteStage.from_config(cfg, OutputStore(cfg.output.uri), "b"),
        )
        backend = make_backend(cfg.model)
        ref = load.load(row)
        generated = backend.outpaint(
            [
                Job(
                    ref=ref.model,
                    width=W,
                    height=H,
                    x0=row["visible_x0"],
                    y0=row["visible_y0"],
                    seed=1,
                )
            ]
        )[0]
        r = dict(row, _ref=ref)

        def load_only(load=load, row=row):
            load.load(row)

        def paste_encode(write=write, r=r, generated=generated, ref=ref):
            encode(write.composite(r, generated), "png", icc=ref.color.output.embed)

        def steps_only(
            ref=ref, generated=generated
        ):  # the colour work alone: reference to sRGB, generated pixels back
            ref.color.to_model(ref.out)
            ref.color.output.from_model(generated)

        mp = W * H / 1e6
        t_load, t_write, t_steps = (
            median_time(f, reps) for f in (load_only, paste_encode, steps_only)
        )
        results[name] = {
            "load_ms_per_mp": round(1000 * t_load / mp, 2),
            "write_ms_per_mp": round(1000 * t_write / mp, 2),
            "colour_steps_ms_per_mp": round(1000 * t_steps / mp, 2),
            "row_ms_per_mp": round(1000 * (t_load + t_write) / mp, 2),
            "transform": ref.color.transform_name,
            "output_profile": ref.color.output_profile,
        }
    base = results["srgb-untagged"]["row_ms_per_mp"]
    for v in results.values():
        v["row_vs_untagged"] = round(v["row_ms_per_mp"] / base, 3)
    return results


def mosaic() -> Image.Image:
    import skimage

    d = Path(skimage.__file__).parent / "data"
    tiles = [
        Image.open(d / n).convert("RGB").resize((500, 400))
        for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
    ]
    c = Image.new("RGB", (6000, 4000))
    k = 0
    for y in range(0, 4000, 400):
        for x in range(0, 6000, 500):
            c.paste(tiles[k % 4], (x, y))
            k += 1
    return c


def draft_speedup(reps: int) -> dict:
    import skimage

    natural = (
        Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png")
        .convert("RGB")
        .resize((6000, 4000), Image.LANCZOS)
    )
    limits = SourceLimits(1 << 30, 1 << 30)
    target = (1024, 683)  # a 6000 x 4000 photo on a 1024 x 1024 canvas: reference 1024 x 683
    out = {}
    for name, img in (("natural (upscaled photo)", natural), ("detailed (photo mosaic)", mosaic())):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        data = buf.getvalue()

        def full(data=data):  # the load path as before: whole decode, then the Lanczos resize
            return resize(decode(data, limits).pixels, *target)

        def drafted(data=data):
            return resize(decode(data, limits, target=target).pixels, *target)

        a, b = full(), drafted()
        d = np.abs(a.astype(int) - b)
        tf, td = median_time(full, reps), median_time(drafted, reps)
        out[name] = {
            "jpeg_mb": round(len(data) / 1e6, 2),
            "full_ms": round(1000 * tf, 1),
            "draft_ms": round(1000 * td, 1),
            "speedup": round(tf / td, 2),
            "mean_abs_diff": round(float(d.mean()), 3),
            "p99_abs_diff": float(np.percentile(d, 99)),
            "max_abs_diff": int(d.max()),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "colour": colour_cost(args.reps, tmp),
            "draft": draft_speedup(args.reps),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
