"""``outpaint manifest``: a manifest from a folder, glob or object-storage prefix of
images, one row per image and target, with no code to write.

Ids come from each image's path relative to its source (sanitised to the id
alphabet, ``/`` -> ``__``), so they are stable across reruns and name the outputs
recognisably; a collision (two paths that sanitise alike) gets a short digest of
the original path. Sizes are read from headers in parallel (``image_width`` and
``image_height``: planning then needs no image access); an unreadable image still
gets its rows, so the run records why it failed.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from ..common import storage
from ..config import ConfigError, InputConfig, LimitsConfig, parse_ratio
from . import headers
from .analyze import analyze_images, with_analysis
from .backdrop import Tolerances
from .netguard import NetPolicy, SourceRefused
from .sources import http_header

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_ID = 200


@dataclass
class Target:
    """One canvas per image: an aspect ratio ``W:H`` or an explicit size."""

    aspect_ratio: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def tag(self) -> str:
        if self.aspect_ratio is not None:
            return self.aspect_ratio.replace(":", "x").replace(".", "_")
        return f"{self.width}x{self.height}"


@dataclass
class Found:
    uris: list[str] = field(default_factory=list)
    rel: list[str] = field(default_factory=list)


def find_images(
    sources: list[str], storage_options: dict | None = None, policy: NetPolicy | None = None
) -> Found:
    """Every image under each source (a folder or prefix, recursively; a glob; a file),
    in sorted order, with its path relative to the source. An http(s) source's host is
    checked against the network ``policy`` before anything is read from it."""
    out = Found()
    for src in sources:
        if src.startswith(("http://", "https://")):
            _check_host(src, policy or NetPolicy())
        fs, path = storage.filesystem(src, storage_options)
        if any(c in path for c in "*?["):
            base = path[: min(path.index(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
            paths = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            base, paths = path.rstrip("/"), fs.find(path)
        elif fs.exists(path):
            base, paths = posixpath.dirname(path), [path]
        else:
            raise ConfigError(f"{src}: no such folder, file or glob match")
        paths = sorted(
            p
            for p in paths
            if p.lower().endswith(IMAGE_EXTENSIONS) and not posixpath.basename(p).startswith(".")
        )
        out.uris += [storage.unstrip(fs, p) for p in paths]
        out.rel += [posixpath.relpath(p, base) if base else p for p in paths]
    if not out.uris:
        raise ConfigError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {', '.join(sources)}")
    return out


def _check_host(url: str, policy: NetPolicy) -> None:
    parts = urlsplit(url)
    try:
        policy.addresses(
            parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        )
    except SourceRefused as e:
        raise ConfigError(f"{url}: refused: {e}") from None
    except OSError as e:
        raise ConfigError(f"{url}: {e}") from None


def ids_from_paths(rel: list[str]) -> list[str]:
    """Stable, unique, valid ids from relative paths (extension dropped)."""
    base = []
    for r in rel:
        stem = posixpath.splitext(r)[0].replace("/", "__")
        s = _UNSAFE.sub("-", stem).lstrip(".") or "image"
        base.append(s[: MAX_ID - 20])
    counts: dict[str, int] = {}
    for b in base:
        counts[b] = counts.get(b, 0) + 1
    return [
        b if counts[b] == 1 else f"{b}-{hashlib.sha1(r.encode()).hexdigest()[:8]}"
        for b, r in zip(base, rel)
    ]


def build(
    sources: list[str],
    targets: list[Target],
    *,
    mode: str | None = None,
    output_format: str | None = None,
    storage_options: dict | None = None,
    threads: int = 32,
    http: dict | None = None,
    analyze: Tolerances | None = None,
) -> pa.Table:
    """The manifest table: one row per image and target. ``http``: ``input.http`` settings
    for http(s) sources (what they may reach: ``allow_private_networks``, ``allowed_hosts``).
    ``analyze``: also decode each image once for the product-photo columns (io.analyze)."""
    if not targets:
        raise ConfigError(
            "give at least one target: --aspect-ratio W:H (repeatable) or --width W --height H"
        )
    for t in targets:
        if t.aspect_ratio is not None:
            try:
                parse_ratio(t.aspect_ratio)
            except ValueError as e:
                raise ConfigError(f"--aspect-ratio: {e}") from None
    source_cfg = InputConfig(manifest="-", storage_options=storage_options or {}, http=http or {})
    found = find_images(sources, storage_options, NetPolicy.of(source_cfg.http))
    ids = ids_from_paths(found.rel)
    limits = headers.SourceLimits(1 << 40, 1 << 40)  # sizes only: the run applies the real limits

    def probe_http(uri: str, want: bool):
        return http_header(uri, source_cfg, limits, want)

    wants = np.ones(len(found.uris), bool)
    w, h, code, _, _ = headers.probe_many(
        found.uris, None, wants, storage_options or {}, limits, threads, http=probe_http
    )
    ok = code == None  # noqa: E711 - elementwise
    n, k = len(ids), len(targets)
    many = k > 1
    cols: dict[str, list] = {
        "id": [f"{i}-{t.tag}" if many else i for i in ids for t in targets],
        "image": [u for u in found.uris for _ in targets],
        "image_width": [int(x) if good else None for x, good in zip(w, ok) for _ in targets],
        "image_height": [int(x) if good else None for x, good in zip(h, ok) for _ in targets],
        "aspect_ratio": [t.aspect_ratio for _ in range(n) for t in targets],
        "width": [t.width for _ in range(n) for t in targets],
        "height": [t.height for _ in range(n) for t in targets],
    }
    if mode:
        cols["mode"] = [mode] * (n * k)
    if output_format:
        cols["output_format"] = ["jpeg" if output_format == "jpg" else output_format] * (n * k)
    types = {
        "image_width": pa.int64(),
        "image_height": pa.int64(),
        "width": pa.int64(),
        "height": pa.int64(),
        "aspect_ratio": pa.string(),
    }
    table = pa.table({c: pa.array(v, types.get(c, pa.string())) for c, v in cols.items()})
    if analyze is not None:
        # the run's default caps: a decode here is as exposed as the run's
        caps = headers.SourceLimits.of(LimitsConfig())
        found_cols = analyze_images(found.uris, source_cfg, caps, analyze, threads)
        per_row = np.repeat(np.arange(n), k)
        table = with_analysis(table, found_cols.take(pa.array(per_row)))
    drop = [
        c
        for c in ("aspect_ratio", "width", "height")
        if table.column(c).null_count == table.num_rows
    ]
    return table.drop_columns(drop)


def write(table: pa.Table, out: str, storage_options: dict | None = None) -> str:
    """Write by the extension of ``out``: .parquet, .csv, .tsv or .jsonl."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from .manifest import EXTENSIONS

    fmt = EXTENSIONS.get(posixpath.splitext(out.lower())[1])
    if fmt is None:
        raise ConfigError(f"--out {out}: end it in .parquet, .csv, .tsv or .jsonl")
    fs, path = storage.filesystem(out, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path, filesystem=fs)
    elif fmt in ("csv", "tsv"):
        with fs.open(path, "wb") as f:
            pcsv.write_csv(
                table,
                f,
                pcsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ",", quoting_style="needed"),
            )
    else:
        import json

        with fs.open(path, "w") as f:
            for row in table.to_pylist():
                f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    return storage.unstrip(fs, path)


def summary_line(table: pa.Table, out: str, targets: list[Target]) -> str:
    images = table.num_rows // max(len(targets), 1)
    unread = table.column("image_width").null_count // max(len(targets), 1)
    tail = f"; {unread:,} unreadable (the run will record why)" if unread else ""
    return (
        f"manifest: {out}: {table.num_rows:,} rows = {images:,} images x {len(targets)} "
        f"target{'s' if len(targets) > 1 else ''} ({', '.join(t.tag for t in targets)}){tail}"
    )
