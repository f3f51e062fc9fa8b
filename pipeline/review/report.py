"""``report.html``: the review page of an output (written by ``run``, rebuilt by
``outpaint report``). One self-contained file that opens offline: summary numbers, a
before/after gallery of a sample (the two at the same scale, the original area outlined
on the after image; a click opens the full-resolution output, loaded only then), the
rows farthest from natural by seam and texture score, rows with fill leakage, a
sortable table of the rows' metrics, and every rejected or failed row with its code and
message. Thumbnails are small JPEGs embedded as data URIs, never the full images.
"""

from __future__ import annotations

import base64
import html
import io
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageOps

from .. import codes, storage
from ..config import InputConfig
from ..io import color, sources
from ..io.outputs import OutputStore, conform
from ..plan.rows import derive_seeds

THUMB = 256
REPORT_FILES = "report_files"  # beside report.html: what the page loads on demand


def _open_srgb(data: bytes, size: int) -> Image.Image:
    """An image as a browser displays it: upright, through its colour profile into sRGB
    (CMYK through its own or the fallback profile), decoded at reduced size where JPEG allows."""
    im = Image.open(io.BytesIO(data))
    im.draft(im.mode, (size, size))  # JPEG: decode at reduced size
    im = ImageOps.exif_transpose(im)
    im = color.to_srgb_image(im).convert("RGB")
    im.thumbnail((size, size))
    return im


def _jpeg(im: Image.Image, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _thumb(data: bytes) -> str | None:
    try:
        return "data:image/jpeg;base64," + base64.b64encode(_jpeg(_open_srgb(data, THUMB))).decode()
    except Exception:  # noqa: BLE001 - a missing or broken image shows as a gap, not a failed report
        return None


def _read(uri: str | None, input_cfg) -> bytes | None:
    """One GET (a source over http(s) too), or None: a gap in the page, never a failed report."""
    if not uri:
        return None
    try:
        return sources.read(uri, input_cfg)
    except Exception:  # noqa: BLE001
        return None


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
    counts, by_code = codes.tally(meta.column("status")), codes.tally(meta.column("error_code"))
    area = pc.multiply(
        meta.column("canvas_width").cast(pa.float64()),
        meta.column("canvas_height").cast(pa.float64()),
    )
    mp = (pc.sum(pc.filter(area, ok)).as_py() or 0.0) / 1e6
    return {
        "rows": meta.num_rows,
        "by_status": {k: counts.get(k, 0) for k in (codes.OK, codes.REJECTED, codes.FAILED)},
        "by_code": dict(sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0]))),
        "output_megapixels": round(mp, 3),
    }


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
    ]
)
TABLE_ROWS = 5000  # the metrics table: the rows farthest from natural first, at most this many


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


def _full_link(store: OutputStore, uri: str | None) -> str:
    """The output as the page can open it: relative to report.html when under the same
    output (works offline, and wherever the folder is served), else the URI."""
    if not uri:
        return ""
    prefix = store.uri_of("images") + "/"
    return "images/" + uri[len(prefix) :] if uri.startswith(prefix) else uri


BEFORE_PX = (
    1600  # the enlarge view's "before" layer: the visible reference at display size, at most this
)


def _before_name(r: dict) -> str:
    """Named by the row's request: an unchanged row keeps its file across rebuilds."""
    return f"{REPORT_FILES}/before-{r['id']}-{(r.get('request_hash') or 'x')[:12]}.jpg"


def _before_file(store: OutputStore, r: dict, source: bytes, existing: set[str]) -> str | None:
    """The enlarge view's "before": the source as displayed (sRGB), scaled and cropped as
    planned, written beside the page (report_files/) and loaded only when a row is opened.
    Returns its link relative to report.html."""
    name = _before_name(r)
    if name in existing:
        return name
    if not source:
        return None
    try:
        W, H = r["canvas_width"], r["canvas_height"]
        k = min(1.0, BEFORE_PX / max(W, H))
        scale = (r.get("scale") or 1.0) * k
        rw, rh = max(1, round(r["source_width"] * scale)), max(1, round(r["source_height"] * scale))
        im = _open_srgb(source, max(rw, rh)).resize((rw, rh), Image.LANCZOS)
        ox, oy = (r.get("offset_x") or 0) * k, (r.get("offset_y") or 0) * k
        box = [
            round(r[c] * k - o)
            for c, o in (
                ("visible_x0", ox),
                ("visible_y0", oy),
                ("visible_x1", ox),
                ("visible_y1", oy),
            )
        ]
        storage.retry(store.fs.pipe_file, store.path(name), _jpeg(im.crop(tuple(box)), 88))
        return name
    except Exception:  # noqa: BLE001 - no slider for this row rather than no report
        return None


def build(
    store: OutputStore, source_options: dict | None = None, sample: int = 24, worst: int = 12
) -> tuple[str, dict]:
    meta = store.read_metadata(SCHEMA.names)
    if meta is None:
        raise FileNotFoundError(f"{store.uri}: no metadata/ to report on")
    meta = conform(meta, SCHEMA)  # metadata of older versions may lack a column
    summary = summarise(meta)
    run = None
    try:
        run = store.read_json("run.json")
    except Exception:  # noqa: BLE001 - a report without run.json still works
        pass
    src_input = _input(source_options, run)
    out_input = InputConfig(manifest="-", storage_options=store.options)
    esc = html.escape
    try:
        store.fs.invalidate_cache()
        existing = {
            f"{REPORT_FILES}/{posixpath.basename(p)}"
            for p in store.fs.ls(store.path(REPORT_FILES), detail=False)
        }
    except (FileNotFoundError, OSError):
        existing = set()
    images: dict = {}  # a row shown twice (sample and worst) is read once

    def thumbs(r: dict) -> tuple[str | None, str | None, bytes]:
        key = r["id"]
        if key not in images:
            source = _read(r.get("image"), src_input) or b""
            images[key] = (
                _thumb(source),
                _thumb(_read(r.get("output_uri"), out_input) or b""),
                source,
            )
        return images[key]

    def card(r: dict, note: str = "") -> str:
        W, H = r["canvas_width"], r["canvas_height"]
        k = THUMB / max(W, H)  # one scale for both images: the after's longer side is THUMB px
        before, after, source = thumbs(r)
        sw, sh = r.get("source_width") or 0, r.get("source_height") or 0
        bw, bh = (
            max(1, round(sw * (r.get("scale") or 1) * k)),
            max(1, round(sh * (r.get("scale") or 1) * k)),
        )
        figs = []
        if before:
            figs.append(
                f'<figure><img src="{before}" width="{bw}" height="{bh}" alt="before {esc(r["id"])}">'
                "<figcaption>before</figcaption></figure>"
            )
        if after:
            x0, y0, x1, y1 = (
                r.get(c) or 0 for c in ("visible_x0", "visible_y0", "visible_x1", "visible_y1")
            )
            pos = (
                f"left:{100 * x0 / W:.2f}%;top:{100 * y0 / H:.2f}%;width:{100 * (x1 - x0) / W:.2f}%;"
                f"height:{100 * (y1 - y0) / H:.2f}%"
            )
            slider = _before_file(store, r, source, existing)
            figs.append(
                f'<figure><a class="zoom" href="{esc(_full_link(store, r.get("output_uri")))}" '
                f'data-id="{esc(r["id"])}" data-before="{esc(slider or "")}" data-box="{pos}">'
                f'<span class="frame"><img src="{after}" width="{round(W * k)}" height="{round(H * k)}" '
                f'alt="after {esc(r["id"])}"><span class="outline" style="{pos}"></span></span></a>'
                "<figcaption>after (original area outlined; click: full size, before/after)</figcaption>"
                "</figure>"
            )
        meta_line = (
            f"{W}×{H} · {esc(str(r.get('mode')))} · seam {_num(r.get('seam_score'))} · texture "
            f"{_num(r.get('texture_score'))} · distance {_num(r.get('quality_distance'))}"
        )
        return f'<div class="card"><h3>{esc(r["id"])}</h3><p>{meta_line}{esc(note)}</p><div class="pair">{"".join(figs)}</div></div>'

    ok = pc.fill_null(pc.equal(meta.column("status"), codes.OK), False)
    measured = pc.and_(ok, pc.is_valid(meta.column("quality_distance")))
    by_distance = [("quality_distance", "descending"), ("id", "ascending")]
    seamed = _rows(meta, measured, by_distance, worst)
    table = _rows(
        meta.select(
            [
                "id",
                "canvas_width",
                "canvas_height",
                "mode",
                "seam_score",
                "texture_score",
                "quality_distance",
                "fill_leakage",
            ]
        ),
        measured,
        by_distance,
        TABLE_ROWS,
    )
    n_measured = pc.sum(measured.cast(pa.int64())).as_py() or 0
    leaks = _rows(meta, pc.fill_null(meta.column("fill_leak_flag"), False), limit=200)
    picked = _pick_sample(meta, sample)
    store.fs.makedirs(store.path(REPORT_FILES), exist_ok=True)
    # thumbnails are I/O and decoding: read each shown row once, on a few threads
    shown = {r["id"]: r for r in picked + seamed + leaks}
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(thumbs, shown.values()))
        gallery = "".join(pool.map(card, picked))
        worst_html = "".join(pool.map(card, seamed))
        leak_html = "".join(
            pool.map(
                lambda r: card(
                    r,
                    f" · fill {r.get('fill_color')} left in "
                    f"{_num(r.get('fill_leakage'), '{:.1%}')} of the generated "
                    "area",
                ),
                leaks,
            )
        )
    metric_rows = "".join(
        f"<tr><td>{esc(r['id'])}</td><td>{r['canvas_width']}×{r['canvas_height']}</td><td>{esc(str(r['mode']))}</td>"
        f"<td>{_num(r['seam_score'])}</td><td>{_num(r['texture_score'])}</td><td>{_num(r['quality_distance'])}</td>"
        f"<td>{_num(r['fill_leakage'], '{:.3f}')}</td></tr>"
        for r in table
    )
    table_note = (
        f"all {n_measured:,} generated rows"
        if n_measured <= TABLE_ROWS
        else f"the {TABLE_ROWS:,} of {n_measured:,} generated rows farthest from natural"
    )
    bad = _rows(meta, pc.invert(ok), [("error_code", "ascending"), ("id", "ascending")])
    bad_rows = "".join(
        f'<tr class="{esc(r["status"])}"><td>{esc(r["id"])}</td><td>{esc(r["status"])}</td>'
        f"<td><code>{esc(r['error_code'] or '')}</code></td><td>{esc(r['error_message'] or '')}</td>"
        f"<td>{esc(r.get('image') or '')}</td></tr>"
        for r in bad
    )
    counts = "".join(f"<li>{esc(k)}: <b>{v:,}</b></li>" for k, v in summary["by_status"].items())
    code_list = "".join(
        f"<li><code>{esc(k)}</code>: {v:,}</li>" for k, v in summary["by_code"].items()
    )
    timing = ""
    if run:
        written, work_s = run.get("images_written", 0), run.get("work_s")
        skipped = (run.get("counts") or {}).get("skipped", 0)
        speed = (
            f"{written:,} images in {work_s:,.1f} s of image work: {written / work_s:,.2f} images/s"
            if written and work_s
            else f"no images written this run ({skipped:,} rows already done)"
        )
        timing = (
            f"<li>wall time: {run.get('wall_s', 0):,.1f} s</li><li>{speed}</li>"
            f"<li>run: <code>{esc(str(run.get('run_id')))}</code></li>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>outpaint report: {esc(store.uri)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ margin-top: 32px; border-bottom: 1px solid #ddd; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px; }}
.card h3 {{ margin: 0; font-size: 14px; overflow-wrap: anywhere; }} .card p {{ margin: 2px 0 6px; color: #555; }}
.pair {{ display: flex; gap: 8px; align-items: flex-end; }} figure {{ margin: 0; }}
figcaption {{ text-align: center; color: #777; font-size: 12px; }}
img {{ display: block; background: repeating-conic-gradient(#eee 0 25%, #fff 0 50%) 0 0/16px 16px; }}
.frame {{ position: relative; display: inline-block; }} .zoom {{ cursor: zoom-in; }}
.outline {{ position: absolute; box-sizing: border-box; border: 2px dashed #ff2fb4; pointer-events: none; }}
dialog {{ max-width: 96vw; max-height: 96vh; padding: 8px; }}
.compare {{ position: relative; display: inline-block; line-height: 0; }}
.compare > img {{ max-width: 92vw; max-height: 84vh; }}
.compare .before {{ position: absolute; inset: 0; clip-path: inset(0 50% 0 0);
  background: repeating-conic-gradient(#ccc 0 25%, #fff 0 50%) 0 0/24px 24px; }}
.compare .before img {{ position: absolute; width: 100%; height: 100%; background: none; }}
.compare .divider {{ position: absolute; top: 0; bottom: 0; left: 50%; width: 2px; margin-left: -1px; background: #ff2fb4; }}
#split {{ width: 40vw; vertical-align: middle; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: left; }}
th[data-sort] {{ cursor: pointer; background: #f6f6f6; }} th[data-sort]:after {{ content: " ⇅"; color: #999; }}
tr.failed td:nth-child(2) {{ color: #b00; }} tr.rejected td:nth-child(2) {{ color: #a60; }}
</style></head>
<body>
<h1>outpaint report · {esc(store.uri)}</h1>
<p>generated {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}</p>
<h2>Summary</h2>
<ul id="summary"><li>rows: <b>{summary["rows"]:,}</b></li>{counts}<li>output: {summary["output_megapixels"]:,} MP</li>{timing}</ul>
<ul id="codes">{code_list}</ul>
<h2>Sample (before / after)</h2><div class="grid" id="sample">{gallery or "<p>no generated rows</p>"}</div>
<h2>Farthest from natural</h2><p>seam: the step across the original area's boundary over the step just
inside it; texture: the generated area's mean |Laplacian| over the original's. A real photo scores ≈1 on
both; a hard edge or noise is above, an over-smoothed ramp or a blurred fill below. Ranked by distance =
the larger |ln| of the two (≤ 0.22: within 0.8–1.25).</p>
<div class="grid" id="worst">{worst_html or "<p>none</p>"}</div>
<h2>Fill leakage</h2><div class="grid" id="leaks">{leak_html or "<p>none flagged</p>"}</div>
<h2>Metrics ({table_note})</h2><p>click a column to sort</p>
<table id="metrics"><thead><tr><th data-sort="text">id</th><th data-sort="text">canvas</th><th data-sort="text">mode</th>
<th data-sort="num">seam</th><th data-sort="num">texture</th><th data-sort="num">distance</th>
<th data-sort="num">fill leakage</th></tr></thead><tbody>{metric_rows}</tbody></table>
<h2>Rejected and failed rows ({len(bad):,})</h2>
<table id="failures"><thead><tr><th>id</th><th>status</th><th>code</th><th>message</th><th>image</th></tr></thead>
<tbody>{bad_rows}</tbody></table>
<dialog id="zoom"><form method="dialog"><button>close</button> <span id="zoom-id"></span>
<label>before <input type="range" id="split" min="0" max="100" value="50"> after</label></form>
<div class="compare"><img alt="full size"><div class="before" id="before"><img alt="before" id="before-img"></div><span class="divider" id="divider"></span></div></dialog>
<script>
// the enlarge view: the output at full resolution, and over it, left of the slider, the
// canvas as it was before (the original, placed, on an empty canvas)
function setSplit(v) {{
  document.getElementById("before").style.clipPath = "inset(0 " + (100 - v) + "% 0 0)";
  document.getElementById("divider").style.left = v + "%";
  document.getElementById("split").value = v;
  document.body.dataset.split = v;
}}
document.getElementById("split").addEventListener("input", function () {{ setSplit(+this.value); }});
document.querySelectorAll("a.zoom").forEach(function (a) {{
  a.addEventListener("click", function (e) {{
    e.preventDefault();
    var d = document.getElementById("zoom"), before = document.getElementById("before-img");
    d.querySelector(".compare > img").src = a.getAttribute("href");  // full resolution, loaded only now
    document.getElementById("before").hidden = !a.dataset.before;
    if (a.dataset.before) {{ before.src = a.dataset.before; before.style.cssText = a.dataset.box; }}
    document.getElementById("zoom-id").textContent = a.dataset.id;
    setSplit(50);
    d.showModal();
  }});
}});
document.querySelector("#zoom .compare > img").addEventListener("load", function () {{
  document.body.dataset.zoomWidth = this.naturalWidth;
}});
document.getElementById("before-img").addEventListener("load", function () {{
  document.body.dataset.beforeWidth = this.naturalWidth;
}});
if (location.hash.indexOf("#zoom=") === 0) {{  // a link straight to a row's output: #zoom=ID[&split=0..100]
  var parts = location.hash.slice(6).split("&split="), want = decodeURIComponent(parts[0]);
  document.querySelectorAll("a.zoom").forEach(function (a) {{ if (a.dataset.id === want) a.click(); }});
  if (parts.length > 1) setSplit(Math.max(0, Math.min(100, +parts[1])));
}}
document.querySelectorAll("th[data-sort]").forEach(function (th, col) {{
  th.addEventListener("click", function () {{
    var body = th.closest("table").tBodies[0], num = th.dataset.sort === "num";
    var asc = th.dataset.dir !== "asc";
    th.dataset.dir = asc ? "asc" : "desc";
    var key = function (tr) {{
      var t = tr.cells[col].textContent;
      return num ? (t === "n/a" ? -Infinity : parseFloat(t)) : t;
    }};
    Array.prototype.slice.call(body.rows).sort(function (a, b) {{
      var x = key(a), y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    }}).forEach(function (tr) {{ body.appendChild(tr); }});
  }});
}});
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.querySelectorAll(".card img"));
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
}});
</script>
</body></html>
"""
    return page, summary


def write(
    store: OutputStore, source_options: dict | None = None, sample: int = 24
) -> tuple[str, dict]:
    page, summary = build(store, source_options, sample=sample)
    storage.retry(store.fs.pipe_file, store.path("report.html"), page.encode())
    return store.uri_of("report.html"), summary
