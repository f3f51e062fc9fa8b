"""Run configuration: YAML -> validated, typed model.

Validated once, at start: unknown keys and bad values raise ``ConfigError`` whose
message names the key path and what is allowed, before any work is done.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import storage

MAX_PIXELS_CEILING = 4_194_304  # 4 MP: the hosted API's ceiling, and ours
GRID = 16  # FLUX latent grid: VAE x8, 2x2 packing

Mode = Literal["high", "fast"]
OutputFormat = Literal["png", "jpeg", "webp"]
Anchor = Literal[
    "center",
    "left",
    "right",
    "top",
    "bottom",
    "top-left",
    "top-right",
    "bottom-left",
    "bottom-right",
]
ANCHORS: tuple[str, ...] = Anchor.__args__  # type: ignore[attr-defined]


class ConfigError(ValueError):
    """A bad config or manifest schema: the run stops before any work."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_ratio(value: Any) -> Fraction:
    """``"16:9"``, ``"1.91:1"``, ``1.5`` or ``"1.5"`` -> exact positive Fraction.

    Floats are taken at their decimal value (``1.7777`` is 17777/10000), so the
    canvas arithmetic stays exact integers. Raises ``ValueError`` with the reason.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"aspect_ratio must be 'W:H' or a number, got {value!r}")
    try:
        if isinstance(value, str):
            text = value.strip()
            if ":" in text:
                a, b = text.split(":", 1)
                r = Fraction(a.strip()) / Fraction(b.strip())
            else:
                r = Fraction(text)
        else:
            r = Fraction(repr(float(value)))
    except (ValueError, ZeroDivisionError, TypeError):
        raise ValueError(f"aspect_ratio {value!r} is not 'W:H' or a positive number") from None
    if r <= 0:
        raise ValueError(f"aspect_ratio {value!r} must be positive")
    r = r.limit_denominator(1_000_000)
    if not Fraction(1, 10_000) <= r <= 10_000:
        raise ValueError(f"aspect_ratio {value!r} is outside 1:10000 .. 10000:1")
    return r


class HttpConfig(_Section):
    """http(s) sources (product feeds, CDNs)."""

    max_connections_per_host: int = Field(8, ge=1, le=256, description="per worker process")
    timeout_s: float = Field(30.0, gt=0, description="one request, connect + read")
    max_wait_s: float = Field(
        120.0,
        ge=0,
        description="the most a source waits out 429/503 (Retry-After) and "
        "5xx / connection retries, in all",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="sent with every request (User-Agent, an API key header...)",
    )


class InputConfig(_Section):
    """Where the manifest and the source images are."""

    manifest: str = Field(
        description="manifest file, directory (recursive) or glob, any fsspec URI"
    )
    format: Literal["auto", "parquet", "csv", "tsv", "jsonl"] = Field(
        "auto",
        description="manifest file format; auto: by extension (.parquet, .csv, .tsv, .jsonl/.ndjson/.json)",
    )
    image_root: str | None = Field(
        None, description="prefix for relative `image` values (absolute paths and URIs are kept)"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="passed to fsspec for the manifest "
        "and the images (credentials: prefer the environment)",
    )
    header_threads: int = Field(32, ge=1, le=512, description="parallel header reads / HEADs")
    identity: Literal["auto", "listing", "head"] = Field(
        "auto",
        description="how a rerun learns whether sources changed: auto = object-store directories listed "
        "(1,000 keys a request) when cheaper than a HEAD a row, else a HEAD (stat) a row; listing; head",
    )
    listing_budget: float = Field(
        0.25,
        gt=0,
        le=10,
        description="auto: at most this many listing pages per row "
        "looked up before a directory falls back to a HEAD a row",
    )
    http: HttpConfig = Field(default_factory=HttpConfig, description="http(s) sources")


class Defaults(_Section):
    """Row values that a manifest column overrides."""

    mode: Mode = Field(
        "high",
        description="high (full steps, pixel-space canvas) | fast (reference encoded "
        "alone, fewer steps)",
    )
    output_format: OutputFormat = Field("png", description="png | jpeg (or jpg) | webp")
    auto_crop: bool = Field(
        False,
        description="crop a reference that extends past the canvas instead of rejecting "
        "the row (out_of_bounds)",
    )
    anchor: Anchor = Field(
        "center", description="where a reference without offsets sits on its canvas"
    )
    prompt: str = Field("", description="guidance for the model; empty = continue the scene")
    num_variants: int = Field(
        1, ge=1, le=16, description="outputs per row: {id}-{k} when more than one"
    )
    # Targets: a row with any target of its own ignores these (never "both targets").
    width: int | None = Field(None, description="a default target: canvas width (with height)")
    height: int | None = Field(None, description="a default target: canvas height (with width)")
    aspect_ratio: str | float | None = Field(
        None,
        description="a default target: canvas ratio 'W:H' or "
        "a number (16:9 stays a ratio, quoted or not)",
    )

    @field_validator("output_format", mode="before")
    @classmethod
    def _jpg(cls, v):
        return "jpeg" if isinstance(v, str) and v.lower() == "jpg" else v

    @field_validator("aspect_ratio")
    @classmethod
    def _ratio(cls, v):
        if v is not None:
            parse_ratio(v)
        return v

    @model_validator(mode="after")
    def _targets(self):
        has_size = self.width is not None or self.height is not None
        if has_size and self.aspect_ratio is not None:
            raise ValueError("give either width+height or aspect_ratio, not both")
        if has_size and (self.width is None or self.height is None):
            raise ValueError("width and height go together: give both")
        return self


class SizingConfig(_Section):
    """How big canvases are and how references sit on them (docs/contracts.md, Geometry)."""

    max_pixels: int = Field(
        MAX_PIXELS_CEILING,
        gt=0,
        le=MAX_PIXELS_CEILING,
        description="canvas budget (4 MP "
        "at most); aspect-ratio canvases scale the reference down to fit it",
    )
    fit: Literal["none", "contain"] = Field(
        "none",
        description="contain: with explicit sizes, scale the "
        "reference to fill_fraction of each canvas side",
    )
    fill_fraction: float = Field(
        0.8,
        gt=0,
        le=1.0,
        description="fit: contain: share of each canvas side the reference may span",
    )
    allow_upscale: bool = Field(False, description="fit: contain may enlarge small references")


class LimitsConfig(_Section):
    """Caps checked from each source's header before any pixel is decoded."""

    max_source_pixels: int = Field(
        64 * 1024 * 1024, gt=0, le=1 << 32, description="decoded size limit (image_too_large)"
    )
    max_source_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="file size limit (image_too_large)"
    )


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
        "so concurrent calls overlap the denoising loop",
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


class ModelConfig(_Section):
    """What generates the unknown area (docs/backends.md)."""

    backend: Literal["classical", "solid", "flux-fill", "bfl-api"] = Field(
        "classical",
        description="classical (CPU, no weights) | solid (plain padding) | flux-fill (FLUX.1 Fill on "
        "GPUs) | bfl-api (the hosted API, no GPU)",
    )
    api: ApiConfig = Field(
        default_factory=ApiConfig, description="bfl-api: the hosted FLUX Outpainting API"
    )
    path: str | None = Field(
        None,
        description="flux-fill: a diffusers directory, a Hugging Face id in the "
        "offline cache, or an object-storage URI synced once per node",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for an object-storage model.path"
    )
    fill: Literal["grey", "contrast", "green", "blue", "magenta"] | None = Field(
        None,
        description="flux-fill: what the unknown area holds before generation (default: the checkpoint's "
        "own, grey for FLUX.1-Fill-dev)",
    )
    steps: int = Field(50, ge=1, le=1000, description="denoising steps in high mode")
    fast_steps: int | None = Field(None, ge=1, le=1000, description="default: a third of steps")
    guidance: float = Field(
        30.0, ge=0, description="flux-fill: guidance scale (FLUX.1-Fill-dev is distilled for 30)"
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

    @model_validator(mode="after")
    def _path(self):
        if self.backend == "flux-fill" and not self.path:
            raise ValueError(
                "backend flux-fill needs model.path (a diffusers directory, HF id or URI)"
            )
        if self.optimize.fp8 and (self.device == "cpu" or self.dtype != "bfloat16"):
            raise ValueError(
                "optimize.fp8 needs a CUDA GPU (compute capability >= 8.9) and dtype bfloat16; "
                "set model.optimize.fp8: false"
            )
        return self


class ImageEncoding(_Section):
    """Encoder settings of the written images."""

    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality")
    webp_quality: int = Field(95, ge=1, le=100, description="WebP quality (lossy)")
    webp_lossless: bool = Field(False, description="lossless WebP")
    png_compress_level: int = Field(
        6, ge=0, le=9, description="zlib level: 0 (fastest) .. 9 (smallest)"
    )


# The IPTC Digital Source Type vocabulary (NewsCodes): terms output.digital_source_type takes
DIGITAL_SOURCE_TYPES = (
    "digitalCapture",
    "computationalCapture",
    "negativeFilm",
    "positiveFilm",
    "print",
    "humanEdits",
    "minorHumanEdits",
    "compositeCapture",
    "algorithmicallyEnhanced",
    "dataDrivenMedia",
    "digitalArt",
    "virtualRecording",
    "compositeSynthetic",
    "trainedAlgorithmicMedia",
    "compositeWithTrainedAlgorithmicMedia",
    "algorithmicMedia",
    "screenCapture",
)
NEWSCODES = "http://cv.iptc.org/newscodes/digitalsourcetype/"


class C2paConfig(_Section):
    """C2PA Content Credentials on generated outputs (``pip install 'outpaint[c2pa]'``)."""

    cert: str = Field(
        description="PEM certificate chain, signing certificate first (any fsspec URI)"
    )
    key_env: str = Field(
        description="environment variable holding the PEM private key (never in the config)"
    )
    alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = Field(
        "es256", description="signature algorithm of the certificate's key"
    )
    ta_url: str | None = Field(
        None, description="RFC 3161 timestamp authority URL (none: untimestamped)"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for cert"
    )


class OutputConfig(_Section):
    """Where and how outputs are written (docs/contracts.md, Outputs)."""

    uri: str = Field(
        description="local path or fsspec URI (s3://, gs://, az://): images/, metadata/, run.json, "
        "report.html"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="passed to fsspec for the output (credentials: prefer the environment)",
    )
    passthrough_columns: list[str] = Field(
        default_factory=list, description="manifest columns copied to the metadata unchanged"
    )
    mode: Literal["resume", "overwrite", "error_if_exists"] = Field(
        "resume",
        description="resume (skip rows already ok with the same request) | overwrite (redo every row) | "
        "error_if_exists (refuse to start over earlier outputs)",
    )
    encoding: ImageEncoding = Field(default_factory=ImageEncoding, description="encoder settings")
    # The generated area is opaque whatever this says.
    alpha: Literal["flatten", "preserve"] = Field(
        "flatten",
        description="sources with transparency: flatten onto "
        "background, or preserve (png/webp; jpeg always flattens)",
    )
    background: tuple[int, int, int] = Field(
        (255, 255, 255), description="alpha: flatten: RGB 0..255"
    )
    metadata_part_rows: int = Field(
        10_000, ge=1, description="rows per metadata part file while running"
    )
    # never where the reference touches the canvas edge
    feather_px: int = Field(
        8,
        ge=0,
        le=128,
        description="blend band inside the reference, on generated sides only (0 = exact paste)",
    )
    color_match: bool = Field(
        False, description="match the generated area's colours to the reference border"
    )
    # colour management: the model works in sRGB; the output keeps the source's profile
    # (preserve: its reference values byte-exact) or is converted to sRGB and tagged (srgb)
    color: Literal["preserve", "srgb"] = Field(
        "preserve",
        description="output colour space: preserve = the "
        "source's ICC profile, srgb = converted to sRGB and tagged",
    )
    color_intent: Literal["relative", "perceptual", "saturation", "absolute"] = Field(
        "relative",
        description="LittleCMS rendering intent of every conversion (relative colorimetric keeps "
        "in-gamut colours exact)",
    )
    digital_source_type: str = Field(
        "auto",
        description="IPTC DigitalSourceType label (XMP) on outputs with "
        "generated pixels: auto (compositeWithTrainedAlgorithmicMedia for learned "
        "models, compositeSynthetic for classical/solid), an IPTC term or its URI, "
        "or none",
    )
    keep_metadata: bool = Field(
        True,
        description="carry the source's EXIF and rights XMP/IPTC (creator, "
        "copyright, credit) to the output; orientation reset, no GPS",
    )
    keep_gps: bool = Field(
        False, description="with keep_metadata: keep the source's GPS position too"
    )
    c2pa: C2paConfig | None = Field(
        None,
        description="sign generated outputs with C2PA Content Credentials "
        "(a c2pa.edited action with the digital source type)",
    )
    report: bool = Field(True, description="write report.html at the end of the run")
    report_sample: int = Field(
        24, ge=0, le=500, description="rows in the review page's before/after gallery"
    )

    @field_validator("digital_source_type")
    @classmethod
    def _source_type(cls, v):
        term = v[len(NEWSCODES) :] if v.startswith(NEWSCODES) else v
        if v not in ("auto", "none") and term not in DIGITAL_SOURCE_TYPES:
            raise ValueError(
                f"{v!r} is not auto, none, an IPTC digital source type ("
                f"{', '.join(DIGITAL_SOURCE_TYPES)}) or its URI ({NEWSCODES}<term>)"
            )
        return v


class RuntimeConfig(_Section):
    """Where and how the run executes: Ray, actors, blocks, progress."""

    @model_validator(mode="after")
    def _actors(self):
        if self.min_actors is not None and self.min_actors > self.num_actors:
            raise ValueError(
                "min_actors must not exceed num_actors (the autoscaling range is min..num)"
            )
        return self

    seed: int = Field(
        0,
        ge=0,
        lt=1 << 63,
        description="run seed: per-row seeds derive from (seed, id) unless the row has one",
    )
    ray_address: str | None = Field(
        None, description="existing cluster; default: start a local Ray"
    )
    num_cpus: int | None = Field(
        None, ge=1, description="local Ray only: CPUs to use (default all)"
    )
    num_actors: int = Field(
        1, ge=1, description="model actors (actor backends, e.g. flux-fill): the most"
    )
    min_actors: int | None = Field(
        None, ge=1, description="autoscaling range: min_actors .. num_actors"
    )
    object_store_memory: int | None = Field(
        None, ge=78_643_200, description="local Ray only: bytes"
    )
    actor_restarts: int = Field(
        -1, ge=-1, description="restarts of a dead model actor (-1: always)"
    )
    batch_size: int = Field(4, ge=1, description="rows per model call")
    num_gpus_per_actor: float | None = Field(
        None,
        ge=0,
        description="default: 1 for flux-fill (0 with model.device: cpu, or on a local Ray "
        "without GPUs), 0 for the CPU backends; the autoscaler scales GPU groups by it",
    )
    num_cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved by each model actor")
    # Two calls in flight per model actor: while one runs the denoising loop the other
    # uploads and VAE-encodes the next batch (model.optimize.pipelining), and Ray
    # prefetches further batches' inputs (actor_tasks_in_flight).
    actor_concurrency: int = Field(2, ge=1, le=8, description="concurrent calls per model actor")
    actor_tasks_in_flight: int | None = Field(
        None, ge=1, le=64, description="default 2 x actor_concurrency"
    )
    block_rows: int = Field(
        16, ge=1, description="work rows per Ray block through the image stages"
    )
    plan_block_rows: int = Field(
        65_536,
        ge=1,
        description="manifest rows per triage chunk (plan + resume "
        "filter + bulk metadata, columnar); Parquet slices are whole row groups",
    )
    progress_interval_s: float = Field(
        5.0,
        gt=0,
        description="seconds between progress lines (logs; a "
        "terminal or notebook shows a progress bar)",
    )
    ray_progress_bars: bool = Field(False, description="Ray Data's own per-operator progress bars")
    verbose: bool = Field(
        False,
        description="Ray's and the model libraries' logs and warnings (outpaint run --verbose)",
    )


class PlanConfig(_Section):
    """What `outpaint plan` estimates and warns about."""

    # FLUX at 1024x1024 (4096 tokens) costs ~74 TFLOP a step: ~0.093 s on one H100 in bf16
    seconds_per_step_at_1mp: float = Field(
        0.093,
        gt=0,
        description="GPU-time estimate: seconds per denoising "
        "step at 1024x1024 (outpaint bench prints your hardware's)",
    )
    warn_generated_share: float = Field(
        0.75,
        gt=0,
        le=1,
        description="plan warns about rows whose canvas "
        "is more than this share generated (the reference too small for it)",
    )


class Config(_Section):
    """One run: YAML, validated once at start."""

    input: InputConfig = Field(description="the manifest and the sources")
    defaults: Defaults = Field(
        default_factory=Defaults, description="row values a manifest column overrides"
    )
    sizing: SizingConfig = Field(
        default_factory=SizingConfig, description="canvas sizes and placement"
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="caps on sources")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the backend")
    output: OutputConfig = Field(description="where outputs go and how they are encoded")
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig, description="Ray, actors, progress"
    )
    plan: PlanConfig = Field(default_factory=PlanConfig, description="outpaint plan's estimates")


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers: ``aspect_ratio: 16:9`` must stay
    the string "16:9", not the integer 969."""


# PyYAML's int/float patterns with the sexagesimal alternatives removed.
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"""
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"""
    r"""|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"""
)
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in _NUMBER_TAGS]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        kind = e["type"]
        if kind == "extra_forbidden":
            parent = loc.rsplit(".", 1)[0] if "." in loc else ""
            allowed = _allowed_keys(parent)
            msg = f"unknown key `{loc}`" + (
                f"; allowed here: {', '.join(allowed)}" if allowed else ""
            )
        elif kind == "missing":
            msg = f"`{loc}` is required"
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            text = e["msg"].removeprefix("Value error, ")
            msg = f"`{loc}`: {text}{got_s}" if loc else text
        lines.append(msg)
    head = f"invalid config {source}: " if source else "invalid config: "
    return head + "; ".join(lines)


def _allowed_keys(section_path: str) -> list[str]:
    model: Any = Config
    for part in [p for p in section_path.split(".") if p]:
        field = model.model_fields.get(part)
        if (
            field is None
            or not isinstance(field.annotation, type)
            or not issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(model.model_fields)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``a.b=c`` strings onto a nested dict; values parsed as YAML (``5``, ``true``, ``[a]``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {key}: `{p}` is a value, not a section")
            node = child
        try:
            node[parts[-1]] = parse_yaml(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: value is not valid YAML ({e.problem})") from None
    return data


def from_dict(data: Any, source: str = "") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping of sections")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load(
    uri: str, overrides: list[str] | None = None, storage_options: dict | None = None
) -> Config:
    """Read a YAML config from any fsspec URI, apply ``--set`` overrides, validate."""
    try:
        fs, path = storage.filesystem(uri, storage_options)
        with fs.open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config {uri}: file not found") from None
    try:
        data = parse_yaml(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config {uri}: not valid YAML{where}: {getattr(e, 'problem', e)}"
        ) from None
    return from_dict(apply_overrides(data, overrides or []), uri)


def dump(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")
