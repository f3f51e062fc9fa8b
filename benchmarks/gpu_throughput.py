"""GPU throughput of the FLUX Fill path: naive diffusers vs our actor path, eager,
optimised (compiled blocks, fused QKV, channels-last VAE) and optimised + FP8.

The real FLUX.1-Fill-dev architecture (FluxTransformer2DModel 19 + 38 blocks, 3072 wide,
384 input channels; the FLUX VAE) with random bf16 weights built on the GPU from one
seed (no download), a 1024x1024 canvas with a centred 768x768 reference. Prompt
embeddings are random tensors of the real shapes (T5 512 x 4096, CLIP pooled 768):
text encoding is once per distinct prompt in the actor, not a per-image cost.

Measured in one run, so ratios compare like with like:
  naive      ``FluxFillPipeline.__call__``, one image per call, default settings
  eager      ``FluxFillBackend.outpaint`` (the actor's code), no optimisations
  optimised  the actor's defaults on CUDA: compiled blocks, fused QKV, channels-last VAE
  fp8        optimised + torchao dynamic float8 (row-wise), where the GPU has it
  fast       ``fast`` mode on the optimised path (steps / 3, reference-only encode)
plus: MFU of each against a bf16 matmul measured here; peak memory; numerical
distance of optimised / fp8 images from eager on the same seeds (PSNR, max |diff|);
and an end-to-end run of ``--rows`` synthetic rows through the real stages (load ->
outpaint with two concurrent calls, as the Ray actor runs -> write) with GPU
utilisation sampled throughout (Ray itself is not on the GPU machine).

    python benchmarks/gpu_throughput.py [--steps 28] [--batch 2] [--images 4] [--rows 64]
    python benchmarks/gpu_throughput.py --tiny     # CPU smoke test with the tiny test model
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def e2e(cfg, backend, rows: int, size: int, ref: int, workdir: str, util) -> dict:
    """``rows`` synthetic PNG rows through plan -> load -> outpaint -> write, the model
    stage called by ``actor_concurrency`` threads on one backend (as a Ray actor does)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from pipeline.io import manifest
    from pipeline.io.outputs import OutputStore
    from pipeline.plan.stage import PlanStage
    from pipeline.run.stages import LoadStage, OutpaintStage, WriteStage

    rng = np.random.default_rng(1)
    src = os.path.join(workdir, "src")
    os.makedirs(src, exist_ok=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (ref, ref, 3), dtype=np.uint8)).save(
            os.path.join(src, f"{i}.png")
        )
    path = os.path.join(workdir, "e2e.parquet")
    pq.write_table(
        pa.table(
            {
                "id": [f"r{i}" for i in range(rows)],
                "image": [os.path.join(src, f"{i % 8}.png") for i in range(rows)],
                "width": [size] * rows,
                "height": [size] * rows,
            }
        ),
        path,
    )
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"manifest": path})})
    store = OutputStore(os.path.join(workdir, "out"))
    plan = PlanStage(cfg, identify=True)(manifest.read(cfg))
    bs = cfg.runtime.batch_size
    load, model, write = (
        LoadStage.from_config(cfg),
        OutpaintStage.from_config(cfg, backend=backend),
        WriteStage.from_config(cfg, store, "bench"),
    )
    from pipeline.backends.flux import BusyClock

    backend.busy = BusyClock()
    t0 = time.perf_counter()
    with (
        util,
        ThreadPoolExecutor(4) as cpu,
        ThreadPoolExecutor(cfg.runtime.actor_concurrency) as gpu,
    ):
        loaded = [cpu.submit(load, plan.slice(s, bs)) for s in range(0, rows, bs)]
        made = [gpu.submit(lambda f: model(f.result()), f) for f in loaded]
        done = [cpu.submit(lambda f: write(f.result()), f) for f in made]
        out = pa.concat_tables([f.result() for f in done])
    wall = time.perf_counter() - t0
    ok = out.column("status").to_pylist().count("ok")
    loop_s, actor_s = backend.busy.snapshot()
    return {
        "rows": rows,
        "ok": ok,
        "wall_s": wall,
        "s_per_image": wall / rows,
        "gpu_util": util.mean,
        "model_busy": loop_s / actor_s,
    }


def main(argv=None) -> int:  # noqa: C901 - a benchmark: one straight sequence of measurements
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--images", type=int, default=4, help="images per measurement")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--ref", type=int, default=768)
    ap.add_argument("--rows", type=int, default=64, help="rows in the end-to-end run (0: skip)")
    ap.add_argument("--no-fp8", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny test model")
    ap.add_argument("--json", help="also write every figure here (for benchmarks/RESULTS.md)")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    from pipeline import config as config_mod
    from pipeline.backends.flux import FluxFillBackend
    from pipeline.plan.flops import transformer_flops
    from pipeline.review.quality import psnr
    from pipeline.run.bench import UtilSampler, matmul_tflops, random_flux_pipe, synthetic_jobs

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    tmp = tempfile.mkdtemp()
    if not cuda:
        args.size, args.ref, args.steps, args.images = (
            min(args.size, 128),
            min(args.ref, 96),
            min(args.steps, 4),
            2,
        )
        args.rows = min(args.rows, 8)
        from diffusers import FluxFillPipeline

        from pipeline.backends.testmodel import make_test_model

        model_dir = make_test_model(os.path.join(tmp, "tiny"))

        def new_pipe():
            return FluxFillPipeline.from_pretrained(model_dir, torch_dtype=dtype).to(device)

        txt_len, txt_dim, pooled_dim = 16, 32, 32
    else:

        def new_pipe():
            return random_flux_pipe(device, dtype)

        txt_len, txt_dim, pooled_dim = 512, 4096, 768

    g = torch.Generator("cpu").manual_seed(0)
    embeds = torch.randn(1, txt_len, txt_dim, generator=g).to(device, dtype)
    pooled = torch.randn(1, pooled_dim, generator=g).to(device, dtype)
    text_ids = torch.zeros(txt_len, 3, device=device, dtype=dtype)
    S, R = args.size, args.ref
    fast_steps = max(1, round(args.steps / 3))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def config(quantize="none", **optimize):
        return config_mod.from_dict(
            {
                "input": {"manifest": "-"},
                "output": {"uri": os.path.join(tmp, "out")},
                "model": {
                    "backend": "flux-fill",
                    "path": "-",
                    "dtype": str(dtype).split(".")[1],
                    "steps": args.steps,
                    "fast_steps": fast_steps,
                    "optimize": optimize,
                    "quantize": quantize,
                },
                "runtime": {"batch_size": args.batch},
            }
        )

    def backend_for(pipe, quantize="none", **optimize):
        b = FluxFillBackend(config(quantize, **optimize).model, pipe=pipe)
        b.set_prompt_embeddings("", embeds[0], pooled[0], text_ids)
        return b

    ref_fraction = R / S
    high = synthetic_jobs(S, S, "high", args.images, ref_fraction, steps=args.steps)
    fast = synthetic_jobs(S, S, "fast", args.images, ref_fraction, steps=fast_steps)

    def timed(fn, n):
        fn(1)  # warm-up: compilation, kernels, allocator
        sync()
        t0 = time.perf_counter()
        fn(n)
        sync()
        return (time.perf_counter() - t0) / n

    def ours(backend, jobs):
        def run(n):
            for s in range(0, n, args.batch):
                backend.outpaint(jobs[s : min(s + args.batch, n)])

        return run

    res: dict[str, float] = {}
    images: dict[str, list] = {}
    pipe = new_pipe()
    pipe.set_progress_bar_config(disable=True)
    tcfg = dict(pipe.transformer.config)
    j0 = high[0]
    canvas = np.zeros((S, S, 3), np.uint8)
    canvas[j0.y0 : j0.y0 + j0.ref.shape[0], j0.x0 : j0.x0 + j0.ref.shape[1]] = j0.ref
    mask = np.full((S, S), 255, np.uint8)
    mask[j0.y0 : j0.y0 + j0.ref.shape[0], j0.x0 : j0.x0 + j0.ref.shape[1]] = 0

    def naive(n):
        for i in range(n):
            pipe(
                image=Image.fromarray(canvas),
                mask_image=Image.fromarray(mask),
                prompt_embeds=embeds,
                pooled_prompt_embeds=pooled,
                height=S,
                width=S,
                num_inference_steps=args.steps,
                guidance_scale=30.0,
                generator=torch.Generator("cpu").manual_seed(i),
            )

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    res["naive high"] = timed(naive, args.images)
    eager = backend_for(pipe, compile="none", fuse_qkv=False, channels_last_vae="off")
    res["eager high"] = timed(ours(eager, high), args.images)
    images["eager"] = eager.outpaint(high[: args.batch])
    opt = backend_for(pipe)  # the actor's defaults on this device (compiled, fused, channels-last)
    t0 = time.perf_counter()
    opt.warmup([(S, S, "high"), (S, S, "fast")], args.batch)
    warmup_s = time.perf_counter() - t0
    res["optimised high"] = timed(ours(opt, high), args.images)
    res["optimised fast"] = timed(ours(opt, fast), args.images)
    images["optimised"] = opt.outpaint(high[: args.batch])
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    util_e2e = None
    if args.rows:
        util_e2e = e2e(config(), opt, args.rows, S, R, tmp, UtilSampler(torch, device))

    fp8_note = "skipped (--no-fp8)" if args.no_fp8 else None
    if not args.no_fp8:
        if cuda and torch.cuda.get_device_capability() >= (8, 9):
            del pipe, eager, opt
            torch._dynamo.reset()  # compiled code holds the old modules
            gc.collect()
            torch.cuda.empty_cache()
            try:
                b8 = backend_for(new_pipe(), fp8=True)
                b8.warmup([(S, S, "high")], args.batch)
                res["optimised+fp8 high"] = timed(ours(b8, high), args.images)
                images["fp8"] = b8.outpaint(high[: args.batch])
            except Exception as e:  # noqa: BLE001 - report, keep the other figures
                fp8_note = f"failed: {type(e).__name__}: {e}"
        else:
            fp8_note = "skipped (needs CUDA compute capability >= 8.9)"

    # Peak memory at S x S, batch 1, per weight storage (model.quantize), eager; images
    # compared with bf16 on the same seed. On CPU: the weights' bytes only.
    memory: dict[str, dict] = {}
    pipe = eager = opt = b8 = bq = None
    for q in ("none", "float8", "int8"):
        torch._dynamo.reset()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        try:
            bq = backend_for(new_pipe(), quantize=q, compile="none")
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            img = bq.outpaint(high[:1])[0]
            memory[q] = {
                "transformer_bytes": bq.weight_bytes["transformer"],
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            }
            images[f"q-{q}"] = [img]
            if q != "none":
                memory[q]["psnr_vs_unquantized"] = round(psnr(img, images["q-none"][0]), 2)
        except Exception as e:  # noqa: BLE001 - report, keep the other figures
            memory[q] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            bq = None
    for q, m in memory.items():
        print(f"model.quantize {q:<7} " + ", ".join(f"{k} {v}" for k, v in m.items()))

    tflop_img = transformer_flops(tcfg, (S // 16) ** 2, txt_len) * args.steps / 1e12
    peak_tf = matmul_tflops(torch, device, dtype)
    name = torch.cuda.get_device_name() if cuda else "cpu (tiny model smoke test)"
    print(
        f"device: {name}; torch {torch.__version__}; canvas {S}x{S}, reference {R}x{R}; steps high {args.steps}, "
        f"fast {fast_steps}; batch {args.batch}; compile + warm-up {warmup_s:.1f} s"
    )
    print(f"{'':<20}{'s/image':>9}{'vs naive':>10}{'MFU':>7}")
    for k, v in res.items():
        mfu = tflop_img * (fast_steps / args.steps if "fast" in k else 1) / v / peak_tf
        print(f"{k:<20}{v:>9.3f}{res['naive high'] / v:>9.2f}x{mfu:>7.2f}")
    print(
        f"ours fast / ours high:  {res['optimised fast'] / res['optimised high']:.2f} of the time"
    )
    print(
        f"transformer {tflop_img:.3g} TFLOP/image; {str(dtype).split('.')[1]} matmul measured at "
        f"{peak_tf:.3g} TFLOP/s; peak GPU memory {peak:.1f} GiB"
    )
    # numerical distance from eager bf16 on the same seeds, in uint8 image values
    vs_eager = {}
    for k in ("optimised", "fp8"):
        if k in images:
            d = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(images[k], images["eager"])]
            vs_eager[k] = {
                "psnr_worst": min(psnr(a, b) for a, b in zip(images[k], images["eager"])),
                "max_abs": int(max(x.max() for x in d)),
                "mean_abs": float(np.mean([x.mean() for x in d])),
            }
            v = vs_eager[k]
            print(
                f"{k} vs eager (same seeds): PSNR {v['psnr_worst']:.1f} dB (worst image), max |diff| "
                f"{v['max_abs']}, mean |diff| {v['mean_abs']:.2f} (uint8)"
            )
    if fp8_note:
        print(f"fp8: {fp8_note}")
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(
                {
                    "device": name,
                    "torch": torch.__version__,
                    "args": vars(args),
                    "s_per_image": res,
                    "warmup_s": warmup_s,
                    "tflop_per_image": tflop_img,
                    "matmul_tflops": peak_tf,
                    "peak_gib": peak,
                    "fp8": fp8_note,
                    "e2e": util_e2e,
                    "memory_by_quantize": memory,
                    "vs_eager": vs_eager,
                },
                f,
                indent=2,
                default=str,
            )
    if util_e2e:
        u = util_e2e["gpu_util"]
        print(
            f"end to end: {util_e2e['ok']}/{util_e2e['rows']} rows ok in {util_e2e['wall_s']:.1f} s "
            f"({util_e2e['s_per_image']:.3f} s/image); GPU busy "
            f"{'n/a (no GPU)' if u is None else f'{u:.0f}% (mean of samples every 0.1 s)'}; model busy "
            f"(denoising loop / actor time, as `outpaint run` reports it) {100 * util_e2e['model_busy']:.0f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
