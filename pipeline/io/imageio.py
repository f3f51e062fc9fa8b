"""Decode sources to RGB (+ alpha) arrays and encode outputs; no storage access here.

Decoding applies the EXIF orientation, converts any mode to 8-bit RGB (16-bit
scaled, not clipped; CMYK and palettes converted; alpha kept aside), and checks
the declared size against the source-pixel limit before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .headers import SUPPORTED_FORMATS, SourceLimits


class ImageError(Exception):
    """A row-level image failure: ``code`` is one of docs/contracts.md's image codes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Decoded:
    rgb: np.ndarray              # H x W x 3 uint8
    alpha: np.ndarray | None     # H x W uint8, None when the source is opaque
    format: str


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


def _split(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode -> (RGB uint8, alpha uint8 or None)."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        g = _to_uint8(np.asarray(img))
        return np.repeat(g[:, :, None], 3, axis=2), None
    if mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa"):
        arr = np.asarray(img.convert("RGBA"))
        alpha = arr[:, :, 3]
        return np.ascontiguousarray(arr[:, :, :3]), (None if alpha.min() == 255 else np.ascontiguousarray(alpha))
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(img), None


def decode(data: bytes, limits: SourceLimits, what: str = "image") -> Decoded:
    """Bytes -> Decoded; raises ``ImageError`` with the row's code and message."""
    if len(data) == 0:
        raise ImageError("image_unreadable", f"{what} is empty (0 bytes); re-export the image")
    if len(data) > limits.max_source_bytes:
        raise ImageError("image_too_large", f"{what} is {len(data):,} bytes, over limits.max_source_bytes = "
                                            f"{limits.max_source_bytes:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > limits.max_source_pixels:  # from the header: nothing decoded yet
                raise ImageError("image_too_large", f"{what} is {w}×{h} = {w * h:,} px, over "
                                                    f"limits.max_source_pixels = {limits.max_source_pixels:,}")
            fmt = img.format or ""
            if fmt not in SUPPORTED_FORMATS:
                raise ImageError("unsupported_image", f"{what} is {fmt or 'an unknown format'}, which is not supported")
            img.seek(0)  # animated GIF/WebP/APNG: the first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb, alpha = _split(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("image_too_large", f"{what}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError("image_unreadable", f"{what} is not a readable image (corrupt, truncated, "
                                             "or not an image file)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError("image_unreadable", f"{what} could not be decoded ({type(e).__name__}: {e})") from None
    return Decoded(rgb=rgb, alpha=alpha, format=fmt)


def resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    """High-quality resize (Lanczos; Pillow's reducing_gap keeps big downscales fast)."""
    if arr.shape[1] == w and arr.shape[0] == h:
        return arr
    img = Image.fromarray(arr)
    return np.asarray(img.resize((w, h), Image.LANCZOS, reducing_gap=3.0))


def encode(rgb: np.ndarray, fmt: str, alpha: np.ndarray | None = None, *, jpeg_quality: int = 95,
           webp_quality: int = 95, webp_lossless: bool = False, png_compress_level: int = 6) -> bytes:
    """RGB (+ alpha for png/webp) -> encoded bytes."""
    img = Image.fromarray(rgb, "RGB")
    if alpha is not None and fmt in ("png", "webp"):
        img = Image.merge("RGBA", (*img.split(), Image.fromarray(alpha, "L")))
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=png_compress_level)
    elif fmt == "jpeg":
        # 4:4:4 at high quality: chroma subsampling would smear the seam band
        img.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0 if jpeg_quality >= 90 else 2,
                 optimize=False)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=webp_quality, lossless=webp_lossless, method=4)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buf.getvalue()


EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
