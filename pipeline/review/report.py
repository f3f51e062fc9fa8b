"""``report.html``: the review page of an output (written by ``run``, rebuilt by
``outpaint report``). One self-contained file that opens offline: summary numbers, a
before/after gallery of a sample (the two at the same scale, the original area outlined
on the after image; a click opens the full-resolution output, loaded only then), the
rows farthest from natural by seam and texture score, rows with fill leakage, a
sortable table of the rows' metrics, and every rejected or failed row with its code and
message. Thumbnails are small JPEGs embedded as data URIs, never the full images.

Three steps: choose the rows to show (columnar: only they become Python objects), fetch
their pictures (``thumbnails``), render ``templates/report.html`` with Jinja2. Jinja2
rather than ``string.Template``: it escapes every value for HTML by default (the
manifest's strings are untrusted), so no call site can forget to.
"""

from __future__ import annotations

import secrets as tokens  # the page nonce (not ..secrets, the credentials)
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..common import codes, secrets
from ..common.box import Box
from ..config import InputConfig
from ..config.licenses import License
from ..io.outputs import IMAGES, OutputStore, conform
from ..plan.rows import derive_seeds
from .score import REGION_COLUMNS
from .thumbnails import THUMB, Pictures

# what the page shows; nothing else is read (the metadata can hold millions of rows)
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.string()),
        ("output_uri", pa.string()),
        ("status", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("canvas_width", pa.int64()),
        ("canvas_height", pa.int64()),
        ("mode", pa.string()),
        ("generated", pa.bool_()),
        ("seam_score", pa.float64()),
        ("texture_score", pa.float64()),
        ("quality_distance", pa.float64()),
        ("quality_defect", pa.string()),
        *[(c, pa.int64()) for c in REGION_COLUMNS],
        ("review_status", pa.string()),
        ("fill_color", pa.string()),
        ("fill_leakage", pa.float64()),
        ("fill_leak_flag", pa.bool_()),
        ("scale", pa.float64()),
        ("source_width", pa.int64()),
        ("source_height", pa.int64()),
        ("offset_x", pa.int64()),
        ("offset_y", pa.int64()),
        ("visible_x0", pa.int64()),
        ("visible_y0", pa.int64()),
        ("visible_x1", pa.int64()),
        ("visible_y1", pa.int64()),
        ("request_hash", pa.string()),
        ("prompt", pa.string()),
        ("route", pa.string()),
    ]
)
TABLE_ROWS = 5000  # the metrics table: the rows farthest from natural first, at most this many


TABLE_ROWS = 5000  # the metrics table: the rows farthest from natural first, at most this many
LINK_SCHEMES = (
    "http",
    "https",
    "file",
    "s3",
    "gs",
    "gcs",
    "az",
    "abfs",
)  # never javascript:, data: ...


def _input(options: dict | None, run: dict | None):
    """Where the sources are read from: the run's own input settings (http ones too)."""
    section = dict(((run or {}).get("config") or {}).get("input") or {})
    section.update(manifest=section.get("manifest") or "-")
    if options is not None:
        section["storage_options"] = options
    try:
        return InputConfig.model_validate(section)
    except Exception:  # noqa: BLE001 - an older run.json: its storage options are enough
        return InputConfig(
            manifest="-", storage_options=options or section.get("storage_options") or {}
        )


def summarise(meta: pa.Table) -> dict:
    """Counts per status and code, output megapixels: columnar (millions of rows)."""
    ok = pc.fill_null(pc.equal(meta.column("status"), codes.OK), False)
    counted = codes.Counts.of(meta)
    area = pc.multiply(
        meta.column("canvas_width").cast(pa.float64()),
        meta.column("canvas_height").cast(pa.float64()),
    )
    mp = (pc.sum(pc.filter(area, ok)).as_py() or 0.0) / 1e6
    routes = pc.value_counts(pc.filter(meta.column("route"), ok).drop_null()).to_pylist()
    return {
        "rows": meta.num_rows,
        "by_status": counted.statuses(),
        "by_code": counted.codes_by_count(),
        "by_route": {r["values"]: r["counts"] for r in sorted(routes, key=lambda r: r["values"])},
        "output_megapixels": round(mp, 3),
    }


def _rows(meta: pa.Table, mask=None, order=None, limit: int | None = None) -> list[dict]:
    """Only the selected rows become Python dicts."""
    t = meta.filter(mask) if mask is not None else meta
    if order is not None:
        t = t.take(pc.sort_indices(t, sort_keys=order))
    return (t.slice(0, limit) if limit is not None else t).to_pylist()


def _pick_sample(meta: pa.Table, n: int) -> list[dict]:
    """A stable sample: the same rows on every rebuild (ordered by a hash of the id)."""
    cand = meta.filter(
        pc.fill_null(
            pc.and_(pc.equal(meta.column("status"), codes.OK), meta.column("generated")), False
        )
    )
    if cand.num_rows == 0 or n == 0:
        return []
    # a vectorised hash of the id (the per-row seed function, fixed seed): stable, no per-row Python
    keys = derive_seeds(0x5EED, cand.column("id").combine_chunks())
    return cand.take(pa.array(np.argsort(keys, kind="stable")[:n])).to_pylist()


def _num(v, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def safe_link(uri: str | None) -> str:
    """A URI as a link the page may hold: a relative path or one of ``LINK_SCHEMES``;
    anything else (``javascript:``, ``data:``) becomes no link."""
    if not uri:
        return ""
    scheme = urlsplit(uri).scheme.lower()
    return uri if scheme in LINK_SCHEMES or (not scheme and ":" not in uri.split("/")[0]) else ""


@dataclass
class Selection:
    """The rows the page shows, as Python objects; everything else stays in Arrow."""

    sample: list[dict]
    worst: list[dict]
    leaks: list[dict]
    metrics: list[dict]
    measured: int
    bad: list[dict]


def choose(meta: pa.Table, sample: int, worst: int) -> Selection:
    ok = pc.fill_null(pc.equal(meta.column("status"), codes.OK), False)
    measured = pc.and_(ok, pc.is_valid(meta.column("quality_distance")))
    by_distance = [("quality_distance", "descending"), ("id", "ascending")]
    metric_columns = [
        "id",
        "canvas_width",
        "canvas_height",
        "mode",
        "route",
        "seam_score",
        "texture_score",
        "quality_distance",
        "quality_defect",
        "review_status",
        "fill_leakage",
    ]
    return Selection(
        sample=_pick_sample(meta, sample),
        worst=_rows(meta, measured, by_distance, worst),
        leaks=_rows(meta, pc.fill_null(meta.column("fill_leak_flag"), False), limit=200),
        metrics=_rows(meta.select(metric_columns), measured, by_distance, TABLE_ROWS),
        measured=pc.sum(measured.cast(pa.int64())).as_py() or 0,
        bad=_rows(meta, pc.invert(ok), [("error_code", "ascending"), ("id", "ascending")]),
    )


class Cards:
    """A shown row as the template's card: its numbers, thumbnails and links."""

    def __init__(self, store: OutputStore, pictures: Pictures):
        self.images_prefix = store.folder.uri_of(IMAGES) + "/"
        self.pictures = pictures

    def link(self, uri: str | None) -> str:
        """The output as the page can open it: relative to report.html when under the same
        output (works offline, and wherever the folder is served), else the URI."""
        if uri and uri.startswith(self.images_prefix):
            return safe_link(f"{IMAGES}/{uri[len(self.images_prefix) :]}")
        return safe_link(uri)

    def __call__(self, r: dict, note: str = "") -> dict:
        W, H = r["canvas_width"], r["canvas_height"]
        k = THUMB / max(W, H)  # one scale for both images: the after's longer side is THUMB px
        before, after, source = self.pictures.of(r)
        scale = (r.get("scale") or 1) * k
        card = {
            "id": r["id"],
            "canvas_width": W,
            "canvas_height": H,
            "mode": str(r.get("mode")),
            "route": r.get("route") or "",
            "prompt": (r.get("prompt") or "")[:500],
            "note": note,
            "seam": _num(r.get("seam_score")),
            "texture": _num(r.get("texture_score")),
            "distance": _num(r.get("quality_distance")),
            "defect": r.get("quality_defect") or "",
            "review": r.get("review_status") or "",
            "before": before,
            "after": after,
            "before_width": max(1, round((r.get("source_width") or 0) * scale)),
            "before_height": max(1, round((r.get("source_height") or 0) * scale)),
            "after_width": round(W * k),
            "after_height": round(H * k),
        }
        if after:
            box = Box(
                *(r.get(c) or 0 for c in ("visible_x0", "visible_y0", "visible_x1", "visible_y1"))
            )
            card["box"] = _style(box, W, H)
            card["region"] = ""
            region = [r.get(c) for c in REGION_COLUMNS]
            if all(v is not None for v in region):  # where the defect that failed it was
                card["region"] = _style(Box(*(int(v) for v in region)), W, H)
            card["full"] = self.link(r.get("output_uri"))
            card["slider"] = self.pictures.before_file(r, source) or ""
        return card


def _style(box: Box, W: int, H: int) -> str:
    """A box on the canvas as an outline's CSS position (numbers only)."""
    return (
        f"left:{100 * box.x0 / W:.2f}%;top:{100 * box.y0 / H:.2f}%;"
        f"width:{100 * box.width / W:.2f}%;height:{100 * box.height / H:.2f}%"
    )


def _leak_note(r: dict) -> str:
    share = _num(r.get("fill_leakage"), "{:.1%}")
    return f" · fill {r.get('fill_color')} left in {share} of the generated area"


def _timing(run: dict | None) -> list[str]:
    if not run:
        return []
    written, work_s = run.get("images_written", 0), run.get("work_s")
    skipped = (run.get("counts") or {}).get("skipped", 0)
    if written and work_s:
        speed = (
            f"{written:,} images in {work_s:,.1f} s of image work: {written / work_s:,.2f} images/s"
        )
    else:
        speed = f"no images written this run ({skipped:,} rows already done)"
    lines = [f"wall time: {run.get('wall_s', 0):,.1f} s", speed]
    if run.get("model_license"):
        lines.append(License(**run["model_license"]).line())
    return lines


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.review", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def build(
    store: OutputStore, source_options: dict | None = None, sample: int = 24, worst: int = 12
) -> tuple[str, dict]:
    meta = store.metadata.read(SCHEMA.names)
    if meta is None:
        raise FileNotFoundError(f"{store.uri}: no metadata/ to report on")
    meta = conform(meta, SCHEMA)  # metadata of older versions may lack a column
    summary = summarise(meta)
    try:
        run = store.folder.read_json("run.json")
    except Exception:  # noqa: BLE001 - a report without run.json still works
        run = None
    chosen = choose(meta, sample, worst)
    pictures = Pictures(
        store.folder,
        _input(source_options, run),
        InputConfig(manifest="-", storage_options=store.options),
    )
    cards = Cards(store, pictures)
    # thumbnails are I/O and decoding: read each shown row once, on a few threads
    shown = {r["id"]: r for r in chosen.sample + chosen.worst + chosen.leaks}
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(pictures.of, shown.values()))
        sample_cards = list(pool.map(cards, chosen.sample))
        worst_cards = list(pool.map(cards, chosen.worst))
        leak_cards = list(pool.map(lambda r: cards(r, _leak_note(r)), chosen.leaks))
    metrics = [
        {
            "id": r["id"],
            "canvas_width": r["canvas_width"],
            "canvas_height": r["canvas_height"],
            "mode": str(r["mode"]),
            "route": r["route"] or "",
            "seam": _num(r["seam_score"]),
            "texture": _num(r["texture_score"]),
            "distance": _num(r["quality_distance"]),
            "defect": r["quality_defect"] or "",
            "review": r["review_status"] or "",
            "leakage": _num(r["fill_leakage"], "{:.3f}"),
        }
        for r in chosen.metrics
    ]
    if chosen.measured <= TABLE_ROWS:
        table_note = f"all {chosen.measured:,} generated rows"
    else:
        table_note = (
            f"the {TABLE_ROWS:,} of {chosen.measured:,} generated rows farthest from natural"
        )
    page = (
        _environment()
        .get_template("report.html")
        .render(
            nonce=tokens.token_urlsafe(16),
            output=store.uri,
            summary=summary,
            generated_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            timing=_timing(run),
            run_id=str(run.get("run_id")) if run else None,
            sample=sample_cards,
            worst=worst_cards,
            leaks=leak_cards,
            metrics=metrics,
            table_note=table_note,
            bad=chosen.bad,
        )
    )
    return page, summary


def write(
    store: OutputStore, source_options: dict | None = None, sample: int = 24
) -> tuple[str, dict]:
    page, summary = build(store, source_options, sample=sample)
    page = secrets.scrub(
        page
    )  # a credential that reached a message or a URI never reaches the page
    return store.folder.put("report.html", page.encode()), summary
