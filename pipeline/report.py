"""``report.html``: the review page of an output (written by ``run``, rebuilt by
``outpaint report``). One self-contained file that opens offline: summary numbers, a
before/after gallery of a sample, the worst seam scores, rows with fill leakage, and
every rejected or failed row with its code and message. Thumbnails are small JPEGs
embedded as data URIs, never the full images.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from PIL import Image, ImageOps

from . import codes, storage
from .outputs import OutputStore

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
    status = meta.column("status").to_pylist()
    code = meta.column("error_code").to_pylist()
    W = meta.column("canvas_width").to_pylist()
    H = meta.column("canvas_height").to_pylist()
    by_code: dict[str, int] = {}
    for c in code:
        if c:
            by_code[c] = by_code.get(c, 0) + 1
    mp = sum(w * h for s, w, h in zip(status, W, H) if s == codes.OK and w and h) / 1e6
    return {"rows": meta.num_rows,
            "by_status": {k: status.count(k) for k in (codes.OK, codes.REJECTED, codes.FAILED)},
            "by_code": dict(sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0]))),
            "output_megapixels": round(mp, 3)}


def _pick_sample(rows: list[dict], n: int) -> list[dict]:
    """A stable sample: the same rows on every rebuild (ordered by a hash of the id)."""
    ok = [r for r in rows if r["status"] == codes.OK and r.get("generated")]
    ok.sort(key=lambda r: hashlib.sha1(r["id"].encode()).hexdigest())
    return ok[:n]


def build(store: OutputStore, source_options: dict | None = None, sample: int = 24, worst: int = 12) -> tuple[str, dict]:
    meta = store.read_metadata()
    if meta is None:
        raise FileNotFoundError(f"{store.uri}: no metadata/ to report on")
    rows = meta.to_pylist()
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

    seamed = sorted((r for r in rows if r["status"] == codes.OK and r.get("seam_score") is not None),
                    key=lambda r: -r["seam_score"])[:worst]
    leaks = [r for r in rows if r.get("fill_leak_flag")][:200]
    picked = _pick_sample(rows, sample)
    # thumbnails are I/O and decoding: build the cards on a few threads
    with ThreadPoolExecutor(max_workers=8) as pool:
        gallery = "".join(pool.map(card, picked))
        worst_html = "".join(pool.map(card, seamed))
        leak_html = "".join(pool.map(lambda r: card(r, f' · fill {r.get("fill_color")} left in '
                                                       f'{100 * (r.get("fill_leakage") or 0):.1f}% of the generated '
                                                       'area'), leaks))
    bad = sorted((r for r in rows if r["status"] != codes.OK), key=lambda r: (r["error_code"] or "", r["id"]))
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
