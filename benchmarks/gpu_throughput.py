"""GPU throughput of the FLUX Fill path: naive diffusers baseline vs our actor path.

The real FLUX.1-Fill-dev architecture (FluxTransformer2DModel 19 + 38 blocks, 3072 wide,
384 input channels; the FLUX VAE) with random bf16 weights built on the GPU (no
download), a 1024x1024 canvas with a centred 768x768 reference. Prompt embeddings are
random tensors of the real shapes (T5 512 x 4096, CLIP pooled 768): text encoding is
once per distinct prompt in the actor and not part of per-image cost.

  (a) baseline: ``FluxFillPipeline.__call__``, one image per call, default settings
  (b) ours: ``FluxFillBackend.outpaint`` (the actor's code), ``--batch`` rows per call

Prints s/image for ``high`` and ``fast`` for both, the ratio, peak GPU memory, and model
FLOP utilisation: ~74.4 TFLOP per step at 1024^2 (scaled by tokens for other sizes),
against a bf16 matmul measured in the same run.

    python benchmarks/gpu_throughput.py [--steps 28] [--batch 2] [--images 4]
    python benchmarks/gpu_throughput.py --tiny     # CPU smoke test with the tiny model
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

TFLOP_PER_STEP_1024 = 74.4


def matmul_tflops(torch, device, dtype, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def build_real_pipe(torch, device, dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel

    with torch.device(device):
        transformer = FluxTransformer2DModel(in_channels=384, out_channels=64, guidance_embeds=True).to(dtype)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.3611,
            shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False).to(dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    return FluxFillPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None, transformer=transformer)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--images", type=int, default=4, help="images per measurement")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--ref", type=int, default=768)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny test model")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    from pipeline import config as config_mod
    from pipeline.backends import Job
    from pipeline.backends.flux import FluxFillBackend

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if not cuda:
        args.size, args.ref, args.steps, args.images = min(args.size, 128), min(args.ref, 96), min(args.steps, 4), 2
        from diffusers import FluxFillPipeline

        from pipeline.testmodel import make_test_model

        tmp = tempfile.mkdtemp()
        pipe = FluxFillPipeline.from_pretrained(make_test_model(tmp), torch_dtype=dtype)
        txt_len, txt_dim, pooled_dim = 16, 32, 32
    else:
        pipe = build_real_pipe(torch, device, dtype)
        txt_len, txt_dim, pooled_dim = 512, 4096, 768
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)

    g = torch.Generator("cpu").manual_seed(0)
    embeds = torch.randn(1, txt_len, txt_dim, generator=g).to(device, dtype)
    pooled = torch.randn(1, pooled_dim, generator=g).to(device, dtype)
    text_ids = torch.zeros(txt_len, 3, device=device, dtype=dtype)

    S, R = args.size, args.ref
    off = (S - R) // 2
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (R, R, 3), dtype=np.uint8)
    canvas = np.zeros((S, S, 3), np.uint8)
    canvas[off:off + R, off:off + R] = ref
    mask = np.full((S, S), 255, np.uint8)
    mask[off:off + R, off:off + R] = 0
    image, mask_image = Image.fromarray(canvas), Image.fromarray(mask)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn, n):
        fn(1)  # warm-up (kernels, allocator)
        sync()
        t0 = time.perf_counter()
        fn(n)
        sync()
        return (time.perf_counter() - t0) / n

    fast_steps = max(1, round(args.steps / 3))

    def naive(n, steps):
        for i in range(n):
            pipe(image=image, mask_image=mask_image, prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                 height=S, width=S, num_inference_steps=steps, guidance_scale=30.0,
                 generator=torch.Generator("cpu").manual_seed(i))

    cfg = config_mod.from_dict({"input": {"manifest": "-"}, "output": {"uri": "-"},
                                "model": {"backend": "flux-fill", "path": "-", "dtype": str(dtype).split(".")[1],
                                          "steps": args.steps, "fast_steps": fast_steps}})
    backend = FluxFillBackend(cfg.model, pipe=pipe)
    backend.set_prompt_embeddings("", embeds[0], pooled[0], text_ids)

    def ours(n, mode):
        pad = (-off) % 16
        jobs = [Job(ref, S, S, off, off, seed=i, mode=mode,
                    steps=args.steps if mode == "high" else fast_steps,
                    pad_left=pad if mode == "fast" else 0, pad_top=pad if mode == "fast" else 0) for i in range(n)]
        for s in range(0, n, args.batch):
            backend.outpaint(jobs[s:s + args.batch])

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    res = {
        "naive high": timed(lambda n: naive(n, args.steps), args.images),
        "naive fast-steps": timed(lambda n: naive(n, fast_steps), args.images),
        "ours high": timed(lambda n: ours(n, "high"), args.images),
        "ours fast": timed(lambda n: ours(n, "fast"), args.images),
    }
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    tflop_img = TFLOP_PER_STEP_1024 * (S * S) / (1024 * 1024)
    peak_tf = matmul_tflops(torch, device, dtype) if cuda else float("nan")

    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu (tiny model smoke test)'}; torch {torch.__version__}; "
          f"canvas {S}x{S}, reference {R}x{R}; steps high {args.steps}, fast {fast_steps}; batch {args.batch}")
    for k, v in res.items():
        print(f"{k:<18} {v:8.3f} s/image")
    print(f"ours high / naive high: {res['naive high'] / res['ours high']:.2f}x faster")
    print(f"ours fast / ours high:  {res['ours fast'] / res['ours high']:.2f} of the time")
    if cuda:
        achieved = tflop_img * args.steps / res["ours high"]
        print(f"peak GPU memory {peak:.1f} GiB; bf16 matmul {peak_tf:.0f} TFLOP/s; "
              f"transformer {achieved:.0f} TFLOP/s = MFU {achieved / peak_tf:.2f} of the measured matmul rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
