"""``outpaint bench CONFIG``: how fast the configured model runs here, to size clusters.

Builds the backend exactly as an actor does (weights, ``model.optimize``, warm-up),
feeds it synthetic canvases (the defaults' size, or ``--size``; a reference covering
``ref_fraction`` of each side, centred) at ``runtime.batch_size`` rows per call, and
reports per mode: s/image, images/hour per GPU (or per worker on CPU), the
transformer's FLOP per image, model FLOP utilisation against a matmul in the model's
dtype measured in the same run, peak memory and, on CUDA, sampled GPU utilisation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backends import BuildContext, Job, make_backend, spec_of
from ..config import GRID, Config, ConfigError
from ..plan.flops import FLUX1_CONFIG, transformer_flops


def random_flux_pipe(device, dtype, seed: int = 0, transformer_config: dict | None = None):
    """FLUX.1-Fill-dev's transformer and VAE at full size with random weights, built on
    ``device`` (no download): the same kernels and FLOP as the checkpoint, so the same
    speed, for sizing hardware before the weights are there. No text encoders: prompt
    embeddings are set directly (``FluxFillBackend.set_prompt_embeddings``)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )

    torch.manual_seed(seed)  # the same random weights each time it is built
    with torch.device(device):
        transformer = FluxTransformer2DModel(**(transformer_config or FLUX1_CONFIG)).to(dtype)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=16,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            norm_num_groups=32,
            sample_size=1024,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ).to(dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxFillPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )


def random_weights_backend(
    cfg: Config, prompt: str, warmup, batch_size: int, transformer_config=None
):
    """The configured backend on :func:`random_flux_pipe` (``outpaint bench --random-weights``)."""
    import torch

    from ..backends.flux import FluxFillBackend

    cuda = cfg.model.device == "cuda" or (cfg.model.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, cfg.model.dtype)
    tc = transformer_config or FLUX1_CONFIG
    b = FluxFillBackend(cfg.model, pipe=random_flux_pipe(device, dtype, transformer_config=tc))
    g = torch.Generator("cpu").manual_seed(0)
    # T5 (512 x 4096) and CLIP pooled (768) for FLUX.1: what the real encoders produce
    b.set_prompt_embeddings(
        prompt,
        torch.randn(cfg.model.max_sequence_length, tc["joint_attention_dim"], generator=g).to(
            device, dtype
        ),
        torch.randn(tc["pooled_projection_dim"], generator=g).to(device, dtype),
        torch.zeros(cfg.model.max_sequence_length, 3, device=device, dtype=dtype),
    )
    t0 = time.perf_counter()
    if warmup:
        b.warmup(warmup, batch_size)
    b.warmup_s = time.perf_counter() - t0
    return b


def matmul_tflops(torch, device, dtype, n: int | None = None, seconds: float = 1.0) -> float:
    """Dense matmul rate in ``dtype`` on ``device`` (the MFU denominator), measured now."""
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(3):
        a @ b
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        a @ b
        reps += 1
        if reps % 10 == 0:
            sync()
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


class UtilSampler:
    """GPU utilisation (NVML via torch) sampled on a thread while a block runs."""

    def __init__(self, torch, device, interval_s: float = 0.1):
        self.torch, self.device, self.interval = torch, device, interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = None

    def available(self) -> bool:
        if self.device.type != "cuda":
            return False
        try:
            self.torch.cuda.utilization(self.device)
            return True
        except Exception:  # noqa: BLE001 - no NVML binding: no samples
            return False

    def __enter__(self):
        if self.available():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.samples.append(int(self.torch.cuda.utilization(self.device)))

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def synthetic_jobs(
    width: int,
    height: int,
    mode: str,
    n: int,
    ref_fraction: float = 0.75,
    prompt: str = "",
    steps: int = 0,
    seed: int = 0,
) -> list[Job]:
    """``n`` canvases with a textured reference centred on each (content does not change speed)."""
    rw, rh = max(1, round(width * ref_fraction)), max(1, round(height * ref_fraction))
    x0, y0 = (width - rw) // 2, (height - rh) // 2
    yy, xx = np.mgrid[0:rh, 0:rw]
    rng = np.random.default_rng(seed)
    base = np.stack(
        [(xx * 255 // max(rw - 1, 1)), (yy * 255 // max(rh - 1, 1)), (xx + yy) % 256], -1
    )
    ref = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    fast = mode == "fast"
    return [
        Job(
            ref,
            width,
            height,
            x0,
            y0,
            seed=seed + i,
            prompt=prompt,
            mode=mode,
            steps=steps,
            pad_left=(-x0) % GRID if fast else 0,
            pad_top=(-y0) % GRID if fast else 0,
        )
        for i in range(n)
    ]


def canvas_size(cfg: Config, size: tuple[int, int] | None) -> tuple[int, int]:
    if size:
        return size
    if cfg.defaults.width and cfg.defaults.height:
        return cfg.defaults.width, cfg.defaults.height
    return 1024, 1024


def _peak_memory_gib(torch, device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def time_backend(backend, jobs: Sequence[Job], batch: int, sync=lambda: None) -> float:
    """Seconds per image over ``jobs`` in calls of ``batch`` rows (after one untimed call)."""
    backend.outpaint(list(jobs[:batch]))
    sync()
    t0 = time.perf_counter()
    for s in range(0, len(jobs), batch):
        backend.outpaint(list(jobs[s : s + batch]))
    sync()
    return (time.perf_counter() - t0) / len(jobs)


@dataclass
class _Setup:
    """What every timing of one bench shares."""

    cfg: Config
    backend: object
    W: int
    H: int
    images: int
    ref_fraction: float
    prompt: str

    def jobs(self, mode: str, count: int | None = None, steps: int | None = None):
        return synthetic_jobs(
            self.W, self.H, mode, count or self.images, self.ref_fraction, self.prompt, steps
        )

    def steps(self, mode: str) -> int:
        return self.cfg.model.steps_fast if mode == "fast" else self.cfg.model.steps


def bench(
    cfg: Config,
    *,
    size: tuple[int, int] | None = None,
    images: int = 8,
    modes: Sequence[str] = ("high", "fast"),
    ref_fraction: float = 0.75,
    backend=None,
    random_weights: bool = False,
    batch_sizes: Sequence[int] = (),
) -> dict:
    """Measure the configured backend; ``backend``: an already built one (benchmarks);
    ``random_weights``: FLUX.1 Fill's architecture at full size, no weights needed;
    ``batch_sizes``: also time the first mode at these batch sizes (s/image, peak memory)."""
    W, H = canvas_size(cfg, size)
    batch = cfg.runtime.batch_size
    gpu = spec_of(cfg.model).gpu  # a GPU model: compiled shapes, MFU, memory
    prompt = cfg.defaults.prompt
    t0 = time.perf_counter()
    warm = [(W, H, m) for m in modes] if gpu else []
    if backend is None and random_weights:
        if not gpu:
            raise ConfigError("--random-weights times FLUX Fill: set model.backend: flux-fill")
        backend = random_weights_backend(cfg, prompt, warm, batch)
    elif backend is None:
        backend = make_backend(
            cfg.model, BuildContext(prompts=[prompt], warmup=warm, batch_size=batch)
        )
    setup = _Setup(cfg, backend, W, H, max(images, batch), ref_fraction, prompt)
    result: dict = {
        "backend": cfg.model.backend + (" (random weights)" if random_weights else ""),
        "canvas": [W, H],
        "ref_fraction": ref_fraction,
        "batch_size": batch,
        "images": setup.images,
        "load_s": round(time.perf_counter() - t0, 2),
        "modes": {},
    }
    if not gpu:
        for mode in modes:
            s = time_backend(backend, setup.jobs(mode), batch)
            result["modes"][mode] = {"s_per_image": s, "images_per_hour": 3600 / s}
        result["device"] = "cpu"
        return result
    if not hasattr(backend, "transformer"):  # diffusers: any architecture, no FLOP model
        return _bench_pipeline(setup, result, modes, batch_sizes)
    return _bench_gpu(setup, result, modes, batch_sizes)


def _bench_pipeline(
    setup: _Setup, result: dict, modes: Sequence[str], batch_sizes: Sequence[int]
) -> dict:
    """A diffusers checkpoint: s/image per mode, the memory peak and the batch sweep."""
    backend, cfg = setup.backend, setup.cfg
    torch, device = backend.torch, backend.device
    sync = backend.sync
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result.update(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        dtype=cfg.model.dtype,
        pipeline=type(backend.pipe).__name__,
        quantize=cfg.model.quantize,
        torch=torch.__version__,
    )
    for mode in modes:
        steps = setup.steps(mode)
        jobs = setup.jobs(mode, steps=steps)
        AW, AH, GW, GH, *_ = backend.shape_key(jobs[0])
        with UtilSampler(torch, device) as util:
            s = time_backend(backend, jobs, cfg.runtime.batch_size, sync)
        result["modes"][mode] = {
            "steps": steps,
            "generated": [GW, GH],
            "s_per_image": s,
            "images_per_hour": 3600 / s,
            "gpu_util": util.mean,
            # for `outpaint plan`: linear in pixels from this canvas (no FLOP model here;
            # attention's quadratic share makes larger canvases cost somewhat more)
            "seconds_per_step_at_1mp": s / steps * 1024 * 1024 / (GW * GH),
        }
    result["peak_memory_gib"] = _peak_memory_gib(torch, device)
    sweep = []
    for b in batch_sizes:
        jobs = setup.jobs(modes[0], max(setup.images, b), setup.steps(modes[0]))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        s = time_backend(backend, jobs, b, sync)
        sweep.append(
            {"batch_size": b, "s_per_image": s, "peak_memory_gib": _peak_memory_gib(torch, device)}
        )
    if sweep:
        result["batch_sweep"] = {"mode": modes[0], "results": sweep}
    return result


def _bench_gpu(
    setup: _Setup, result: dict, modes: Sequence[str], batch_sizes: Sequence[int]
) -> dict:
    """A GPU model: per mode its FLOP, MFU and utilisation, the memory peak, the batch sweep."""
    backend, cfg = setup.backend, setup.cfg
    torch, device = backend.torch, backend.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result.update(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        dtype=cfg.model.dtype,
        optimizations=backend.optimizations,
        quantize=cfg.model.quantize,
        weights_gib={k: round(v / 2**30, 3) for k, v in backend.weight_bytes.items()},
        text_encoders_on=backend.text_device.type,
        warmup_s=round(backend.warmup_s, 2),
        torch=torch.__version__,
    )
    for mode in modes:
        result["modes"][mode] = _time_mode(setup, mode)
    result["peak_memory_gib"] = _peak_memory_gib(torch, device)
    sweep = []
    for b in batch_sizes:  # what runtime.batch_size buys (compute bound: little beyond 2-4)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        jobs = setup.jobs(modes[0], max(setup.images, b), setup.steps(modes[0]))
        s = time_backend(backend, jobs, b, backend.sync)
        sweep.append(
            {"batch_size": b, "s_per_image": s, "peak_memory_gib": _peak_memory_gib(torch, device)}
        )
    if sweep:
        result["batch_sweep"] = {"mode": modes[0], "results": sweep}
    result["matmul_tflops"] = matmul_tflops(torch, device, backend.dtype)
    for m in result["modes"].values():
        m["mfu"] = m["achieved_tflops"] / result["matmul_tflops"]
    return result


def _time_mode(setup: _Setup, mode: str) -> dict:
    backend = setup.backend
    tcfg = dict(backend.transformer.config)
    steps = setup.steps(mode)
    jobs = setup.jobs(mode, steps=steps)
    _, AW, AH, _ = backend.shape_key(jobs[0])
    img_tokens = (AW // GRID) * (AH // GRID)
    txt_tokens = backend._embed(setup.prompt)[0].shape[0]
    flop = transformer_flops(tcfg, img_tokens, txt_tokens) * steps
    with UtilSampler(backend.torch, backend.device) as util:
        s = time_backend(backend, jobs, setup.cfg.runtime.batch_size, backend.sync)
    # what `outpaint plan` should assume here (it prices canvases by FLOP)
    per_step_1mp = (
        s
        / steps
        * transformer_flops(tcfg, 4096, txt_tokens)
        / transformer_flops(tcfg, img_tokens, txt_tokens)
    )
    return {
        "steps": steps,
        "generated": [AW, AH],
        "s_per_image": s,
        "seconds_per_step_at_1mp": per_step_1mp,
        "images_per_hour": 3600 / s,
        "tflop_per_image": flop / 1e12,
        "achieved_tflops": flop / s / 1e12,
        "gpu_util": util.mean,
    }


def format_result(r: dict) -> str:
    W, H = r["canvas"]
    unit = "GPU" if r.get("device", "cpu") != "cpu" else "worker"
    lines = [
        f"outpaint bench: {r['backend']} on {r.get('device', 'cpu')}; canvas {W}x{H}, reference "
        f"{r['ref_fraction']:.0%} of each side; batch {r['batch_size']}; {r['images']} images per mode"
    ]
    if "optimizations" in r:
        o = r["optimizations"]
        lines.append(
            f"dtype {r['dtype']}; compile {o['compile']} ({o['compile_mode']}), fused QKV {o['fuse_qkv']}, "
            f"fp8 {o['fp8']}, attention {o['attention']}, bucket {o['bucket_px']} px; load "
            f"{r['load_s']:.1f} s, warm-up {r['warmup_s']:.1f} s"
        )
    if "pipeline" in r:
        lines.append(
            f"{r['pipeline']}, dtype {r['dtype']}, model.quantize {r['quantize']}; load "
            f"{r['load_s']:.1f} s; peak memory {r['peak_memory_gib']:.2f} GiB"
        )
    head = f"{'mode':<6}{'steps':>6}{'s/image':>10}{f'images/h/{unit}':>16}"
    if "matmul_tflops" in r:
        head += f"{'TFLOP/img':>11}{'TFLOP/s':>9}{'MFU':>7}{'GPU busy':>10}"
    lines.append(head)
    for mode, m in r["modes"].items():
        line = f"{mode:<6}{m.get('steps', '-')!s:>6}{m['s_per_image']:>10.3f}{m['images_per_hour']:>16,.0f}"
        if "matmul_tflops" in r:
            busy = "-" if m["gpu_util"] is None else f"{m['gpu_util']:.0f}%"
            line += f"{m['tflop_per_image']:>11.3g}{m['achieved_tflops']:>9.3g}{m['mfu']:>7.2f}{busy:>10}"
        lines.append(line)
    if "weights_gib" in r:
        w = r["weights_gib"]
        lines.append(
            f"weights: transformer {w['transformer']:.2f} GiB (model.quantize: {r['quantize']}), VAE "
            f"{w['vae']:.2f} GiB, text encoders {w['text_encoders']:.2f} GiB on {r['text_encoders_on']} "
            "(dropped after embedding)"
        )
    if "matmul_tflops" in r:
        lines.append(
            f"peak memory {r['peak_memory_gib']:.2f} GiB; {r['dtype']} matmul measured at "
            f"{r['matmul_tflops']:.3g} TFLOP/s (the MFU denominator)"
        )
    if "batch_sweep" in r:
        lines.append(
            f"batch sizes ({r['batch_sweep']['mode']}): "
            + "; ".join(
                f"{x['batch_size']}: {x['s_per_image']:.3f} s/image, peak {x['peak_memory_gib']:.1f} GiB"
                for x in r["batch_sweep"]["results"]
            )
        )
    if "high" in r["modes"] and "seconds_per_step_at_1mp" in r["modes"]["high"]:
        lines.append(
            f"for `outpaint plan` estimates here: plan.seconds_per_step_at_1mp: "
            f"{r['modes']['high']['seconds_per_step_at_1mp']:.4g}"
        )
    if "high" in r["modes"] and "fast" in r["modes"]:
        lines.append(
            f"fast / high time: {r['modes']['fast']['s_per_image'] / r['modes']['high']['s_per_image']:.2f}"
        )
    return "\n".join(lines)
