"""``diffusers``: any diffusers inpainting checkpoint (SDXL inpainting, Z-Image, Qwen-Image,
FLUX.2 [klein], SD 3.5...) on the GPU actors, called through its own pipeline class.

The pipeline's ``__call__`` is the model's maths, so a row's canvas is what diffusers gives
for the same arguments (tests/backends/test_inpaint.py checks it within 2/255). What a
batch job adds around it:

- rows grouped by (generated shape, steps, reference size where the pipeline takes an
  ``image_reference``): one pipeline call per group with lists of canvases, masks and
  prompts, and one CPU ``torch.Generator`` per row seeded with the row seed, so a row's
  pixels do not depend on what it was batched with;
- the canvas padded right/bottom to the family's grid (x8 for UNets, x16 for the DiTs that
  pack 2 x 2), never resized; a family whose pipeline scales large images down (FLUX.2
  [klein]: 1 MP) is handed a canvas already at its size and the result is scaled back up
  (the reference is pasted back untouched either way);
- ``strength`` 1.0 (the unknown area starts as pure noise), no ``padding_mask_crop``;
- prompt embeddings computed once per distinct prompt where the family's pipeline takes
  ``prompt_embeds`` (the text encoders can then be dropped);
- pipelining (``model.optimize.pipelining``): canvases and prompts are prepared, and the
  latents decoded (the pipeline's own last step, redone here), outside the GPU lock, on a
  side CUDA stream; the call itself (VAE encode, denoising loop) holds it, so with two
  concurrent calls per actor one call's loop runs while the other prepares or decodes;
- the recipe's steps, guidance and negative prompt (``pipeline.config.families``),
  ``model.pipeline_kwargs`` for the rest; the same actor pool and GPU pinning as flux-fill.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence

import numpy as np

from ..config.checkpoints import describe
from ..config.families import grid, pipeline_class, recipe, runs_as
from . import BACKENDS, Job, accel
from .canvas import FILL_COLORS, contrast_fill
from .classical import ClassicalBackend
from .flux_weights import BusyClock, resolve_model_path

PROMPT_CACHE = 1024  # embedded prompts kept per actor (each a few MB at most)


class DiffusersInpaintBackend:
    spec = BACKENDS["diffusers"]

    @classmethod
    def from_config(cls, model_cfg, context) -> DiffusersInpaintBackend:
        return cls(model_cfg, prompts=context.prompts, batch_size=context.batch_size)

    def __init__(
        self, model_cfg, prompts: Sequence[str] | None = None, pipe=None, batch_size: int = 1
    ):
        """``pipe``: an already loaded pipeline (benchmarks, tests); default: load ``model.path``."""
        import torch

        self.torch = torch
        self.cfg = model_cfg
        self.device, self.text_device = accel.devices(torch, model_cfg)
        self.dtype = getattr(torch, model_cfg.dtype)
        accel.check_quantize(torch, self.device, model_cfg.quantize)
        local = resolve_model_path(model_cfg.path, model_cfg.storage_options, model_cfg.cache_dir)
        self.ckpt = describe(local)
        self.recipe = recipe(self.ckpt)
        if not self.recipe.embed:  # the pipeline encodes its prompts itself, where it runs
            self.text_device = self.device
        self.grid = grid(self.ckpt)
        self.pipe = pipe if pipe is not None else self._load(local, batch_size)
        self.pipe.set_progress_bar_config(disable=True)
        self.takes = set(_parameters(type(self.pipe)))
        self.fill = model_cfg.fill or self.recipe.fill
        self._classical = ClassicalBackend(model_cfg) if self.fill == "classical" else None
        self._prompt_cache: dict[str, dict] = {}
        self._bounded = prompts is None  # prompts arrive one by one: the cache is bounded
        self._gpu_lock = threading.Lock()  # one pipeline call at a time per GPU
        self.pipelining = model_cfg.optimize.pipelining
        self.side_streams = accel.SideStreams(torch, self.device, self.pipelining)
        self._embed_lock = threading.Lock()  # concurrent calls share the prompt cache
        self.busy = BusyClock()
        if prompts is not None and self.recipe.embed:
            for p in dict.fromkeys(prompts):
                self._embed(p)
            if model_cfg.free_text_encoders:
                self._drop_text_encoders()

    # -------------------------------------------------------------- loading
    def _load(self, local: str, batch_size: int):
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # an actor's log is not a terminal
        # the inpainting class, also for a checkpoint saved as its text-to-image sibling
        cls = pipeline_class(runs_as(self.ckpt))
        pipe = cls.from_pretrained(local, dtype=self.dtype, local_files_only=True)
        denoiser = self._denoiser(pipe)
        if self.cfg.quantize != "none":  # on the CPU, before the weights reach the GPU
            accel.quantize(denoiser, self.cfg.quantize)
        encoders = self._text_encoders(pipe)
        on_gpu = accel.module_bytes(denoiser) + accel.module_bytes(pipe.vae)
        if self.text_device == self.device:
            on_gpu += sum(accel.module_bytes(m) for m in encoders.values())
        # activations: ~2 GiB a batch row at 1-2 MP in bf16 (an estimate; outpaint bench measures)
        accel.check_fits(self.torch, self.device, on_gpu, batch_size * 2 * 2**30)
        for name_, module in pipe.components.items():
            target = self.text_device if name_ in encoders else self.device
            first = (
                next(module.parameters(), None)
                if isinstance(module, self.torch.nn.Module)
                else None
            )
            if first is not None and first.device != target:  # loaded on the CPU
                module.to(target)
        opt = accel.resolve(self.cfg.optimize, self.device)
        if opt["channels_last_vae"]:
            pipe.vae.to(memory_format=self.torch.channels_last)
        # tiles only canvases larger than the VAE's tile: 4 MP decodes within a 24 GB card
        if self.device.type == "cuda" and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
        if opt["compile"] == "blocks" and getattr(denoiser, "_repeated_blocks", None):
            denoiser.compile_repeated_blocks(fullgraph=False)
        elif opt["compile"] in ("blocks", "full"):
            denoiser.compile()
        return pipe

    @staticmethod
    def _denoiser(pipe):
        return getattr(pipe, "transformer", None) or pipe.unet

    @staticmethod
    def _text_encoders(pipe) -> dict:
        return {
            k: v
            for k, v in pipe.components.items()
            if k.startswith("text_encoder") and v is not None
        }

    def _drop_text_encoders(self) -> None:
        for name in self._text_encoders(self.pipe):
            setattr(self.pipe, name, None)
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    # -------------------------------------------------------------- prompts
    @property
    def negative_prompt(self) -> str | None:
        return (
            self.cfg.negative_prompt
            if self.cfg.negative_prompt is not None
            else self.recipe.negative_prompt
        )

    def _embed(self, prompt: str) -> dict:
        """The pipeline arguments that carry ``prompt`` (one row's), computed once."""
        with self._embed_lock:
            return self._embed_locked(prompt)

    def _embed_locked(self, prompt: str) -> dict:
        if prompt not in self._prompt_cache:
            # prompts not known up front (a server): keep the most recent ones only
            while self._bounded and len(self._prompt_cache) >= PROMPT_CACHE:
                self._prompt_cache.pop(next(iter(self._prompt_cache)))
            if not self._text_encoders(self.pipe):
                raise RuntimeError(
                    f"prompt {prompt!r} was not known when the text encoders were freed"
                )
            with self.torch.no_grad():
                args = getattr(self, f"_embed_{self.recipe.embed.replace('-', '_')}")(prompt)
            self._prompt_cache[prompt] = {
                k: ([t.to(self.device) for t in v] if isinstance(v, list) else v.to(self.device))
                for k, v in args.items()
                if v is not None
            }
        return self._prompt_cache[prompt]

    def _embed_sdxl(self, prompt: str) -> dict:
        pe, npe, pooled, npooled = self.pipe.encode_prompt(
            prompt=prompt,
            device=self.text_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=self.cfg.guidance > 1,
            negative_prompt=self.negative_prompt,
        )
        return {
            "prompt_embeds": pe,
            "negative_prompt_embeds": npe,
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": npooled,
        }

    def _embed_z_image(self, prompt: str) -> dict:
        pe, npe = self.pipe.encode_prompt(
            prompt=prompt,
            device=self.text_device,
            do_classifier_free_guidance=self.cfg.guidance > 0,
            negative_prompt=self.negative_prompt,
            max_sequence_length=self.cfg.pipeline_kwargs.get("max_sequence_length", 512),
        )
        return {"prompt_embeds": list(pe), "negative_prompt_embeds": list(npe)}

    def _embed_flux2(self, prompt: str) -> dict:
        layers = self.cfg.pipeline_kwargs.get("text_encoder_out_layers", (9, 18, 27))
        kw = {
            "device": self.text_device,
            "num_images_per_prompt": 1,
            "max_sequence_length": self.cfg.pipeline_kwargs.get("max_sequence_length", 512),
            "text_encoder_out_layers": tuple(layers),
        }
        out = {"prompt_embeds": self.pipe.encode_prompt(prompt=prompt, **kw)[0]}
        if self.cfg.guidance > 1 and not self.pipe.config.get("is_distilled", False):
            out["negative_prompt_embeds"] = self.pipe.encode_prompt(prompt="", **kw)[0]
        return out

    def _prompt_args(self, jobs: Sequence[Job]) -> dict:
        if not self.recipe.embed:
            out: dict = {"prompt": [j.prompt for j in jobs]}
            if self.negative_prompt is not None and "negative_prompt" in self.takes:
                out["negative_prompt"] = [self.negative_prompt] * len(jobs)
            return out
        rows = [self._embed(j.prompt) for j in jobs]
        out = {}
        for key in rows[0]:
            vals = [r[key] for r in rows]
            out[key] = (
                [t for v in vals for t in v] if isinstance(vals[0], list) else self.torch.cat(vals)
            )
        return out

    # -------------------------------------------------------------- canvases
    def shape_key(self, job: Job) -> tuple:
        """(generated width, height, steps, reference size or None): one pipeline call each."""
        fast = job.mode == "fast"
        g = self.grid
        AW = -(-(job.width + (job.pad_left if fast else 0)) // g) * g
        AH = -(-(job.height + (job.pad_top if fast else 0)) // g) * g
        GW, GH = self._generated_size(AW, AH)
        steps = job.steps or (self.cfg.steps_fast if fast else self.cfg.steps)
        ref = job.ref.shape[:2] if self._uses_reference() else None
        return AW, AH, GW, GH, steps, ref

    def _generated_size(self, AW: int, AH: int) -> tuple[int, int]:
        """What the pipeline is handed: the aligned canvas, or where the family's pipeline
        resizes larger images, the largest grid size under its limit with the same aspect."""
        limit = self.recipe.max_pixels
        if not limit or limit >= AW * AH:
            return AW, AH
        s = math.sqrt(limit / (AW * AH))
        g = self.grid
        return max(g, int(AW * s) // g * g), max(g, int(AH * s) // g * g)

    def _uses_reference(self) -> bool:
        return self.cfg.image_reference and "image_reference" in self.takes

    def _canvas(self, job: Job, AW: int, AH: int) -> tuple[np.ndarray, np.ndarray]:
        """(canvas AH x AW x 3 in [0, 1], mask AH x AW x 1, 1 = generate): the reference placed,
        the unknown area and the right/bottom padding filled, the grown margin masked too."""
        oy, ox = (job.pad_top, job.pad_left) if job.mode == "fast" else (0, 0)
        if self._classical is not None:  # the photo continued, the grid padding its edge
            job.fill_color = "classical"
            own = Job(job.ref, job.width, job.height, job.x0, job.y0, seed=job.seed)
            done = self._classical.outpaint([own])[0]
            pad = ((oy, AH - oy - job.height), (ox, AW - ox - job.width), (0, 0))
            canvas = np.pad(done, pad, mode="edge").astype(np.float32) / 255.0
        else:
            name = contrast_fill(job.ref) if self.fill == "contrast" else self.fill
            job.fill_color = name
            canvas = np.empty((AH, AW, 3), np.float32)
            canvas[:] = np.asarray(FILL_COLORS[name], np.float32) / 255.0
        mask = np.ones((AH, AW, 1), np.float32)
        y, x = oy + job.y0, ox + job.x0
        h, w = job.ref.shape[:2]
        canvas[y : y + h, x : x + w] = job.ref.astype(np.float32) / 255.0
        g = self.cfg.mask_grow_px
        if h > 2 * g and w > 2 * g:
            mask[y + g : y + h - g, x + g : x + w - g] = 0.0
        return canvas, mask

    @staticmethod
    def _resize(a: np.ndarray, W: int, H: int, mask: bool = False) -> np.ndarray:
        """Float H x W x C image to W x H: Lanczos for pixels; a mask keeps generating every
        cell that any generated pixel of its footprint touches."""
        from PIL import Image

        if a.shape[1] == W and a.shape[0] == H:
            return a
        if mask:
            return _any_in_footprint(a[:, :, 0] > 0.5, W, H)[:, :, None].astype(np.float32)
        chans = [
            Image.fromarray(a[:, :, c]).resize((W, H), Image.Resampling.LANCZOS)
            for c in range(a.shape[2])
        ]
        return np.clip(np.stack([np.asarray(c) for c in chans], axis=2), 0.0, 1.0)

    # -------------------------------------------------------------- generation
    def generator(self, seed: int):
        """A row's generator: on the CPU, seeded with the row seed (the same on any device)."""
        return self.torch.Generator("cpu").manual_seed(int(seed))

    def call_args(self, jobs: Sequence[Job], key: tuple) -> dict:
        """The pipeline arguments for one group (documented: docs/backends.md)."""
        AW, AH, GW, GH, steps, _ = key
        canvases, masks = zip(*(self._canvas(j, AW, AH) for j in jobs))
        args = {
            "image": [self._resize(c, GW, GH) for c in canvases],
            "mask_image": [self._resize(m, GW, GH, mask=True) for m in masks],
            "height": GH,
            "width": GW,
            "strength": 1.0,
            "num_inference_steps": steps,
            self.recipe.guidance_arg: self.cfg.guidance,
            "generator": [self.generator(j.seed) for j in jobs],
            "output_type": "np",
            **self.recipe.extra,
            **self._prompt_args(jobs),
            **self.cfg.pipeline_kwargs,
        }
        if self._uses_reference():
            args["image_reference"] = [j.ref.astype(np.float32) / 255.0 for j in jobs]
        # a recipe's fixed argument a pipeline version does not take is left out
        return {k: v for k, v in args.items() if k in self.takes}

    def _splits_decode(self) -> bool:
        """Whether the latents leave the pipeline call and are decoded outside the GPU lock
        (a family whose last step is known; not an fp16 VAE that upcasts itself)."""
        vae = self.pipe.vae
        upcasts = vae.dtype == self.torch.float16 and getattr(vae.config, "force_upcast", False)
        return self.recipe.decode is not None and self.pipelining and not upcasts

    def _decode(self, latents) -> np.ndarray:
        """The pipeline's own last step on its ``output_type="latent"`` output: B x H x W x 3
        floats in [0, 1], as ``output_type="np"`` gives them."""
        torch, vae = self.torch, self.pipe.vae
        cfg = vae.config
        latents = latents.to(vae.dtype)
        if self.recipe.decode == "sdxl":
            mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
            if mean is not None and std is not None:
                view = (1, len(mean), 1, 1)
                mean_t = torch.tensor(mean).view(view).to(latents.device, latents.dtype)
                std_t = torch.tensor(std).view(view).to(latents.device, latents.dtype)
                latents = latents * std_t / cfg.scaling_factor + mean_t
            else:
                latents = latents / cfg.scaling_factor
        elif self.recipe.decode == "z-image":
            latents = latents / cfg.scaling_factor + cfg.shift_factor
        # flux2: its latent output is already denormalised and unpatchified
        image = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="np")

    def _group(self, jobs: Sequence[Job], key: tuple) -> list[np.ndarray]:
        """prepare (canvases, prompts: outside the lock) -> the pipeline call (under it) ->
        decode (outside it, on this thread's side stream on CUDA), so with two concurrent
        calls per actor one call's loop runs while the other prepares or decodes."""
        import contextlib

        torch = self.torch
        AW, AH, GW, GH, _, _ = key
        args = self.call_args(jobs, key)
        split = self._splits_decode()
        if split:
            args["output_type"] = "latent"
        side = self.side_streams.get()
        self.busy.start()
        with torch.no_grad():
            with self._gpu_lock:
                t0 = time.perf_counter()
                images = self.pipe(**args).images
                self.sync()  # the loop's own time; its outputs are complete for the side stream
                self.busy.add(time.perf_counter() - t0)
            if split:
                if side is not None:  # made on the main stream, read on this one
                    images.record_stream(side)
                with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                    images = self._decode(images)
        out = []
        for job, im in zip(jobs, images):
            im = self._resize(np.asarray(im, np.float32), AW, AH)
            oy, ox = (job.pad_top, job.pad_left) if job.mode == "fast" else (0, 0)
            u8 = (np.clip(im, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            out.append(np.ascontiguousarray(u8[oy : oy + job.height, ox : ox + job.width]))
        return out

    def outpaint(self, jobs: Sequence[Job]) -> list[np.ndarray]:
        """Group by generated shape (and reference size); one pipeline call per group."""
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(self.shape_key(j), []).append(i)
        out: list[np.ndarray | None] = [None] * len(jobs)
        for key, idx in groups.items():
            for i, im in zip(idx, self._group([jobs[i] for i in idx], key)):
                out[i] = im
        return out  # type: ignore[return-value]


def _any_in_footprint(m: np.ndarray, W: int, H: int) -> np.ndarray:
    """H x W bool: True where any True pixel of ``m`` lies under the cell's footprint (the
    source rows and columns it covers, edges included), by an integral image."""
    sh, sw = m.shape
    ii = np.zeros((sh + 1, sw + 1), np.int64)
    ii[1:, 1:] = m.cumsum(0).cumsum(1)
    y0 = np.floor(np.arange(H) * sh / H).astype(int)
    y1 = np.ceil(np.arange(1, H + 1) * sh / H).astype(int)
    x0 = np.floor(np.arange(W) * sw / W).astype(int)
    x1 = np.ceil(np.arange(1, W + 1) * sw / W).astype(int)
    total = ii[y1][:, x1] - ii[y0][:, x1] - ii[y1][:, x0] + ii[y0][:, x0]
    return total > 0


def _parameters(cls) -> list[str]:
    import inspect

    return list(inspect.signature(cls.__call__).parameters)
