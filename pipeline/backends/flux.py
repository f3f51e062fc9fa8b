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

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence

import numpy as np

from . import Job, accel
from .canvas import FILL_COLORS, contrast_fill
from .testmodel import PROFILE_FILE

# FLUX.1's values; a checkpoint's own come from its configs (``FluxFillBackend.__init__``)
VAE_SCALE = 8  # pixels per latent cell: 2 ** (len(vae.block_out_channels) - 1)
GRID = 16  # VAE scale x 2: latents are packed 2 x 2 into the transformer's tokens


def model_grid(path: str | None, storage_options: dict | None = None) -> int:
    """The alignment grid of a diffusers checkpoint, from ``vae/config.json`` alone (no
    weights): 2 x the VAE's scale factor. FLUX.1's 16 when the config cannot be read."""
    from .. import storage

    if not path:
        return GRID
    try:
        local = path[len("file://") :] if path.startswith("file://") else path
        if not storage.has_scheme(path) and not os.path.isdir(local):
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                local, local_files_only=True, allow_patterns=["vae/config.json"]
            )
        uri = storage.join(local if not storage.has_scheme(path) else path, "vae", "config.json")
        fs, p = storage.filesystem(uri, storage_options)
        with fs.open(p, "r") as f:
            blocks = json.load(f)["block_out_channels"]
        return 2 * 2 ** (len(blocks) - 1)
    except Exception:  # noqa: BLE001 - unreadable here (the actor will check its own)
        return GRID


# ---------------------------------------------------------------- model location


def resolve_model_path(
    path: str, storage_options: dict | None = None, cache_dir: str | None = None
) -> str:
    """A local directory for ``model.path``: a directory as is; an object-storage URI
    synced once per node into the cache (a lock, then a completion marker); otherwise a
    Hugging Face id resolved from the local cache only (never a download)."""
    from .. import storage

    if storage.has_scheme(path) and not path.startswith("file://"):
        return _sync_uri(path, storage_options or {}, cache_dir)
    local = path[len("file://") :] if path.startswith("file://") else path
    if os.path.isdir(local):
        return local
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(local, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means: not available offline
        raise FileNotFoundError(
            f"model.path {path!r} is neither a local directory, an object-storage URI, nor a Hugging Face id "
            f"in the local cache (no downloads at run time): {type(e).__name__}: {e}"
        ) from None


def _sync_uri(uri: str, storage_options: dict, cache_dir: str | None) -> str:
    import fcntl

    from .. import storage

    root = (
        cache_dir
        or os.environ.get("OUTPAINT_MODEL_CACHE")
        or os.path.expanduser("~/.cache/outpaint/models")
    )
    local = os.path.join(root, hashlib.sha256(uri.encode()).hexdigest()[:16])
    done = os.path.join(local, ".outpaint-complete")
    if os.path.exists(done):
        return local
    os.makedirs(root, exist_ok=True)
    with open(local + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one copy per node, however many actors start
        if not os.path.exists(done):
            fs, path = storage.filesystem(uri, storage_options)
            tmp = local + ".partial"
            fs.get(path.rstrip("/") + "/", tmp, recursive=True)
            if os.path.exists(local):
                import shutil

                shutil.rmtree(local)
            os.replace(tmp, local)
            with open(done, "w") as f:
                f.write(uri)
    return local


def profile_fill(model_dir: str) -> str:
    """The fill a checkpoint was trained on: ``outpaint_profile.json`` beside the weights,
    else FLUX.1-Fill-dev's convention (masked pixels zeroed = grey)."""
    p = os.path.join(model_dir, PROFILE_FILE)
    if os.path.exists(p):
        with open(p) as f:
            return json.load(f).get("fill", "grey")
    return "grey"


# ---------------------------------------------------------------- backend


class BusyClock:
    """How busy the model was: denoising-loop seconds over the seconds since the first
    call began. Near 1 means the GPU never waited for input (the ``GPUs busy`` figure a
    run reports per actor); well below means the stages around it starve it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.first: float | None = None
        self.loop_s = 0.0

    def start(self) -> None:
        with self._lock:
            if self.first is None:
                self.first = time.time()

    def add(self, loop_s: float) -> None:
        with self._lock:
            self.loop_s += loop_s

    def snapshot(self) -> tuple[float, float]:
        """(loop seconds, seconds since the first call), cumulative."""
        with self._lock:
            return self.loop_s, (time.time() - self.first) if self.first is not None else 0.0


class FluxFillBackend:
    name = "flux-fill"
    needs_actor = True

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
        from diffusers import FluxFillPipeline

        self.torch = torch
        self.cfg = model_cfg
        want = model_cfg.device
        self.device = torch.device(
            "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"
        )
        self.dtype = getattr(torch, model_cfg.dtype)
        if model_cfg.optimize.fp8:  # before loading ~24 GB of weights
            accel.check_fp8(torch, self.device)
        accel.check_quantize(torch, self.device, model_cfg.quantize)
        # text encoders: embed on the CPU when the GPU is small (quantized), then dropped
        on_cpu = model_cfg.text_encoder_device == "cpu" or (
            model_cfg.text_encoder_device == "auto" and model_cfg.quantize != "none"
        )
        self.text_device = torch.device("cpu") if on_cpu else self.device
        loaded_here = pipe is None
        if pipe is None:
            path = resolve_model_path(
                model_cfg.path, model_cfg.storage_options, model_cfg.cache_dir
            )
            pipe = FluxFillPipeline.from_pretrained(
                path, torch_dtype=self.dtype, local_files_only=True
            )
            self.fill = model_cfg.fill or profile_fill(path)
        else:
            self.fill = model_cfg.fill or "grey"
        if model_cfg.quantize != "none":  # where the weights are now (CPU after loading)
            if model_cfg.optimize.fuse_qkv:  # fuse first: the fused projection is quantized too
                accel.fuse_qkv(pipe.transformer)
            accel.quantize(pipe.transformer, model_cfg.quantize)
        self.weight_bytes = {
            "transformer": accel.module_bytes(pipe.transformer),
            "vae": accel.module_bytes(pipe.vae),
            "text_encoders": sum(
                accel.module_bytes(m)
                for m in (pipe.text_encoder, pipe.text_encoder_2)
                if m is not None
            ),
        }
        on_gpu = (
            self.weight_bytes["transformer"]
            + self.weight_bytes["vae"]
            + (0 if on_cpu else self.weight_bytes["text_encoders"])
        )
        # activations: ~2 GiB a batch row at 1-2 MP in bf16 (an estimate; outpaint bench measures)
        if loaded_here:  # a pipeline handed in (benchmarks) is already where it runs
            accel.check_fits(torch, self.device, on_gpu, batch_size * 2 * 2**30)
        pipe.transformer.to(self.device)
        pipe.vae.to(self.device)
        for enc in (pipe.text_encoder, pipe.text_encoder_2):
            if enc is not None:
                enc.to(self.text_device)
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        # the checkpoint's geometry, as diffusers derives it: latent channels, the VAE's
        # scale (2 ** downsampling blocks), the grid (x2 for the 2x2 packing)
        self.channels = pipe.vae.config.latent_channels
        self.vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.grid = 2 * self.vae_scale
        self.scheduler_cls = type(pipe.scheduler)  # the checkpoint's own scheduler class
        self._prompt_cache: dict[str, tuple] = {}
        self._fill_latents: dict[str, object] = {}
        # One denoising loop at a time per GPU; preparing and decoding happen outside
        # it (on a per-thread CUDA stream), so a second concurrent call overlaps them.
        self._gpu_lock = threading.Lock()
        self._local = threading.local()
        self.pipelining = model_cfg.optimize.pipelining
        self.busy = BusyClock()
        if prompts is not None:
            for p in dict.fromkeys(prompts):
                self._embed(p)
            if model_cfg.free_text_encoders:
                # every prompt is embedded: the encoders (T5 is ~9 GB in bf16) can go
                self.pipe.text_encoder = self.pipe.text_encoder_2 = None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        self.optimizations = accel.apply(self.pipe, model_cfg.optimize, self.device)
        self.bucket = self.optimizations["bucket_px"]
        self.vae = self.pipe.vae
        self.transformer = self.pipe.transformer
        # compiled graphs are built on first use: do it now, not on the first real batch
        compiled = self.optimizations["compile"] in ("blocks", "full")
        self.warmup_s = self.warmup(warmup, batch_size) if warmup and compiled else 0.0
        self.busy = BusyClock()  # from the first real batch

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

    def _fill_name(self, job: Job) -> str:
        return contrast_fill(job.ref) if self.fill == "contrast" else self.fill

    @staticmethod
    def _to_unit(rgb: np.ndarray):
        """uint8 H x W x 3 -> float [-1, 1], 3 x H x W (the VAE's input range)."""
        return rgb.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0

    def _fill_value(self, name: str) -> np.ndarray:
        # grey is FLUX.1-Fill-dev's masked pixel exactly: 0 in [-1, 1]
        if name == "grey":
            return np.zeros(3, np.float32)
        return np.asarray(FILL_COLORS[name], np.float32) / 127.5 - 1.0

    def _upload(self, array):
        """Host (NumPy or CPU tensor) -> device; from pinned memory, asynchronously, on CUDA."""
        t = (
            array
            if isinstance(array, self.torch.Tensor)
            else self.torch.from_numpy(np.ascontiguousarray(array))
        )
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, self.dtype, non_blocking=True)

    def _encode(self, images: np.ndarray):
        """B x 3 x H x W in [-1, 1] -> normalised latents (distribution mode: deterministic)."""
        x = self._upload(images)
        if self.optimizations["channels_last_vae"]:
            x = x.contiguous(memory_format=self.torch.channels_last)
        lat = self.vae.encode(x).latent_dist.mode()
        return (lat - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def _fill_latent(self, name: str):
        """The fill colour's latent vector, once per actor (a flat patch of 8 x 8 cells, a centre cell)."""
        if name not in self._fill_latents:
            side = 8 * self.vae_scale
            patch = np.broadcast_to(self._fill_value(name)[:, None, None], (3, side, side))[
                None
            ].copy()
            lat = self._encode(patch)[0, :, 4, 4].clone()
            self._stream_done()  # other threads' streams will read it: finish it first
            self._fill_latents[name] = lat
        return self._fill_latents[name]

    def _pack(self, t, channels: int):
        b, _, h, w = t.shape
        t = t.view(b, channels, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return t.reshape(b, (h // 2) * (w // 2), channels * 4)

    def _unpack(self, t, h: int, w: int):
        b, _, c = t.shape
        t = t.view(b, h // 2, w // 2, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return t.reshape(b, c // 4, h, w)

    def _mask_channels(self, mask_px):
        """Pixel mask B x H x W (1 = generate) -> FLUX Fill's scale² channels per latent cell."""
        b, H, W = mask_px.shape
        s = self.vae_scale
        m = mask_px.view(b, H // s, s, W // s, s).permute(0, 2, 4, 1, 3)
        return m.reshape(b, s * s, H // s, W // s)

    # -------------------------------------------------------------- conditioning
    def _high(self, jobs: Sequence[Job], AW: int, AH: int):
        """Whole aligned canvas (padding right/bottom), fill wherever the mask is 1 (the
        unknown area and the grown margin: FLUX Fill was trained on ``image * (1 - mask)``),
        encoded."""
        imgs, masks = [], []
        g = self.cfg.mask_grow_px
        for job in jobs:
            name = self._fill_name(job)
            job.fill_color = name
            canvas = np.empty((3, AH, AW), np.float32)
            canvas[:] = self._fill_value(name)[:, None, None]
            h, w = job.ref.shape[:2]
            mask = np.ones((AH, AW), np.float32)
            if h > 2 * g and w > 2 * g:  # what stays known: the reference less the grown margin
                canvas[:, job.y0 + g : job.y0 + h - g, job.x0 + g : job.x0 + w - g] = self._to_unit(
                    job.ref[g : h - g, g : w - g]
                )
                mask[job.y0 + g : job.y0 + h - g, job.x0 + g : job.x0 + w - g] = 0.0
            imgs.append(canvas)
            masks.append(mask)
        cond = self._encode(np.stack(imgs))
        mask = self._mask_channels(self._upload(np.stack(masks)))
        return cond, mask

    def _fast(self, jobs: Sequence[Job], AW: int, AH: int):
        """Reference-only encoding, placed on constant fill latents; mask at latent
        resolution. What is conditioned is what is known: a latent cell is the reference's
        only where the mask keeps it (wholly inside the reference, less the grown margin);
        every other cell, the straddling ones at the reference's edges too, is fill."""
        torch = self.torch
        s, grid = self.vae_scale, self.grid
        h, w = AH // s, AW // s
        refs = []
        for job in jobs:
            job.fill_color = self._fill_name(job)
            if (job.x0 + job.pad_left) % s or (job.y0 + job.pad_top) % s:
                raise ValueError(
                    f"the reference at ({job.x0 + job.pad_left}, {job.y0 + job.pad_top}) is not on "
                    f"this checkpoint's {s}-px latent grid: plan with its alignment grid ({grid})"
                )
            rh, rw = job.ref.shape[:2]
            ref = np.empty((3, -(-rh // grid) * grid, -(-rw // grid) * grid), np.float32)
            ref[:] = self._fill_value(job.fill_color)[:, None, None]
            ref[:, :rh, :rw] = self._to_unit(job.ref)
            refs.append(ref)
        # only the references are encoded: one VAE call per padded reference size
        by_shape: dict[tuple, list[int]] = {}
        for i, ref in enumerate(refs):
            by_shape.setdefault(ref.shape, []).append(i)
        ref_lats: list = [None] * len(jobs)
        for idx in by_shape.values():
            for i, lat in zip(idx, self._encode(np.stack([refs[i] for i in idx]))):
                ref_lats[i] = lat
        conds, masks = [], []
        g = self.cfg.mask_grow_px
        for job, ref_lat in zip(jobs, ref_lats):
            rh, rw = job.ref.shape[:2]
            cond = self._fill_latent(job.fill_color)[:, None, None].expand(-1, h, w).clone()
            ly, lx = (job.y0 + job.pad_top) // s, (job.x0 + job.pad_left) // s
            # known = latent cells wholly inside the reference (less the grown margin)
            ky0, kx0 = -(-(job.y0 + job.pad_top + g) // s), -(-(job.x0 + job.pad_left + g) // s)
            ky1 = min((job.y0 + job.pad_top + rh - g) // s, h)
            kx1 = min((job.x0 + job.pad_left + rw - g) // s, w)
            m = torch.ones((h, w), device=self.device, dtype=self.dtype)
            if ky1 > ky0 and kx1 > kx0:
                m[ky0:ky1, kx0:kx1] = 0.0
                cond[:, ky0:ky1, kx0:kx1] = ref_lat[:, ky0 - ly : ky1 - ly, kx0 - lx : kx1 - lx]
            conds.append(cond)
            masks.append(m[None].expand(s * s, -1, -1))
        return torch.stack(conds), torch.stack(masks)

    # -------------------------------------------------------------- denoising
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

    def _side_stream(self):
        """This thread's CUDA stream for preparing and decoding (None: the current one)."""
        if self.device.type != "cuda" or not self.pipelining:
            return None
        s = getattr(self._local, "stream", None)
        if s is None:
            s = self._local.stream = self.torch.cuda.Stream(self.device)
        return s

    def _denoise(
        self, jobs: Sequence[Job], AW: int, AH: int, fast: bool, steps: int
    ) -> list[np.ndarray]:
        """prepare -> loop (under the GPU lock) -> decode. On CUDA, preparing and decoding
        run on this thread's side stream, so another thread's loop keeps the GPU busy."""
        import contextlib

        torch = self.torch
        side = self._side_stream()
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
