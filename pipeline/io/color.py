"""Colour management: a source's embedded ICC profile, the sRGB view the model works
in, and the output's colour space (LittleCMS through Pillow's ``ImageCms``).

- A source's profile is read once at decode. Untagged sources are sRGB. A profile
  that does not open, or is of the wrong colour space for the pixels, is ignored as
  browsers ignore it: the source counts as untagged sRGB and the row says so.
- The model always sees the reference rendered to sRGB (``ColorPlan.to_model``); what
  it generates is converted into the output's space (``ColorPlan.from_model``), so
  reference and generated pixels meet without a step *as displayed*.
- ``output.color: preserve`` keeps the source's space: its stored reference values go
  to the output unchanged, with its profile embedded (grey stays grey). ``srgb``
  converts everything to sRGB and tags it. CMYK always becomes tagged sRGB, through
  its own profile or, untagged, through ``FALLBACK_CMYK`` (never the naive formula).

Transforms are built once per (profile, direction, intent) and kept per process: a row
costs a dictionary lookup, and an untagged sRGB source costs nothing at all.
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageCms

INTENTS = {
    "perceptual": ImageCms.Intent.PERCEPTUAL,
    "relative": ImageCms.Intent.RELATIVE_COLORIMETRIC,
    "saturation": ImageCms.Intent.SATURATION,
    "absolute": ImageCms.Intent.ABSOLUTE_COLORIMETRIC,
}
UNTAGGED = "sRGB (untagged)"
SRGB_NAME = "sRGB"
# what a profile must describe for the pixels it is embedded with (ICC colour space signatures)
_SPACE_OF_MODE = {
    "RGB": "RGB ",
    "RGBA": "RGB ",
    "RGBX": "RGB ",
    "P": "RGB ",
    "PA": "RGB ",
    "L": "GRAY",
    "LA": "GRAY",
    "La": "GRAY",
    "I;16": "GRAY",
    "I;16L": "GRAY",
    "I;16B": "GRAY",
    "I;16N": "GRAY",
    "I": "GRAY",
    "F": "GRAY",
    "1": "GRAY",
    "CMYK": "CMYK",
}


@lru_cache(maxsize=1)
def srgb_bytes() -> bytes:
    """LittleCMS's built-in sRGB profile, as embedded in outputs tagged sRGB."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# ------------------------------------------------------------------ profiles and transforms

_lock = threading.Lock()
_profiles: dict[bytes, ImageCms.ImageCmsProfile] = {}
_transforms: dict[tuple, ImageCms.ImageCmsTransform] = {}


def _digest(icc: bytes) -> bytes:
    return hashlib.blake2b(icc, digest_size=16).digest()


def profile(icc: bytes) -> ImageCms.ImageCmsProfile:
    """An opened profile, once per distinct profile per process."""
    key = _digest(icc)
    p = _profiles.get(key)
    if p is None:
        p = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        with _lock:
            _profiles[key] = p
    return p


def transform(src: bytes | None, dst: bytes | None, in_mode: str, out_mode: str, intent: str):
    """The LittleCMS transform ``src`` -> ``dst`` (None = sRGB), built once and cached."""
    key = (_digest(src) if src else None, _digest(dst) if dst else None, in_mode, out_mode, intent)
    t = _transforms.get(key)
    if t is None:
        t = ImageCms.buildTransform(
            profile(src or srgb_bytes()),
            profile(dst or srgb_bytes()),
            in_mode,
            out_mode,
            renderingIntent=INTENTS[intent],
        )
        with _lock:
            _transforms[key] = t
    return t


def apply(t, pixels: np.ndarray, in_mode: str) -> np.ndarray:
    """H x W x C uint8 through a transform; ``in_mode`` names the input's Pillow mode."""
    img = Image.fromarray(pixels[:, :, 0] if in_mode == "L" else pixels, in_mode)
    out = np.asarray(ImageCms.applyTransform(img, t))
    return out[:, :, None] if out.ndim == 2 else out


def describe(icc: bytes) -> str:
    p = profile(icc)
    text = (p.profile.profile_description or "").strip() or ImageCms.getProfileDescription(
        p
    ).strip()
    return text or "unnamed ICC profile"


# ------------------------------------------------------------------ a source's colour


@dataclass(frozen=True)
class SourceColor:
    """What a decoded source's stored values mean."""

    icc: bytes | None  # a usable embedded profile (None: sRGB)
    space: str  # "srgb" | "rgb" | "gray" | "cmyk"
    description: str  # the profile's description, or "sRGB (untagged)"
    note: str | None = None  # why an embedded profile was ignored, or a fallback used


def read_source(img: Image.Image) -> SourceColor:
    """The embedded profile of a decoded image, checked: it must open and describe the
    image's colour space; a broken one is ignored (browsers do the same)."""
    icc = img.info.get("icc_profile")
    mode = img.mode
    if not icc:
        if mode == "CMYK":
            return SourceColor(
                fallback_cmyk(),
                "cmyk",
                FALLBACK_CMYK_NAME,
                "no embedded profile: CMYK converted through outpaint's fallback CMYK profile "
                f"({FALLBACK_CMYK_NAME})",
            )
        return SourceColor(None, "srgb", UNTAGGED)
    try:
        p = profile(icc)
        space = p.profile.xcolor_space
    except Exception as e:  # noqa: BLE001 - garbage, truncated: as a browser would, ignore it
        return _ignored(img, f"embedded ICC profile unreadable ({type(e).__name__}: {str(e)[:80]})")
    want = _SPACE_OF_MODE.get(mode)
    if space != want:
        return _ignored(
            img, f"embedded ICC profile is for {space.strip() or '?'} but the image is {mode}"
        )
    kind = {"RGB ": "rgb", "GRAY": "gray", "CMYK": "cmyk"}[space]
    try:  # a profile can open and still not build (a missing or truncated tag)
        transform(
            icc,
            None,
            "CMYK" if kind == "cmyk" else ("L" if kind == "gray" else "RGB"),
            "RGB",
            "relative",
        )
    except Exception as e:  # noqa: BLE001
        return _ignored(
            img, f"embedded ICC profile cannot be used ({type(e).__name__}: {str(e)[:80]})"
        )
    return SourceColor(icc, kind, describe(icc))


def _ignored(img: Image.Image, why: str) -> SourceColor:
    if img.mode == "CMYK":
        return SourceColor(
            fallback_cmyk(),
            "cmyk",
            FALLBACK_CMYK_NAME,
            f"{why}; converted through outpaint's fallback CMYK profile ({FALLBACK_CMYK_NAME})",
        )
    return SourceColor(None, "srgb", UNTAGGED, f"{why}; treated as untagged sRGB")


# ------------------------------------------------------------------ a row's colour plan


@dataclass(frozen=True)
class OutputSpace:
    """The colour space an output is written in: what the write stage needs."""

    icc: bytes | None  # the output's own profile when it is not sRGB (preserve + tagged source)
    tag_srgb: bool  # else: embed sRGB (output.color: srgb, a converted CMYK or grey source)
    mode: str  # "RGB" | "L"
    intent: str

    def from_model(self, canvas: np.ndarray) -> np.ndarray:
        """Generated (sRGB) pixels into this space."""
        if self.icc is None:
            return canvas
        return apply(transform(None, self.icc, "RGB", self.mode, self.intent), canvas, "RGB")

    @property
    def embed(self) -> bytes | None:
        """The profile the output carries (None: untagged, i.e. sRGB)."""
        return self.icc if self.icc is not None else (srgb_bytes() if self.tag_srgb else None)


@dataclass(frozen=True)
class ColorPlan:
    """How one row's pixels move between the source's space, the model's (sRGB) and the
    output's. ``stored`` is the decoded reference's mode ("RGB" or "L"; CMYK is
    converted to sRGB at decode)."""

    source: SourceColor
    stored: str
    output: OutputSpace
    transform_name: str  # metadata color_transform

    @property
    def _stored_icc(self) -> bytes | None:
        return None if self.source.space == "cmyk" else self.source.icc

    def to_model(self, ref: np.ndarray) -> np.ndarray:
        """The reference as the model sees it: sRGB, 3 channels."""
        if self._stored_icc is None:
            return ref if ref.shape[2] == 3 else np.repeat(ref, 3, axis=2)
        return apply(
            transform(self._stored_icc, None, self.stored, "RGB", self.output.intent),
            ref,
            self.stored,
        )

    def to_output(self, ref: np.ndarray, model_ref: np.ndarray) -> np.ndarray:
        """The reference as the output stores it: the source's own values when the output
        keeps its space (byte-exact), else its sRGB rendering."""
        return ref if self.output.icc is not None else model_ref

    @property
    def output_profile(self) -> str | None:
        """Metadata ``output_profile``: what the output is tagged with (None: untagged)."""
        if self.output.icc is not None:
            return self.source.description
        return SRGB_NAME if self.output.tag_srgb else None


def plan(
    source: SourceColor, stored: str, output_color: str, output_format: str, intent: str
) -> ColorPlan:
    """The colour plan of a row: ``output.color`` (preserve | srgb) for this source and format."""
    space = source.space

    def out(icc=None, tag=False, mode="RGB"):
        return OutputSpace(icc, tag, mode, intent)

    if space == "cmyk":
        return ColorPlan(source, stored, out(tag=True), "cmyk_to_srgb")
    if space == "srgb":
        return ColorPlan(source, stored, out(tag=output_color == "srgb"), "none")
    keep = output_color == "preserve" and not (
        space == "gray" and output_format == "webp"
    )  # no grey WebP
    if keep:
        return ColorPlan(
            source, stored, out(icc=source.icc, mode="L" if space == "gray" else "RGB"), "none"
        )
    return ColorPlan(
        source, stored, out(tag=True), "gray_to_srgb" if space == "gray" else "to_srgb"
    )


def to_srgb_image(img: Image.Image) -> Image.Image:
    """Any decoded image as displayed, in sRGB RGB(A) (thumbnails of the review page)."""
    src = read_source(img)
    alpha = img.getchannel("A") if "A" in img.getbands() else None
    if src.icc is None:
        out = img.convert("RGB")
    else:
        mode = {"rgb": "RGB", "gray": "L", "cmyk": "CMYK"}[src.space]
        base = img if img.mode == mode else img.convert(mode)
        out = ImageCms.applyTransform(base, transform(src.icc, None, mode, "RGB", "relative"))
    if alpha is not None:
        out.putalpha(alpha)
    return out


# ------------------------------------------------------------------ the fallback CMYK profile

FALLBACK_CMYK_NAME = "outpaint fallback CMYK (coated offset, FOGRA39-like)"

# Solids and overprints of coated offset print on white paper (ISO 12647-2 / FOGRA39 aims,
# CIELAB D50): the 8 Neugebauer primaries without black. Black's are derived (below).
_PRIMARIES_LAB = {
    (0, 0, 0): (95.0, 0.0, -2.0),  # paper
    (1, 0, 0): (55.0, -37.0, -50.0),  # C
    (0, 1, 0): (48.0, 74.0, -3.0),  # M
    (0, 0, 1): (89.0, -5.0, 93.0),  # Y
    (1, 1, 0): (24.0, 22.0, -46.0),  # C+M (blue)
    (1, 0, 1): (50.0, -65.0, 27.0),  # C+Y (green)
    (0, 1, 1): (47.0, 68.0, 48.0),  # M+Y (red)
    (1, 1, 1): (23.0, 0.0, 0.0),  # C+M+Y
}
_K_LAB = (16.0, 0.0, 0.0)
_DOT_GAIN = 0.14  # tone value increase at 50 %
_YULE_NIELSEN = 2.0
_GRID = 9
_D50 = np.array([0.9642, 1.0, 0.8249])


def _lab_to_xyz(lab: np.ndarray) -> np.ndarray:
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    fy = (L + 16) / 116
    f = np.stack([fy + a / 500, fy, fy - b / 200], -1)
    e = 6 / 29
    return np.where(f > e, f**3, 3 * e * e * (f - 4 / 29)) * _D50


def _xyz_to_lab(xyz: np.ndarray) -> np.ndarray:
    t = xyz / _D50
    e = 6 / 29
    f = np.where(t > e**3, np.cbrt(t), t / (3 * e * e) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def _cmyk_lab_grid(n: int) -> np.ndarray:
    """Media-relative CIELAB for an n^4 grid of CMYK tone values: Yule-Nielsen-modified
    Neugebauer over 16 primaries (a black overprint multiplies the reflectance by black's
    own relative to paper), tone values raised by a parabolic dot gain."""
    t = np.linspace(0.0, 1.0, n)
    gain = t + 4 * _DOT_GAIN * t * (1 - t)
    c, m, y, k = np.meshgrid(gain, gain, gain, gain, indexing="ij")
    paper = _lab_to_xyz(np.array(_PRIMARIES_LAB[(0, 0, 0)]))
    k_ratio = _lab_to_xyz(np.array(_K_LAB)) / paper
    acc = np.zeros(c.shape + (3,))
    for (pc, pm, py), lab in _PRIMARIES_LAB.items():
        xyz = _lab_to_xyz(np.array(lab))
        for pk in (0, 1):
            w = (
                (c if pc else 1 - c)
                * (m if pm else 1 - m)
                * (y if py else 1 - y)
                * (k if pk else 1 - k)
            )
            refl = xyz * (k_ratio if pk else 1.0)
            acc += w[..., None] * (refl ** (1 / _YULE_NIELSEN))
    xyz = acc**_YULE_NIELSEN
    return _xyz_to_lab(xyz / paper * _D50)  # media-relative: paper is the PCS white


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _tag_text(text: str) -> bytes:
    return b"text" + b"\0" * 4 + text.encode("ascii") + b"\0"


def _tag_desc(text: str) -> bytes:
    raw = text.encode("ascii") + b"\0"
    return (
        b"desc"
        + b"\0" * 4
        + struct.pack(">I", len(raw))
        + raw
        + struct.pack(">II", 0, 0)
        + struct.pack(">HB", 0, 0)
        + b"\0" * 67
    )


def _tag_xyz(xyz) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in xyz)


def _tag_lut16_cmyk(n: int) -> bytes:
    lab = _cmyk_lab_grid(n).reshape(-1, 3)
    enc = np.empty_like(lab)
    enc[:, 0] = np.clip(lab[:, 0], 0, 100) / 100 * 0xFF00  # ICC v2 16-bit Lab encoding
    enc[:, 1:] = (np.clip(lab[:, 1:], -128, 127.99) + 128) * 256
    clut = np.round(enc).astype(">u2").tobytes()
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    curve = struct.pack(">HH", 0, 0xFFFF)
    return (
        b"mft2"
        + b"\0" * 4
        + struct.pack(">BBBB", 4, 3, n, 0)
        + identity
        + struct.pack(">HH", 2, 2)
        + curve * 4
        + clut
        + curve * 3
    )


def _icc(device_class: bytes, space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v2.1 profile from its tags (header fields fixed, so the bytes are stable)."""
    body, table, offset = b"", [], 128 + 4 + 12 * len(tags)
    for sig, data in tags.items():
        data += b"\0" * (-len(data) % 4)
        table.append(struct.pack(">4sII", sig, offset + len(body), len(data)))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, device_class, space, pcs)
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 4
        + struct.pack(">I", 0)
        + b"\0" * 8
        + b"\0" * 8
        + struct.pack(">I", 0)
        + b"".join(_s15(v) for v in _D50)
        + b"\0" * 4
        + b"\0" * 16
        + b"\0" * 28
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + body


@lru_cache(maxsize=1)
def fallback_cmyk() -> bytes:
    """The one profile for CMYK sources that carry none: built here, deterministically
    (no file to ship or find), from coated-offset aims; see ``_PRIMARIES_LAB``."""
    paper = _lab_to_xyz(np.array(_PRIMARIES_LAB[(0, 0, 0)]))
    return _icc(
        b"prtr",
        b"CMYK",
        b"Lab ",
        {
            b"desc": _tag_desc(FALLBACK_CMYK_NAME),
            b"cprt": _tag_text("No copyright: generated by outpaint (pipeline/io/color.py)"),
            b"wtpt": _tag_xyz(paper),
            b"A2B0": _tag_lut16_cmyk(_GRID),
        },
    )
