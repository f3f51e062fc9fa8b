"""Decode sources to arrays and encode outputs; no storage access here.

Decoding applies the EXIF orientation, reads the source's colour profile and rights
metadata, converts any mode to 8-bit (16-bit scaled, not clipped; palettes expanded;
CMYK through its ICC profile; alpha kept aside), and checks the declared size against
the source-pixel limit before any pixel is decoded. A JPEG that will be scaled down by
2x or more decodes at reduced size first (``Image.draft``: libjpeg's DCT scaling).
Encoding embeds the output's profile, EXIF and XMP.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from . import color, provenance
from .headers import SUPPORTED_FORMATS, SourceLimits


class ImageError(Exception):
    """A row-level image failure: ``code`` is one of docs/contracts.md's image codes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Decoded:
    pixels: np.ndarray  # H x W x C uint8: C = 3 (RGB), or 1 (grey with a grey profile)
    alpha: np.ndarray | None  # H x W uint8, None when the source is opaque
    format: str
    size: tuple[int, int] = (0, 0)  # full (upright) size, before any draft reduction
    color: color.SourceColor | None = None  # what the stored values mean
    rights: provenance.Rights | None = None  # metadata carried to the output

    @property
    def rgb(self) -> np.ndarray:
        """3-channel view (grey repeated)."""
        return self.pixels if self.pixels.shape[2] == 3 else np.repeat(self.pixels, 3, axis=2)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype in (np.uint16, np.int32, np.int64, np.uint32):
        hi = 65535 if arr.max(initial=0) > 255 else 255
        return (np.clip(arr, 0, hi).astype(np.float32) * (255.0 / hi) + 0.5).astype(np.uint8)
    if arr.dtype.kind == "f":
        return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    return arr.astype(np.uint8)


def _split(img: Image.Image, src: color.SourceColor) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode -> (H x W x C uint8 in the source's stored space, alpha or None).
    Grey stays one channel only where a grey profile gives it meaning; CMYK is rendered
    to sRGB through its profile here (its values mean nothing to a screen)."""
    mode = img.mode
    alpha = None
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        a = np.asarray(img.getchannel("A"))
        alpha = None if a.min() == 255 else np.ascontiguousarray(a)
        img = img.convert("L" if mode in ("LA", "La") else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F", "1", "L"):
        grey = np.asarray(img) if mode == "L" else _to_uint8(np.asarray(img))
        if src.space == "gray":
            return grey[:, :, None], alpha
        return np.repeat(grey[:, :, None], 3, axis=2), alpha
    if mode == "CMYK":
        srgb = ImageCms.applyTransform(
            img, color.transform(src.icc, None, "CMYK", "RGB", "relative")
        )
        return np.asarray(srgb), alpha
    if mode != "RGB":
        img = img.convert("RGB")  # YCbCr, LAB, HSV
    return np.asarray(img), alpha


def draft_size(w0: int, h0: int, target: tuple[int, int] | None) -> tuple[int, int] | None:
    """The size to ask libjpeg for when the upright ``w0 x h0`` source ends at ``target``:
    at least twice the target on each side, so the final Lanczos still reduces by 2x or
    more (outputs stay within a level of a full decode); None when not worth it."""
    if target is None or target[0] * 2 > w0 or target[1] * 2 > h0:
        return None
    return target[0] * 2, target[1] * 2


def _check_metadata_sizes(img: Image.Image, limits: SourceLimits, what: str) -> None:
    """An embedded ICC profile or XMP packet over its cap fails the row: a source may
    not make its row parse megabytes of profile or XML."""
    icc = img.info.get("icc_profile") or b""
    if len(icc) > limits.max_icc_bytes:
        raise ImageError(
            "image_metadata_too_large",
            f"{what} embeds a {len(icc):,}-byte ICC profile, over "
            f"limits.max_icc_bytes = {limits.max_icc_bytes:,}; re-export it with a standard profile",
        )
    xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
    if len(xmp) > limits.max_xmp_bytes:
        raise ImageError(
            "image_metadata_too_large",
            f"{what} embeds {len(xmp):,} bytes of XMP, over "
            f"limits.max_xmp_bytes = {limits.max_xmp_bytes:,}; strip its metadata",
        )


def decode(
    data: bytes,
    limits: SourceLimits,
    what: str = "image",
    *,
    target: tuple[int, int] | None = None,
    keep_gps: bool = False,
    metadata: bool = True,
) -> Decoded:
    """Bytes -> Decoded; raises ``ImageError`` with the row's code and message.

    ``target``: the upright size the pixels will be resized to (a JPEG may then decode
    at reduced size). ``keep_gps``: keep the GPS block in the carried EXIF.
    ``metadata``: read the rights metadata to carry (sources; not our own outputs)."""
    if len(data) == 0:
        raise ImageError("image_unreadable", f"{what} is empty (0 bytes); re-export the image")
    if len(data) > limits.max_source_bytes:
        raise ImageError(
            "image_too_large",
            f"{what} is {len(data):,} bytes, over limits.max_source_bytes = "
            f"{limits.max_source_bytes:,}",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > limits.max_source_pixels:  # from the header: nothing decoded yet
                raise ImageError(
                    "image_too_large",
                    f"{what} is {w}×{h} = {w * h:,} px, over "
                    f"limits.max_source_pixels = {limits.max_source_pixels:,}",
                )
            fmt = img.format or ""
            if fmt not in SUPPORTED_FORMATS:
                raise ImageError(
                    "unsupported_image",
                    f"{what} is {fmt or 'an unknown format'}, which is not supported",
                )
            img.seek(0)  # animated GIF/WebP/APNG: the first frame
            orientation = _orientation(img)
            upright = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
            want = draft_size(*upright, target)
            if want is not None and fmt == "JPEG":
                img.draft(img.mode, want[::-1] if orientation in (5, 6, 7, 8) else want)
            img.load()
            _check_metadata_sizes(img, limits, what)
            src = color.read_source(img)
            rights = provenance.read_rights(img, keep_gps) if metadata else None
            img = ImageOps.exif_transpose(img)
            pixels, alpha = _split(img, src)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("image_too_large", f"{what}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(
            "image_unreadable",
            f"{what} is not a readable image (corrupt, truncated, or not an image file)",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(
            "image_unreadable", f"{what} could not be decoded ({type(e).__name__}: {e})"
        ) from None
    return Decoded(pixels=pixels, alpha=alpha, format=fmt, size=upright, color=src, rights=rights)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - malformed EXIF: exif_transpose ignores it too
        return 1


def resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    """High-quality resize (Lanczos; Pillow's reducing_gap keeps big downscales fast) of
    an H x W, H x W x 1 or H x W x 3 array."""
    if arr.shape[1] == w and arr.shape[0] == h:
        return arr
    one = arr.ndim == 3 and arr.shape[2] == 1
    out = np.asarray(
        Image.fromarray(arr[:, :, 0] if one else arr).resize(
            (w, h), Image.LANCZOS, reducing_gap=3.0
        )
    )
    return out[:, :, None] if one else out


def encode(
    pixels: np.ndarray,
    fmt: str,
    alpha: np.ndarray | None = None,
    *,
    jpeg_quality: int = 95,
    webp_quality: int = 95,
    webp_lossless: bool = False,
    png_compress_level: int = 6,
    icc: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | None = None,
) -> bytes:
    """RGB or grey (H x W x 1) pixels (+ alpha for png/webp) -> encoded bytes, with the
    colour profile, EXIF and XMP packet given (PNG: iCCP, eXIf, iTXt XML:com.adobe.xmp;
    JPEG: APP2, APP1; WebP: ICCP, EXIF, XMP chunks)."""
    grey = pixels.ndim == 3 and pixels.shape[2] == 1
    img = Image.fromarray(pixels[:, :, 0] if grey else pixels, "L" if grey else "RGB")
    if alpha is not None and fmt in ("png", "webp"):
        img.putalpha(Image.fromarray(alpha, "L"))
    extra = {k: v for k, v in (("icc_profile", icc), ("exif", exif)) if v}
    buf = io.BytesIO()
    if fmt == "png":
        info = None
        if xmp:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"), zip=False)
        img.save(buf, format="PNG", compress_level=png_compress_level, pnginfo=info, **extra)
    elif fmt == "jpeg":
        # 4:4:4 at high quality: chroma subsampling would smear the seam band
        img.save(
            buf,
            format="JPEG",
            quality=jpeg_quality,
            subsampling=0 if jpeg_quality >= 90 else 2,
            optimize=False,
            **extra,
            **({"xmp": xmp} if xmp else {}),
        )
    elif fmt == "webp":
        img.save(
            buf,
            format="WEBP",
            quality=webp_quality,
            lossless=webp_lossless,
            method=4,
            **extra,
            **({"xmp": xmp} if xmp else {}),
        )
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buf.getvalue()


EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
