"""``flux-fill``: FLUX.1 Fill (diffusers ``FluxFillPipeline`` components) on GPU actors.

Loaded once per actor. The denoising loop is the pipeline's own maths (flow-matching
Euler, FLUX Fill's channel layout: noisy latents ++ masked-image latents ++ mask) with
what a batch job needs on top:

- rows grouped by (mode, aligned shape, steps): one batched transformer call per step;
- noise from a per-row CPU ``torch.Generator`` seeded with the row seed, so a row's
  output does not depend on what it was batched with;
- ``high``: the whole canvas, padded right/bottom to the 16-px grid (never resized),
  unknown area filled per the fill rule, VAE-encoded;
- ``fast``: only the reference is VAE-encoded; the masked-image latents are those
  reference latents placed on a canvas of constant fill latents (the fill's latent,
  computed once per actor) and the mask is built at latent resolution — the full
  canvas never goes through the encoder;
- prompt embeddings computed once per distinct prompt; with every prompt known up
  front the text encoders are then dropped (``model.free_text_encoders``);
- speed (``model.optimize``, see ``accel``): fused QKV, compiled blocks, optional FP8,
  canvases bucketed so compiled shapes stay few, warm-up at actor start;
- pipelining: a call prepares (upload from pinned memory, VAE encode) and decodes
  outside the GPU lock on its own CUDA stream, so with two concurrent calls per actor
  (``runtime.actor_concurrency``) the next batch is ready when the loop ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from . import BACKENDS, Job, accel
from .flux_inputs import FluxInputs
from .flux_weights import BusyClock, profile_fill, resolve_model_path


class FluxFillBackend(FluxInputs):
    spec = BACKENDS["flux-fill"]

    @classmethod
    def from_config(cls, model_cfg, context) -> FluxFillBackend:
        return cls(
            model_cfg, prompts=context.prompts, warmup=context.warmup, batch_size=context.batch_size
        )

    def __init__(
        self,
        model_cfg,
        prompts: Sequence[str] | None = None,
        pipe=None,
        warmup: Sequence[tuple[int, int, str]] = (),
        batch_size: int = 1,
    ):
        """``pipe``: an already built pipeline (benchmarks); default: load ``model.path``.
        ``warmup``: (width, height, mode) canvases compiled now, at ``batch_size`` rows."""
        import torch

        self.torch = torch
        self.cfg = model_cfg
        self.device, self.text_device = accel.devices(torch, model_cfg)
        self.dtype = getattr(torch, model_cfg.dtype)
        if model_cfg.optimize.fp8:  # before loading ~24 GB of weights
            accel.check_fp8(torch, self.device)
        accel.check_quantize(torch, self.device, model_cfg.quantize)
        self.pipe = self._load(pipe, batch_size, text_on_gpu=self.text_device == self.device)
        # the checkpoint's geometry, as diffusers derives it: latent channels, the VAE's
        # scale (2 ** downsampling blocks), the grid (x2 for the 2x2 packing)
        vae_config = self.pipe.vae.config
        self.channels = vae_config.latent_channels
        self.vae_scale = 2 ** (len(vae_config.block_out_channels) - 1)
        self.grid = 2 * self.vae_scale
        self.scheduler_cls = type(self.pipe.scheduler)  # the checkpoint's own scheduler class
        self._prompt_cache: dict[str, tuple] = {}
        self._fill_latents: dict[str, object] = {}
        # One denoising loop at a time per GPU; preparing and decoding happen outside
        # it (on a per-thread CUDA stream), so a second concurrent call overlaps them.
        self._gpu_lock = threading.Lock()
        self.side_streams = accel.SideStreams(torch, self.device, model_cfg.optimize.pipelining)
        self.busy = BusyClock()
        if prompts is not None:
            self._embed_all(prompts)
        self.optimizations = accel.apply(self.pipe, model_cfg.optimize, self.device)
        self.bucket = self.optimizations["bucket_px"]
        self.vae = self.pipe.vae
        self.transformer = self.pipe.transformer
        # compiled graphs are built on first use: do it now, not on the first real batch
        compiled = self.optimizations["compile"] in ("blocks", "full")
        self.warmup_s = self.warmup(warmup, batch_size) if warmup and compiled else 0.0
        self.busy = BusyClock()  # from the first real batch

    def _load(self, pipe, batch_size: int, text_on_gpu: bool):
        """The pipeline, quantized where asked, checked to fit, on its devices."""
        from diffusers import FluxFillPipeline

        cfg = self.cfg
        loaded_here = pipe is None
        if loaded_here:
            path = resolve_model_path(cfg.path, cfg.storage_options, cfg.cache_dir)
            pipe = FluxFillPipeline.from_pretrained(
                path, torch_dtype=self.dtype, local_files_only=True
            )
            self.fill = cfg.fill or profile_fill(path)
        else:
            self.fill = cfg.fill or "grey"
        if cfg.quantize != "none":  # where the weights are now (CPU after loading)
            if cfg.optimize.fuse_qkv:  # fuse first: the fused projection is quantized too
                accel.fuse_qkv(pipe.transformer)
            accel.quantize(pipe.transformer, cfg.quantize)
        encoders = [m for m in (pipe.text_encoder, pipe.text_encoder_2) if m is not None]
        self.weight_bytes = {
            "transformer": accel.module_bytes(pipe.transformer),
            "vae": accel.module_bytes(pipe.vae),
            "text_encoders": sum(accel.module_bytes(m) for m in encoders),
        }
        on_gpu = self.weight_bytes["transformer"] + self.weight_bytes["vae"]
        if text_on_gpu:
            on_gpu += self.weight_bytes["text_encoders"]
        # activations: ~2 GiB a batch row at 1-2 MP in bf16 (an estimate; outpaint bench measures)
        if loaded_here:  # a pipeline handed in (benchmarks) is already where it runs
            accel.check_fits(self.torch, self.device, on_gpu, batch_size * 2 * 2**30)
        pipe.transformer.to(self.device)
        pipe.vae.to(self.device)
        for encoder in encoders:
            encoder.to(self.text_device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _embed_all(self, prompts: Sequence[str]) -> None:
        """Every prompt embedded once; then the encoders (T5 is ~9 GB in bf16) can go."""
        for p in dict.fromkeys(prompts):
            self._embed(p)
        if self.cfg.free_text_encoders:
            self.pipe.text_encoder = self.pipe.text_encoder_2 = None
            if self.device.type == "cuda":
                self.torch.cuda.empty_cache()

    def warmup(self, shapes: Sequence[tuple[int, int, str]], batch_size: int = 1) -> float:
        """Compile (and autotune) each canvas shape once, before real rows: one step at
        ``batch_size`` rows per (width, height, mode). Returns the seconds it took."""
        if not self._prompt_cache and self.pipe.text_encoder is None:
            return 0.0  # no embedding to warm up with
        prompt = next(iter(self._prompt_cache), "")
        t0 = time.perf_counter()
        ref = np.full((self.grid, self.grid, 3), 128, np.uint8)
        for W, H, mode in dict.fromkeys(shapes):
            jobs = [
                Job(ref, W, H, 0, 0, seed=i, prompt=prompt, mode=mode, steps=1)
                for i in range(batch_size)
            ]
            self.outpaint(jobs)
        self.sync()
        return time.perf_counter() - t0

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    # -------------------------------------------------------------- pieces
    def set_prompt_embeddings(self, prompt: str, embeds, pooled, text_ids) -> None:
        """Precomputed embeddings (e.g. from a separate text-encoding job)."""
        self._prompt_cache[prompt] = (embeds, pooled, text_ids)

    def _embed(self, prompt: str):
        if prompt not in self._prompt_cache:
            if self.pipe.text_encoder is None:
                raise RuntimeError(
                    f"prompt {prompt!r} was not known when the text encoders were freed"
                )
            with self.torch.no_grad():
                emb, pooled, text_ids = self.pipe.encode_prompt(
                    prompt=prompt,
                    prompt_2=None,
                    device=self.text_device,
                    max_sequence_length=self.cfg.max_sequence_length,
                )
            emb, pooled, text_ids = (t.to(self.device, self.dtype) for t in (emb, pooled, text_ids))
            self._stream_done()
            self._prompt_cache[prompt] = (emb[0], pooled[0], text_ids)
        return self._prompt_cache[prompt]

    def _stream_done(self) -> None:
        """Wait for this thread's current CUDA stream: for tensors cached across threads."""
        if self.device.type == "cuda":
            self.torch.cuda.current_stream(self.device).synchronize()

    def _prepare(self, jobs: Sequence[Job], AW: int, AH: int, fast: bool, steps: int) -> dict:
        """Everything the loop needs, on the device: conditioning, noise, embeddings, schedule."""
        torch = self.torch
        from diffusers.pipelines.flux.pipeline_flux_fill import calculate_shift

        b = len(jobs)
        c, s = self.channels, self.vae_scale
        h, w = AH // s, AW // s
        cond, mask = (self._fast if fast else self._high)(jobs, AW, AH)
        cond = torch.cat([self._pack(cond, c), self._pack(mask, s * s)], dim=2)
        latents = self._pack(self._upload(torch.stack([self.noise(j.seed, h, w) for j in jobs])), c)
        embeds = [self._embed(j.prompt) for j in jobs]
        sched = self.scheduler_cls.from_config(self.pipe.scheduler.config)
        cfgs = sched.config
        mu = calculate_shift(
            (h // 2) * (w // 2),
            cfgs.get("base_image_seq_len", 256),
            cfgs.get("max_image_seq_len", 4096),
            cfgs.get("base_shift", 0.5),
            cfgs.get("max_shift", 1.15),
        )
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device=self.device)
        return {
            "h": h,
            "w": w,
            "latents": latents,
            "cond": cond,
            "sched": sched,
            "prompt_embeds": torch.stack([e[0] for e in embeds]),
            "pooled": torch.stack([e[1] for e in embeds]),
            "text_ids": embeds[0][2],
            "img_ids": self.pipe._prepare_latent_image_ids(
                b, h // 2, w // 2, self.device, self.dtype
            ),
            "guidance": (
                torch.full((b,), self.cfg.guidance, device=self.device, dtype=torch.float32)
                if self.transformer.config.guidance_embeds
                else None
            ),
        }

    def noise(self, seed: int, h: int, w: int):
        """A row's initial noise (channels x h x w latent cells), from a CPU generator
        seeded with the row seed: the same whatever the batch, device or thread."""
        torch = self.torch
        return torch.randn(
            (self.channels, h, w),
            generator=torch.Generator("cpu").manual_seed(int(seed)),
            dtype=torch.float32,
        )

    def _loop(self, p: dict):
        """The flow-matching loop: one batched transformer call per step."""
        latents, cond, sched = p["latents"], p["cond"], p["sched"]
        b = latents.shape[0]
        for t in sched.timesteps:
            noise_pred = self.transformer(
                hidden_states=self.torch.cat((latents, cond), dim=2),
                timestep=t.expand(b).to(latents.dtype) / 1000,
                guidance=p["guidance"],
                pooled_projections=p["pooled"],
                encoder_hidden_states=p["prompt_embeds"],
                txt_ids=p["text_ids"],
                img_ids=p["img_ids"],
                return_dict=False,
            )[0]
            latents = sched.step(noise_pred, t, latents, return_dict=False)[0]
        return latents

    def _compiled_or_eager_loop(self, p: dict):
        """The loop; if compiling it fails, once, the model goes back to eager for good."""
        try:
            return self._loop(p)
        except Exception as e:
            if self.optimizations["compile"] not in (
                "blocks",
                "full",
            ) or not accel.is_compile_error(e):
                raise
            accel.uncompile(self.pipe, self.optimizations, e)
            self.transformer = self.pipe.transformer
            return self._loop(p)

    def _decode(self, latents, jobs: Sequence[Job], h: int, w: int, fast: bool) -> list[np.ndarray]:
        torch = self.torch
        lat = (
            self._unpack(latents, h, w) / self.vae.config.scaling_factor
            + self.vae.config.shift_factor
        )
        img = self.vae.decode(lat, return_dict=False)[0]
        img = (
            ((img.float().clamp(-1, 1) + 1.0) * 127.5 + 0.5)
            .to(torch.uint8)
            .permute(0, 2, 3, 1)
            .cpu()
            .numpy()
        )
        out = []
        for job, im in zip(jobs, img):
            oy, ox = (job.pad_top, job.pad_left) if fast else (0, 0)
            out.append(np.ascontiguousarray(im[oy : oy + job.height, ox : ox + job.width]))
        return out

    def _denoise(
        self, jobs: Sequence[Job], AW: int, AH: int, fast: bool, steps: int
    ) -> list[np.ndarray]:
        """prepare -> loop (under the GPU lock) -> decode. On CUDA, preparing and decoding
        run on this thread's side stream, so another thread's loop keeps the GPU busy."""
        import contextlib

        torch = self.torch
        side = self.side_streams.get()
        on_side = (lambda: torch.cuda.stream(side)) if side is not None else contextlib.nullcontext
        cuda = self.device.type == "cuda"
        self.busy.start()
        with torch.no_grad():
            with on_side():
                p = self._prepare(jobs, AW, AH, fast, steps)
            with self._gpu_lock:
                main = torch.cuda.current_stream(self.device) if cuda else None
                if side is not None:  # the loop (current stream) waits for the upload/encode
                    main.wait_stream(side)
                    for v in p.values():
                        if isinstance(v, torch.Tensor):
                            v.record_stream(main)
                # the loop's own duration: GPU events on CUDA (the host does not wait for it)
                t0 = time.perf_counter()
                if cuda:
                    ev = (
                        torch.cuda.Event(enable_timing=True),
                        torch.cuda.Event(enable_timing=True),
                    )
                    ev[0].record(main)
                latents = self._compiled_or_eager_loop(p)
                if cuda:
                    ev[1].record(main)
                else:
                    loop_s = time.perf_counter() - t0
                if side is not None:
                    side.wait_stream(main)
                    latents.record_stream(side)
            with on_side():
                out = self._decode(latents, jobs, p["h"], p["w"], fast)  # waits for the loop
        self.busy.add(ev[0].elapsed_time(ev[1]) / 1000 if cuda else loop_s)
        return out

    def shape_key(self, job: Job) -> tuple[bool, int, int, int]:
        """(fast, generated width, height, steps): the canvas padded right/bottom to the
        checkpoint's grid, then up to ``bucket_px`` so nearby sizes share a batch and a
        compiled graph."""
        import math

        fast = job.mode == "fast"
        b = math.lcm(self.bucket, self.grid)
        AW = -(-(job.width + (job.pad_left if fast else 0)) // b) * b
        AH = -(-(job.height + (job.pad_top if fast else 0)) // b) * b
        return fast, AW, AH, job.steps or (self.cfg.steps_fast if fast else self.cfg.steps)

    def outpaint(self, jobs: Sequence[Job]) -> list[np.ndarray]:
        """Group by (mode, generated shape, steps); one batched call per group and step."""
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(self.shape_key(j), []).append(i)
        out: list[np.ndarray | None] = [None] * len(jobs)
        for (fast, AW, AH, steps), idx in groups.items():
            for i, im in zip(idx, self._denoise([jobs[i] for i in idx], AW, AH, fast, steps)):
                out[i] = im
        return out  # type: ignore[return-value]
