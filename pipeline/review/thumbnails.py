"""The review page's pictures: small true-colour JPEG thumbnails embedded as data URIs,
and the enlarge view's "before" images written beside the page (``report_files/``).
A source or output that cannot be read is a gap in the page, never a failed report."""

from __future__ import annotations

import base64
import io
from threading import Lock

from PIL import Image, ImageOps

from ..common.box import Box
from ..config import InputConfig
from ..io import color, sources
from ..io.folder import OutputFolder

THUMB = 256
BEFORE_PX = (
    1600  # the enlarge view's "before" layer: the visible reference at display size, at most this
)
REPORT_FILES = "report_files"  # beside report.html: what the page loads on demand


def open_srgb(data: bytes, size: int) -> Image.Image:
    """An image as a browser displays it: upright, through its colour profile into sRGB
    (CMYK through its own or the fallback profile), decoded at reduced size where JPEG allows."""
    im = Image.open(io.BytesIO(data))
    im.draft(im.mode, (size, size))  # JPEG: decode at reduced size
    im = ImageOps.exif_transpose(im)
    im = color.to_srgb_image(im).convert("RGB")
    im.thumbnail((size, size))
    return im


def jpeg(im: Image.Image, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail(data: bytes) -> str | None:
    """A data URI of a ``THUMB``-px JPEG, or None."""
    try:
        return "data:image/jpeg;base64," + base64.b64encode(jpeg(open_srgb(data, THUMB))).decode()
    except Exception:  # noqa: BLE001 - a missing or broken image shows as a gap, not a failed report
        return None


def read(uri: str | None, input_cfg: InputConfig) -> bytes | None:
    """One GET (a source over http(s) too), or None."""
    if not uri:
        return None
    try:
        return sources.read(uri, input_cfg)
    except Exception:  # noqa: BLE001 - a gap in the page, never a failed report
        return None


class Pictures:
    """Each shown row's thumbnails, read once (a row shown in two sections too)."""

    def __init__(self, folder: OutputFolder, sources_cfg: InputConfig, outputs_cfg: InputConfig):
        self.folder = folder
        self.sources_cfg = sources_cfg
        self.outputs_cfg = outputs_cfg
        self.existing = {f"{REPORT_FILES}/{name}" for name in folder.names(REPORT_FILES)}
        self._cache: dict[str, tuple[str | None, str | None, bytes]] = {}
        self._lock = Lock()

    def of(self, row: dict) -> tuple[str | None, str | None, bytes]:
        """(before thumbnail, after thumbnail, the source's bytes) of a metadata row."""
        key = row["id"]
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        source = read(row.get("image"), self.sources_cfg) or b""
        output = read(row.get("output_uri"), self.outputs_cfg) or b""
        got = (thumbnail(source), thumbnail(output), source)
        with self._lock:
            self._cache[key] = got
        return got

    def before_file(self, row: dict, source: bytes) -> str | None:
        """The enlarge view's "before": the source as displayed (sRGB), scaled and cropped as
        planned, written once per request (named by its hash) beside the page; its link
        relative to report.html."""
        name = f"{REPORT_FILES}/before-{row['id']}-{(row.get('request_hash') or 'x')[:12]}.jpg"
        if name in self.existing:
            return name
        if not source:
            return None
        try:
            k = min(1.0, BEFORE_PX / max(row["canvas_width"], row["canvas_height"]))
            scale = (row.get("scale") or 1.0) * k
            size = (
                max(1, round(row["source_width"] * scale)),
                max(1, round(row["source_height"] * scale)),
            )
            im = open_srgb(source, max(size)).resize(size, Image.LANCZOS)
            ox, oy = (row.get("offset_x") or 0) * k, (row.get("offset_y") or 0) * k
            box = Box.visible(row)
            crop = (
                round(box.x0 * k - ox),
                round(box.y0 * k - oy),
                round(box.x1 * k - ox),
                round(box.y1 * k - oy),
            )
            self.folder.put(name, jpeg(im.crop(crop), 88))
            return name
        except Exception:  # noqa: BLE001 - no slider for this row rather than no report
            return None
