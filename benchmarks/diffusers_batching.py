"""``model.backend: diffusers`` against diffusers' own pipeline called row by row, in the same
run, on the tiny random-weight checkpoints (``make-test-model --family``) on this machine.

Baseline: what a script around diffusers does per row: ``pipe(prompt=..., image=PIL,
mask_image=PIL, generator=...)``, one row per call, the prompt encoded each time. Ours: the
backend's ``outpaint`` on the same rows (the same canvases, seeds and steps), at batch sizes
1, 4 and ``--rows``; prompts embedded once per distinct prompt (``--prompts`` distinct ones).
Reports s/row (median of ``--reps``), the ratio to the baseline, the backend's overhead per
row at batch 1 (canvas preparation, grouping, uint8 conversion: ours minus the baseline's
pipeline time), and that the pixels agree (max |difference| to the baseline, levels).

Then what the unknown area should hold before encoding (docs/backends.md, the recipes):
for 9 windows of 3 real photos, the reference (the middle half) on a grey fill and on the
classical backend's continuation, each VAE-encoded (each family's tiny VAE, posterior mean);
how far the latents of the reference's own cells are from those of the true photo around
it (mean |difference| over mean |latent|). Closer means less of the fill carried into the
cells a blending pipeline keeps and a reference-reading one sees.

Tiny models make the denoiser cheap, so this measures what surrounds it: the text encoder,
per-call setup, Python. On a real checkpoint the denoiser dominates and batching's gain is
the GPU's (``outpaint bench`` with ``--batch-sizes`` measures that where a GPU is lent).

    python benchmarks/diffusers_batching.py [--rows 16] [--steps 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from record import record  # noqa: E402 - benchmarks/ on the path first


def _rows(n: int, prompts: int, W: int, H: int):
    import numpy as np
    import skimage
    from PIL import Image

    from pipeline.backends import Job

    photo = np.asarray(
        Image.open(os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png"))
    )[:, :, :3]
    rh, rw = int(H * 0.75), int(W * 0.75)
    x0, y0 = (W - rw) // 2, (H - rh) // 2
    texts = [f"a studio photo {i}" for i in range(prompts)]
    return [
        Job(
            np.ascontiguousarray(photo[50 + 7 * i : 50 + 7 * i + rh, 60 : 60 + rw]),
            W,
            H,
            x0,
            y0,
            seed=i,
            prompt=texts[i % prompts],
        )
        for i in range(n)
    ]


def _baseline(be, jobs, steps: int):
    """diffusers row by row: PIL canvas and mask, the prompt string, a seeded generator."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for j in jobs:
        AW, AH, *_ = be.shape_key(j)
        canvas = np.full((AH, AW, 3), 128, np.uint8)
        h, w = j.ref.shape[:2]
        canvas[j.y0 : j.y0 + h, j.x0 : j.x0 + w] = j.ref
        mask = np.full((AH, AW), 255, np.uint8)
        mask[j.y0 : j.y0 + h, j.x0 : j.x0 + w] = 0
        args = {
            "prompt": j.prompt,
            "image": Image.fromarray(canvas),
            "mask_image": Image.fromarray(mask),
            "height": AH,
            "width": AW,
            "strength": 1.0,
            "num_inference_steps": steps,
            be.recipe.guidance_arg: be.cfg.guidance,
            "generator": torch.Generator("cpu").manual_seed(j.seed),
            "output_type": "np",
            **be.recipe.extra,
        }
        if "image_reference" in be.takes:
            args["image_reference"] = Image.fromarray(j.ref)
        img = be.pipe(**args).images[0]
        out.append((img * 255).round().astype(np.uint8)[: j.height, : j.width])
    return out


def _time(fn, reps: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench_family(family: str, root: str, args) -> dict:
    import numpy as np

    from pipeline import config as config_mod
    from pipeline.backends.inpaint import DiffusersInpaintBackend
    from pipeline.backends.tinyinpaint import make_tiny_inpaint

    path = make_tiny_inpaint(os.path.join(root, family), family)
    # grey for both sides: the baseline's canvas is the same as ours (Z-Image's recipe
    # continues the photo instead, a CPU cost this comparison leaves out)
    model = {
        "backend": "diffusers",
        "path": path,
        "dtype": "float32",
        "steps": args.steps,
        "fill": "grey",
    }
    cfg = config_mod.from_dict(
        {"input": {"manifest": "-"}, "output": {"uri": root}, "model": model}
    )
    jobs = _rows(args.rows, args.prompts, args.width, args.height)
    for j in jobs:
        j.steps = args.steps
    direct = DiffusersInpaintBackend(cfg.model, prompts=None)  # encoders kept: it encodes per row
    ours = DiffusersInpaintBackend(cfg.model, prompts=[j.prompt for j in jobs])
    _baseline(direct, jobs[:1], args.steps)  # warm-up: first-call allocations
    ours.outpaint(jobs[:1])
    base_s, base_imgs = _time(lambda: _baseline(direct, jobs, args.steps), args.reps)
    result = {
        "pipeline": ours.ckpt.class_name,
        "grid": ours.grid,
        "baseline_s_per_row": base_s / len(jobs),
        "batches": {},
    }
    for b in dict.fromkeys([1, 4, len(jobs)]):

        def run(b=b):
            out = []
            for i in range(0, len(jobs), b):
                out += ours.outpaint(jobs[i : i + b])
            return out

        s, imgs = _time(run, args.reps)
        diff = max(
            int(np.abs(a.astype(int) - c.astype(int)).max()) for a, c in zip(imgs, base_imgs)
        )
        result["batches"][b] = {
            "s_per_row": s / len(jobs),
            "speedup_vs_baseline": base_s / s,
            "max_abs_diff_levels": diff,
        }
    # what the backend adds around the pipeline at batch 1: its time less the pipeline's own
    # (the call, and the pipeline's last step where the backend redoes it outside the call)
    calls = []
    pipe, decode = ours.pipe, ours._decode

    def timed(fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            r = fn(*a, **kw)
            calls.append(time.perf_counter() - t0)
            return r

        return run

    class Timed:
        def __getattr__(self, name):
            return getattr(pipe, name)

        __call__ = staticmethod(timed(pipe))

    ours.pipe, ours._decode = Timed(), timed(decode)
    t0 = time.perf_counter()
    for j in jobs:
        ours.outpaint([j])
    total = time.perf_counter() - t0
    ours.pipe = pipe
    del ours._decode  # the instance attribute: back to the method
    result["overhead_ms_per_row_batch1"] = (total - sum(calls)) / len(jobs) * 1000
    result["fill"] = fill_closeness(ours, cfg.model)
    return result


def fill_closeness(be, model_cfg) -> dict:
    """Relative latent error of the reference's cells against the true surroundings."""
    import numpy as np
    import skimage
    import torch
    from PIL import Image

    from pipeline.backends import Job
    from pipeline.backends.canvas import compose
    from pipeline.backends.classical import ClassicalBackend

    vae, s = be.pipe.vae, be.ckpt.vae_scale
    classical = ClassicalBackend(model_cfg)
    data = os.path.dirname(skimage.__file__) + "/data/"

    def latents(img):
        x = torch.from_numpy(img.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            return vae.encode(x).latent_dist.mode()[0]

    errors = {"grey": [], "classical": []}
    for name in ("astronaut", "coffee", "chelsea"):
        photo = np.asarray(Image.open(data + name + ".png").convert("RGB"))
        for y, x in ((20, 60), (100, 200), (160, 100)):
            truth = np.ascontiguousarray(photo[y : y + 128, x : x + 192])
            j = Job(np.ascontiguousarray(truth[32:96, 48:144]), 192, 128, 48, 32, seed=1)
            canvases = {
                "grey": compose(j.ref, 192, 128, 48, 32, (128, 128, 128))[0],
                "classical": classical.outpaint([j])[0],
            }
            t = latents(truth)
            cells = (slice(32 // s, 96 // s), slice(48 // s, 144 // s))
            for k, img in canvases.items():
                d = (latents(img)[:, cells[0], cells[1]] - t[:, cells[0], cells[1]]).abs().mean()
                errors[k].append(float(d / t.abs().mean()))
    return {
        "grey": statistics.mean(errors["grey"]),
        "classical": statistics.mean(errors["classical"]),
        "classical_closer": sum(c < g for c, g in zip(errors["classical"], errors["grey"])),
        "windows": len(errors["grey"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="sdxl,z-image,flux2-klein")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--prompts", type=int, default=2, help="distinct prompts among the rows")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as root:
        fams = {f: bench_family(f, root, args) for f in args.families.split(",")}
    record(
        {
            "benchmark": "diffusers_batching",
            "rows": args.rows,
            "prompts": args.prompts,
            "steps": args.steps,
            "canvas": [args.width, args.height],
            "torch": torch.__version__,
            "families": fams,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
