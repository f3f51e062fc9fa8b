"""Where and how outputs are written (``output``): encoding, colour, labels, seams,
the review page."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Section as _Section


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
