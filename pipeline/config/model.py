"""The backend and how it runs (``model``): FLUX Fill's checkpoint and speed settings,
the hosted API's connection, the CPU backends' knobs."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Section as _Section
from .source import GRID, MAX_PIXELS_CEILING

SHAPE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
# attention backends that need no download (diffusers' *_hub ones fetch kernels)
ATTENTION_BACKENDS = (
    "native",
    "_native_flash",
    "_native_cudnn",
    "_native_efficient",
    "flash",
    "_flash_3",
    "sage",
)


class OptimizeConfig(_Section):
    """How the model runs on the GPU (flux-fill). ``auto`` turns a setting on on CUDA
    and off on CPU. Only ``fp8`` and ``bucket_px`` change outputs (and so the rows'
    request hash); the rest are numerically near-identical (see benchmarks/RESULTS.md)."""

    compile: Literal["auto", "none", "blocks", "full"] = Field(
        "auto",
        description="torch.compile the transformer's repeated blocks (short compile) or all of it",
    )
    compile_mode: Literal[
        "default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"
    ] = Field("default", description="torch.compile mode")
    cuda_graphs: bool = Field(
        False,
        description="CUDA graphs for the compiled blocks (pays off at small "
        "canvases; not yet measured here); runs one call at a time per actor",
    )
    fuse_qkv: bool = Field(
        True, description="one QKV projection GEMM per attention instead of three"
    )
    channels_last_vae: Literal["auto", "on", "off"] = Field(
        "auto", description="NHWC convolutions in the VAE"
    )
    attention: str = Field(
        "native", description="diffusers attention backend: " + ", ".join(ATTENTION_BACKENDS)
    )
    fp8: bool = Field(
        False, description="torchao dynamic float8 (rowwise) transformer linears; CUDA >= 8.9"
    )
    bucket_px: int = Field(
        16,
        ge=16,
        le=1024,
        description="canvases are generated at multiples of this "
        "(then cropped): fewer distinct shapes -> bigger batches, fewer compilations",
    )
    max_shapes: int = Field(
        16, ge=1, le=256, description="compiled shapes kept per actor (torch recompile limit)"
    )
    warmup: list[str] = Field(
        default_factory=list,
        description="canvas sizes 'WxH' compiled at actor start "
        "(the defaults' width x height is added)",
    )
    pipelining: bool = Field(
        True,
        description="prepare (upload, VAE encode) and decode outside the GPU lock, "
        "so concurrent calls overlap the denoising loop (diffusers: prepare and decode)",
    )

    @field_validator("attention")
    @classmethod
    def _attention(cls, v):
        if v not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention backend {v!r} is not one of {', '.join(ATTENTION_BACKENDS)} "
                "(hub-downloaded kernels are not allowed)"
            )
        return v

    @field_validator("bucket_px")
    @classmethod
    def _bucket(cls, v):
        if v % GRID:
            raise ValueError(f"bucket_px must be a multiple of {GRID} (the latent grid)")
        return v

    @field_validator("warmup")
    @classmethod
    def _warmup(cls, v):
        for item in v:
            m = SHAPE.match(str(item))
            if not m or not (0 < int(m[1]) * int(m[2]) <= MAX_PIXELS_CEILING):
                raise ValueError(
                    f"warmup size {item!r} must be 'WxH' with W*H <= {MAX_PIXELS_CEILING}"
                )
        return v

    def shapes(self) -> list[tuple[int, int]]:
        return [(int(m[1]), int(m[2])) for m in (SHAPE.match(str(s)) for s in self.warmup)]


class ApiConfig(_Section):
    """``model.backend: bfl-api``: the hosted FLUX Outpainting API."""

    endpoint: str = Field(
        "https://api.bfl.ai",
        description="https://api.bfl.ai, https://api.eu.bfl.ai or https://api.us.bfl.ai",
    )
    key_env: str = Field(
        "BFL_API_KEY", description="the environment variable holding the API key (only there)"
    )
    max_active: int = Field(
        24,
        ge=1,
        le=256,
        description="the account's concurrent-task limit, held across the whole run",
    )
    safety_tolerance: int = Field(
        2, ge=0, le=5, description="moderation: 0 (strict) .. 5 (permissive)"
    )
    max_cost_credits: float | None = Field(
        None,
        gt=0,
        description="stop submitting once the run has spent "
        "this many credits (1 credit = 0.01 USD)",
    )
    poll_interval_s: float = Field(
        0.5, gt=0, description="first poll after submitting; backs off from here"
    )
    poll_max_interval_s: float = Field(
        1.0,
        gt=0,
        description="polls back off to this: a finished task waits at most this long to be seen",
    )
    task_timeout_s: float = Field(
        600.0,
        gt=0,
        description="a task still Pending after this fails its row "
        "(it stays journaled: a rerun polls it again)",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="one HTTP request to the API")
    max_wait_s: float = Field(
        600.0, ge=0, description="the most a row waits out 429s and unreachable API"
    )
    upload_format: Literal["png", "jpeg"] = Field("png", description="how the reference is sent")
    result_format: Literal["png", "jpeg"] = Field(
        "png", description="what the API returns (png: lossless)"
    )
    retry_ambiguous_submit: bool = Field(
        False,
        description="repeat a submission whose answer was lost (5xx, "
        "connection reset): the row may then be charged twice (recorded)",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v):
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v


class BackdropConfig(_Section):
    """When a row's border is a plain studio backdrop, continued without a model
    (docs/product-photos.md); the tolerances are levels of 0..255, measured on real
    products composited on real-looking backdrops and on scene photos."""

    flat_tolerance: float = Field(
        1.5,
        ge=0,
        le=50,
        description="RMS of the border's block means around a "
        "constant (beyond their noise) for a flat backdrop",
    )
    gradient_tolerance: float = Field(
        2.0,
        ge=0,
        le=50,
        description="RMS around a quadratic surface for a gradient, sweep or vignette",
    )
    outlier_share: float = Field(
        0.002,
        ge=0,
        le=1,
        description="share of border pixels far from the fit "
        "(an object, a product cut by the frame) that makes a side a scene",
    )
    band_px: int = Field(12, ge=2, le=128, description="px of each generated side judged")
    max_noise: float = Field(
        8.0,
        ge=0,
        le=128,
        description="the border's noise (per-pixel sigma, levels) beyond which it is texture "
        "(sand, fabric, foliage), not a backdrop: studio shots measure 1-3",
    )
    color: tuple[int, int, int] | None = Field(
        None,
        description="fill with this RGB instead of the fitted "
        "backdrop, without grain (a shop's pure white)",
    )
    max_color_distance: float | None = Field(
        None,
        gt=0,
        description="with color: a row whose fitted "
        "backdrop is farther than this (levels, per channel) fails",
    )


class SceneConfig(_Section):
    """``model.route: cascade``: which rows the scene fill tries before the backend
    (docs/backends.md). Set on scikit-image's photos: variation of textures (grass,
    gravel, brick) 0.3-0.75, of object-rich photos 0.97 and above; lines of grass, gravel
    and star fields under 0.13, of a brick wall 0.21 and above."""

    max_variation: float = Field(
        0.8,
        ge=0,
        description="the original's border band as a texture: the spread of its blocks' "
        "colours over their own texture; above this, the row goes straight to the backend "
        "(0: no row tries the scene fill)",
    )
    max_lines: float = Field(
        0.17,
        ge=0,
        le=1,
        description="the share of the border band's edges on long straight lines (bricks, "
        "tiles, planks: lines the scene fill breaks); above this, straight to the backend",
    )


class ModelConfig(_Section):
    """What generates the unknown area (docs/backends.md)."""

    backend: Literal["classical", "scene", "solid", "flux-fill", "diffusers", "bfl-api"] = Field(
        "classical",
        description="classical (CPU, no weights) | scene (CPU: textured scenes continued with the "
        "photo's own border, patch by patch) | solid (plain padding) | flux-fill (FLUX.1 Fill on "
        "GPUs) | diffusers (any diffusers inpainting checkpoint on GPUs) | bfl-api (the hosted API, no GPU)",
    )
    api: ApiConfig = Field(
        default_factory=ApiConfig, description="bfl-api: the hosted FLUX Outpainting API"
    )
    path: str | None = Field(
        None,
        description="flux-fill, diffusers: a diffusers directory, a Hugging Face id in the "
        "offline cache, or an object-storage URI synced once per node",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for an object-storage model.path"
    )
    fill: Literal["grey", "contrast", "green", "blue", "magenta", "classical"] | None = Field(
        None,
        description="what the unknown area holds before generation (flux-fill default: the "
        "checkpoint's own, grey for FLUX.1-Fill-dev; diffusers: the family's, classical = the "
        "classical backend's continuation of the photo, diffusers only)",
    )
    steps: int = Field(
        50,
        ge=1,
        le=1000,
        description="denoising steps in high mode (diffusers: default from the checkpoint's family)",
    )
    fast_steps: int | None = Field(None, ge=1, le=1000, description="default: a third of steps")
    guidance: float = Field(
        30.0,
        ge=0,
        description="guidance scale: flux-fill 30 (FLUX.1-Fill-dev is distilled for it); diffusers: "
        "default from the checkpoint's family",
    )
    negative_prompt: str | None = Field(
        None,
        max_length=2000,
        description="diffusers: the negative prompt where the pipeline takes one (default: the "
        "family's, usually none)",
    )
    pipeline_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="diffusers: more arguments of the pipeline's __call__ (checked against its "
        "signature before any work; part of the request hash)",
    )
    image_reference: bool = Field(
        True,
        description="diffusers: pass the reference as image_reference where the pipeline takes "
        "one (FLUX.2 [klein]); rows are then batched per reference size",
    )
    license: str | None = Field(
        None,
        max_length=200,
        description="the checkpoint's licence id (Hugging Face ids: apache-2.0, openrail++...) where "
        "its model card is absent or wrong; default: the card's",
    )
    require_commercial_license: bool = Field(
        False,
        description="refuse, before any work, a checkpoint not known to permit commercial use "
        "(flux-fill, diffusers; docs/backends.md has the table of licence ids)",
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16",
        description="flux-fill: weights and compute (float32 for the tiny test model on CPU)",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="flux-fill: auto = cuda where present"
    )
    mask_grow_px: int = Field(
        0, ge=0, le=64, description="grow the mask into the reference (blending)"
    )
    quantize: Literal["none", "float8", "int8"] = Field(
        "none",
        description="transformer weight storage (torchao, weight-only; changes pixels: part of the "
        "request hash): float8 on compute capability >= 8.9, int8 on Ampere; halves its memory for 24 GB GPUs",
    )
    text_encoder_device: Literal["auto", "cpu", "model"] = Field(
        "auto",
        description="where the text encoders embed the prompts (then they are dropped): auto = cpu "
        "when model.quantize is set (to fit small GPUs), else the model's device",
    )
    max_sequence_length: int = Field(512, ge=1, le=512, description="flux-fill: T5 prompt tokens")
    free_text_encoders: bool = Field(
        True, description="drop the text encoders once every prompt is embedded"
    )
    cache_dir: str | None = Field(
        None, description="where object-storage model URIs are synced (per node)"
    )
    optimize: OptimizeConfig = Field(
        default_factory=OptimizeConfig,
        description="flux-fill speed (docs/gpu.md); auto = on with CUDA, off on CPU",
    )
    solid_mode: Literal["edge", "color"] = Field(
        "edge", description="solid: edge (the reference's border extended) | color"
    )
    solid_color: tuple[int, int, int] = Field(
        (255, 255, 255), description="solid color: RGB 0..255"
    )
    solid_blur: float = Field(
        0.0, ge=0, le=256, description="solid edge: Gaussian blur radius of the extension"
    )
    route: Literal["auto", "model", "backdrop", "cascade"] = Field(
        "auto",
        description="auto: a row whose generated sides border a plain backdrop is continued without the "
        "model (no GPU, no API credit); model: every row to the backend; backdrop: every row continued, "
        "rows not on a plain backdrop fail; cascade: as auto, then a row whose border is a texture is "
        "continued by the scene fill, kept when it passes the quality score, else on to the backend",
    )
    backdrop: BackdropConfig = Field(
        default_factory=BackdropConfig, description="plain-backdrop rules"
    )
    scene: SceneConfig = Field(
        default_factory=SceneConfig, description="route: cascade: the scene fill's step"
    )
    classical_grain: float = Field(
        1.0,
        ge=0,
        le=4,
        description="classical: strength of the photo's own texture "
        "continued over the fill (0 = smooth, 1 = matched)",
    )

    @field_validator("solid_color")
    @classmethod
    def _rgb(cls, v):
        if any(not 0 <= c <= 255 for c in v):
            raise ValueError("colour components must be 0..255")
        return v

    @property
    def steps_fast(self) -> int:
        return self.fast_steps if self.fast_steps is not None else max(1, round(self.steps / 3))

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data):
        """diffusers: steps and guidance the config leaves out come from the family's recipe."""
        if not isinstance(data, dict) or data.get("backend") != "diffusers" or not data.get("path"):
            return data
        from .families import checkpoint_defaults

        return {**checkpoint_defaults(data["path"], data.get("storage_options")), **data}

    @model_validator(mode="after")
    def _path(self):
        if self.backend in ("flux-fill", "diffusers") and not self.path:
            raise ValueError(
                f"backend {self.backend} needs model.path (a diffusers directory, HF id or URI)"
            )
        if self.fill == "classical" and self.backend != "diffusers":
            raise ValueError(
                "model.fill classical (the photo continued before encoding) is for model.backend "
                "diffusers; FLUX.1 Fill was trained on a flat fill: grey, contrast or a colour"
            )
        if self.backend == "diffusers":
            from .checkpoints import describe
            from .families import check_pipeline_kwargs, runs_as

            ckpt = describe(self.path, self.storage_options)
            check_pipeline_kwargs(runs_as(ckpt), self.pipeline_kwargs)
        if self.require_commercial_license:
            from .licenses import license_of

            lic = license_of(self)
            if lic is not None and not lic.commercial:
                raise ValueError(
                    f"model.require_commercial_license: {lic.line()}; run a checkpoint licensed "
                    "for commercial use (docs/backends.md), or set model.license if its card is "
                    "absent or wrong"
                )
        if self.optimize.fp8 and (self.device == "cpu" or self.dtype != "bfloat16"):
            raise ValueError(
                "optimize.fp8 needs a CUDA GPU (compute capability >= 8.9) and dtype bfloat16; "
                "set model.optimize.fp8: false"
            )
        return self
