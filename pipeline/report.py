"""``report.html``: the review page of an output (written by ``run``, rebuilt by
``outpaint report``). One self-contained file that opens offline: summary numbers, a
before/after gallery of a sample, the worst seam scores, rows with fill leakage, and
every rejected or failed row with its code and message. Thumbnails are small JPEGs
embedded as data URIs, never the full images.
"""

from __future__ import annotations

import base64
import html
import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageOps

from . import codes, storage
from .outputs import OutputStore, conform
from .rows import derive_seeds

THUMB = 256


def _thumb(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            im.draft("RGB", (THUMB, THUMB))  # JPEG: decode at reduced size
            im = im.convert("RGB")
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001 - a missing or broken image shows as a gap, not a failed report
        return None


def _read(uri: str | None, options: dict) -> bytes | None:
    if not uri:
        return None
    try:
        fs, path = storage.filesystem(uri, options)
        return storage.retry(fs.cat_file, path, attempts=3)
    except Exception:  # noqa: BLE001
        return None


def summarise(meta: pa.Table) -> dict:
    """Counts per status and code, output megapixels: columnar (millions of rows)."""
    ok = pc.fill_null(pc.equal(meta.column("status"), codes.OK), False)
    counts, by_code = codes.tally(meta.column("status")), codes.tally(meta.column("error_code"))
    area = pc.multiply(meta.column("canvas_width").cast(pa.float64()), meta.column("canvas_height").cast(pa.float64()))
    mp = (pc.sum(pc.filter(area, ok)).as_py() or 0.0) / 1e6
    return {"rows": meta.num_rows,
            "by_status": {k: counts.get(k, 0) for k in (codes.OK, codes.REJECTED, codes.FAILED)},
            "by_code": dict(sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0]))),
            "output_megapixels": round(mp, 3)}


# what the page shows; nothing else is read (the metadata can hold millions of rows)
SCHEMA = pa.schema([("id", pa.string()), ("image", pa.string()), ("output_uri", pa.string()),
                    ("status", pa.string()), ("error_code", pa.string()), ("error_message", pa.string()),
                    ("canvas_width", pa.int64()), ("canvas_height", pa.int64()), ("mode", pa.string()),
                    ("generated", pa.bool_()), ("seam_score", pa.float64()), ("fill_color", pa.string()),
                    ("fill_leakage", pa.float64()), ("fill_leak_flag", pa.bool_())])


def _rows(meta: pa.Table, mask=None, order=None, limit: int | None = None) -> list[dict]:
    """Only the selected rows become Python dicts."""
    t = meta.filter(mask) if mask is not None else meta
    if order is not None:
        t = t.take(pc.sort_indices(t, sort_keys=order))
    return (t.slice(0, limit) if limit is not None else t).to_pylist()


def _pick_sample(meta: pa.Table, n: int) -> list[dict]:
    """A stable sample: the same rows on every rebuild (ordered by a hash of the id)."""
    cand = meta.filter(pc.fill_null(pc.and_(pc.equal(meta.column("status"), codes.OK), meta.column("generated")),
                                    False))
    if cand.num_rows == 0 or n == 0:
        return []
    # a vectorised hash of the id (the per-row seed function, fixed seed): stable, no per-row Python
    keys = derive_seeds(0x5EED, cand.column("id").combine_chunks())
    return cand.take(pa.array(np.argsort(keys, kind="stable")[:n])).to_pylist()


def build(store: OutputStore, source_options: dict | None = None, sample: int = 24, worst: int = 12) -> tuple[str, dict]:
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
    src_opts = source_options if source_options is not None else (
        (run or {}).get("config", {}).get("input", {}).get("storage_options", {}))
    esc = html.escape

    def card(r: dict, note: str = "") -> str:
        before = _thumb(_read(r.get("image"), src_opts) or b"")
        after = _thumb(_read(r.get("output_uri"), store.options) or b"")
        imgs = "".join(f'<figure><img src="{src}" alt="{esc(label)} {esc(r["id"])}"><figcaption>{label}</figcaption></figure>'
                       for label, src in (("before", before), ("after", after)) if src)
        seam = r.get("seam_score")
        meta_line = (f'{r["canvas_width"]}×{r["canvas_height"]} · {esc(str(r.get("mode")))} · '
                     f'seam {seam:.2f}' if seam is not None else f'{r["canvas_width"]}×{r["canvas_height"]}')
        return f'<div class="card"><h3>{esc(r["id"])}</h3><p>{meta_line}{esc(note)}</p><div class="pair">{imgs}</div></div>'

    ok = pc.fill_null(pc.equal(meta.column("status"), codes.OK), False)
    seamed = _rows(meta, pc.and_(ok, pc.is_valid(meta.column("seam_score"))),
                   [("seam_score", "descending"), ("id", "ascending")], worst)
    leaks = _rows(meta, pc.fill_null(meta.column("fill_leak_flag"), False), limit=200)
    picked = _pick_sample(meta, sample)
    # thumbnails are I/O and decoding: build the cards on a few threads
    with ThreadPoolExecutor(max_workers=8) as pool:
        gallery = "".join(pool.map(card, picked))
        worst_html = "".join(pool.map(card, seamed))
        leak_html = "".join(pool.map(lambda r: card(r, f' · fill {r.get("fill_color")} left in '
                                                       f'{100 * (r.get("fill_leakage") or 0):.1f}% of the generated '
                                                       'area'), leaks))
    bad = _rows(meta, pc.invert(ok), [("error_code", "ascending"), ("id", "ascending")])
    bad_rows = "".join(f'<tr class="{esc(r["status"])}"><td>{esc(r["id"])}</td><td>{esc(r["status"])}</td>'
                       f'<td><code>{esc(r["error_code"] or "")}</code></td><td>{esc(r["error_message"] or "")}</td>'
                       f'<td>{esc(r.get("image") or "")}</td></tr>' for r in bad)
    counts = "".join(f"<li>{esc(k)}: <b>{v:,}</b></li>" for k, v in summary["by_status"].items())
    code_list = "".join(f"<li><code>{esc(k)}</code>: {v:,}</li>" for k, v in summary["by_code"].items())
    timing = ""
    if run:
        timing = (f"<li>wall time: {run.get('wall_s', 0):,.1f} s</li><li>images/s: {run.get('images_per_s', 0):,.3f}</li>"
                  f"<li>run: <code>{esc(str(run.get('run_id')))}</code></li>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>outpaint report: {esc(store.uri)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ margin-top: 32px; border-bottom: 1px solid #ddd; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 16px; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px; width: 540px; }}
.card h3 {{ margin: 0; font-size: 14px; }} .card p {{ margin: 2px 0 6px; color: #555; }}
.pair {{ display: flex; gap: 8px; }} figure {{ margin: 0; }} figcaption {{ text-align: center; color: #777; }}
img {{ max-width: 256px; max-height: 256px; background: repeating-conic-gradient(#eee 0 25%, #fff 0 50%) 0 0/16px 16px; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ border: 1px solid #ddd; padding: 4px 6px; text-align: left; }}
tr.failed td:nth-child(2) {{ color: #b00; }} tr.rejected td:nth-child(2) {{ color: #a60; }}
</style></head>
<body>
<h1>outpaint report · {esc(store.uri)}</h1>
<p>generated {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}</p>
<h2>Summary</h2>
<ul id="summary"><li>rows: <b>{summary["rows"]:,}</b></li>{counts}<li>output: {summary["output_megapixels"]:,} MP</li>{timing}</ul>
<ul id="codes">{code_list}</ul>
<h2>Sample (before / after)</h2><div class="grid" id="sample">{gallery or "<p>no generated rows</p>"}</div>
<h2>Worst seam scores</h2><p>gradient across the reference boundary over the gradient just inside it (≈1 is seamless)</p>
<div class="grid" id="worst">{worst_html or "<p>none</p>"}</div>
<h2>Fill leakage</h2><div class="grid" id="leaks">{leak_html or "<p>none flagged</p>"}</div>
<h2>Rejected and failed rows ({len(bad):,})</h2>
<table id="failures"><thead><tr><th>id</th><th>status</th><th>code</th><th>message</th><th>image</th></tr></thead>
<tbody>{bad_rows}</tbody></table>
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
}});
</script>
</body></html>
"""
    return page, summary


def write(store: OutputStore, source_options: dict | None = None, sample: int = 24) -> tuple[str, dict]:
    page, summary = build(store, source_options, sample=sample)
    storage.retry(store.fs.pipe_file, store.path("report.html"), page.encode())
    return store.uri_of("report.html"), summary
