"""Source image sizes from headers only (no pixel decode), in parallel.

Pillow's ``Image.open`` parses the header and stops; with a small fsspec block size
only the first block(s) of a remote object are fetched. The size reported is the
displayed size: EXIF orientations 5-8 swap width and height, as the loader will.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..common import storage

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM"})
HEADER_BLOCK = 64 * 1024
_ORIENTATION_TAG = 0x0112
# ISO-BMFF brands Pillow cannot decode here: say "unsupported", not "corrupt"
_UNSUPPORTED_BRANDS = (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis")


@dataclass
class Header:
    width: int = 0
    height: int = 0
    format: str = ""
    nbytes: int = 0
    code: str | None = None
    message: str | None = None
    identity: str | None = None


@dataclass(frozen=True)
class SourceLimits:
    max_source_pixels: int
    max_source_bytes: int
    max_icc_bytes: int = 1 << 40
    max_xmp_bytes: int = 1 << 40

    @classmethod
    def of(cls, limits) -> SourceLimits:
        """From the config's ``limits`` section."""
        return cls(
            limits.max_source_pixels,
            limits.max_source_bytes,
            limits.max_icc_bytes,
            limits.max_xmp_bytes,
        )


def _describe(uri: str | None) -> str:
    return uri if uri else "image_bytes"


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 when absent or malformed: the loader ignores it too)."""
    if img.format not in ("JPEG", "MPO", "WEBP", "PNG", "TIFF"):
        return 1
    try:
        if img.format == "PNG":
            # getexif() on a PNG decodes the whole image to look for an eXIf chunk after
            # the pixels; one before them (where writers put it) is in info
            exif = Image.Exif()
            if img.info.get("exif"):
                exif.load(img.info["exif"])
        else:
            exif = img.getexif()
        return int(exif.get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - malformed EXIF: the loader will ignore it too
        return 1


def _open(fileobj, what: str, nbytes: int) -> tuple[str, int, int, int] | Header:
    """(format, width, height, orientation) from the header, or the row's ``Header`` with its code."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fileobj)
            return img.format or "", *img.size, _orientation(img)
    except Image.DecompressionBombError:
        why = f"{what} declares a size Pillow refuses to open (decompression bomb guard)"
        return Header(nbytes=nbytes, code="image_too_large", message=why)
    except UnidentifiedImageError:
        why = f"{what} is not a readable image (corrupt, truncated, or not an image file)"
        return Header(nbytes=nbytes, code="image_unreadable", message=why)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        why = f"{what}: the image header could not be read ({type(e).__name__}: {e})"
        return Header(nbytes=nbytes, code="image_unreadable", message=why)


def inspect(fileobj, nbytes: int, uri: str | None, limits: SourceLimits) -> Header:
    """Parse one header from an open binary file object positioned at 0."""
    what = _describe(uri)
    if nbytes == 0:
        return Header(
            code="image_unreadable", message=f"{what} is empty (0 bytes); re-export the image"
        )
    if nbytes > limits.max_source_bytes:
        why = (
            f"{what} is {nbytes:,} bytes, over limits.max_source_bytes = {limits.max_source_bytes:,}; "
            "shrink the file or raise the limit"
        )
        return Header(nbytes=nbytes, code="image_too_large", message=why)
    head = fileobj.read(32)
    fileobj.seek(0)
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _UNSUPPORTED_BRANDS:
        why = f"{what} is HEIF/AVIF ({head[8:12].decode()}), which is not supported; convert it to PNG, JPEG or WebP"
        return Header(nbytes=nbytes, code="unsupported_image", message=why)
    opened = _open(fileobj, what, nbytes)
    if isinstance(opened, Header):
        return opened
    fmt, w, h, orientation = opened
    if fmt not in SUPPORTED_FORMATS:
        why = (
            f"{what} is {fmt or 'an unknown format'}, which is not supported; "
            f"use one of {', '.join(sorted(SUPPORTED_FORMATS))}"
        )
        return Header(
            width=w, height=h, format=fmt, nbytes=nbytes, code="unsupported_image", message=why
        )
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    if w <= 0 or h <= 0:
        return Header(
            nbytes=nbytes, code="image_unreadable", message=f"{what} declares an empty size {w}×{h}"
        )
    if w * h > limits.max_source_pixels:
        why = (
            f"{what} is {w}×{h} = {w * h:,} px, over limits.max_source_pixels = "
            f"{limits.max_source_pixels:,}; downscale the source or raise the limit"
        )
        return Header(
            width=w, height=h, format=fmt, nbytes=nbytes, code="image_too_large", message=why
        )
    return Header(width=w, height=h, format=fmt, nbytes=nbytes)


def identity_of(info: dict) -> str:
    """A string that changes when the object changes: size plus ETag / generation / mtime."""
    parts = [f"size={info.get('size')}"]
    for key in (
        "ETag",
        "etag",
        "md5Hash",
        "generation",
        "VersionId",
        "mtime",
        "LastModified",
        "last_modified",
    ):
        v = info.get(key)
        if v is not None:
            parts.append(f"{key}={v}")
            break
    return ";".join(parts)


def probe(
    uri: str,
    storage_options: dict,
    limits: SourceLimits,
    want_header: bool = True,
    resolve: storage.Resolver | None = None,
) -> Header:
    """Identity (always) and header (if asked) of one source URI."""
    try:
        fs, path = (resolve or storage.Resolver(storage_options))(uri)
        info = storage.retry(fs.info, path)
        if info.get("type") == "directory":
            return Header(
                code="image_not_found", message=f"{uri} is a directory, not an image file"
            )
        ident = identity_of(info)
        if not want_header:
            return Header(nbytes=int(info.get("size") or 0), identity=ident)

        def header():
            with fs.open(path, "rb", block_size=HEADER_BLOCK) as f:
                return inspect(f, int(info.get("size") or 0), uri, limits)

        hd = storage.retry(header)
        hd.identity = ident
        return hd
    except FileNotFoundError:
        return Header(
            code="image_not_found",
            message=f"{uri} does not exist; check the path and input.image_root",
        )
    except IsADirectoryError:
        return Header(code="image_not_found", message=f"{uri} is a directory, not an image file")
    except PermissionError as e:
        return Header(
            code="image_not_found", message=f"{uri} cannot be read: permission denied ({e})"
        )
    except Exception as e:  # noqa: BLE001 - storage still failing after retries: this row only
        return Header(
            code="image_not_found",
            message=f"{uri} could not be read after retries: {type(e).__name__}: {e}",
        )


def probe_bytes(data: bytes, limits: SourceLimits, want_header: bool = True) -> Header:
    ident = "sha256=" + hashlib.sha256(data).hexdigest()
    hd = (
        inspect(io.BytesIO(data), len(data), None, limits)
        if want_header
        else Header(nbytes=len(data))
    )
    hd.identity = ident
    return hd


def probe_many(
    uris,
    blobs,
    want_header,
    storage_options: dict,
    limits: SourceLimits,
    threads: int = 32,
    http=None,
):
    """Probe rows in parallel (I/O bound): ``uris[i]`` or ``blobs[i]``; None = skip.
    ``http(uri, want_header) -> Header`` probes http(s) URIs (``sources.http_header``:
    through the guarded client; without it they are refused, never read unguarded).

    Returns (width, height, code, message, identity) arrays.
    """
    n = len(uris)
    w = np.zeros(n, np.int64)
    h = np.zeros(n, np.int64)
    code = np.full(n, None, dtype=object)
    msg = np.full(n, None, dtype=object)
    ident = np.full(n, None, dtype=object)

    resolve = storage.Resolver(storage_options)

    def one(i):
        if blobs is not None and blobs[i] is not None:
            return i, probe_bytes(blobs[i], limits, bool(want_header[i]))
        if uris[i].startswith(("http://", "https://")):
            if http is None:
                why = f"{uris[i]}: http(s) sources are read only through the guarded client"
                return i, Header(code="image_access_denied", message=why)
            return i, http(uris[i], bool(want_header[i]))
        return i, probe(uris[i], storage_options, limits, bool(want_header[i]), resolve)

    todo = [
        i for i in range(n) if uris[i] is not None or (blobs is not None and blobs[i] is not None)
    ]
    local = all(u is None or storage.is_local(u) for u in uris)
    for i, hd in storage.map_io(one, todo, threads, local):
        w[i], h[i], code[i], msg[i], ident[i] = (
            hd.width,
            hd.height,
            hd.code,
            hd.message,
            hd.identity,
        )
    return w, h, code, msg, ident
