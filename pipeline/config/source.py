"""Where rows come from and what they ask: the manifest and the sources (``input``), row
defaults (``defaults``), canvas sizing (``sizing``) and caps on sources (``limits``)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Section as _Section

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
    "subject",  # the product's own box (subject_x0..y1 columns) centred at sizing.subject_fill
]
ANCHORS: tuple[str, ...] = Anchor.__args__  # type: ignore[attr-defined]


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
        description="sent with every request (User-Agent, an API key header...); the values are "
        "treated as secrets",
    )
    max_redirects: int = Field(
        5, ge=0, le=20, description="redirects followed per request, each hop checked"
    )
    allow_private_networks: bool = Field(
        False,
        description="let sources reach loopback, private, link-local (cloud metadata), multicast and "
        "reserved addresses: for internal CDNs and tests; manifests are untrusted, so off by default",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names or CIDR ranges sources may reach even when private (an internal CDN: "
        "cdn.corp.example, 10.20.0.0/16)",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v):
        import ipaddress

        for item in v:
            if "/" in item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(
                        f"{item!r} is not a CIDR range (10.0.0.0/8, fd00::/8)"
                    ) from None
        return v


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
    allow_upscale: bool = Field(
        False, description="fit: contain, and anchor: subject, may enlarge small references"
    )
    subject_fill: float = Field(
        0.85,
        gt=0,
        le=1.0,
        description="anchor: subject: the share of the canvas's shorter side the product's box spans "
        "(its longer side; Amazon's main image: 0.85)",
    )
    require_subject_fill: bool = Field(
        False,
        description="anchor: subject: a product too small to reach subject_fill without upscaling is "
        "preset_too_small rather than placed smaller (presets that promise the share)",
    )
    min_side: int | None = Field(
        None,
        ge=1,
        description="a canvas whose shorter side would be under this is preset_too_small (an "
        "aspect-ratio canvas is enlarged to it instead when allow_upscale)",
    )


class LimitsConfig(_Section):
    """Caps on what an untrusted manifest or source may make a row cost: checked from the
    manifest's cells and each source's header before any pixel is decoded; a row over a
    cap ends with its code, never the job."""

    max_source_pixels: int = Field(
        64 * 1024 * 1024, gt=0, le=1 << 32, description="decoded size limit (image_too_large)"
    )
    max_source_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="file size limit (image_too_large)"
    )
    max_prompt_chars: int = Field(
        2_000, ge=1, le=100_000, description="a row's prompt (prompt_too_long)"
    )
    max_cell_bytes: int = Field(
        64 * 1024,
        ge=256,
        description="any other manifest cell, passthrough columns included (cell_too_large)",
    )
    max_manifest_line_bytes: int = Field(
        1024 * 1024, ge=1024, description="a CSV/TSV/JSON Lines manifest's line (row_too_large)"
    )
    max_icc_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="a source's embedded ICC profile (image_metadata_too_large)",
    )
    max_xmp_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="a source's embedded XMP packet (image_metadata_too_large)",
    )
