"""``outpaint review``'s page in real headless Chromium (Playwright driving the system's
Chromium): keys and buttons cast verdicts that persist across a reload; and the server
against malformed and hostile requests (Hypothesis): always a 4xx, never a 5xx, never a
verdict without the page's token."""

from __future__ import annotations

import http.client
import json
import shutil
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.io.outputs import OutputStore
from pipeline.review.app import Review, make_server

from ..fuzz import SERVER, bodies

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def server(held_run):
    _, out = held_run
    review = Review(OutputStore(str(out)))
    srv = make_server(review, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, review, out
    srv.shutdown()
    srv.server_close()


def _token(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    page = conn.getresponse().read().decode()
    return page.split('name="outpaint-token" content="')[1].split('"')[0]


def _post(port: int, body: bytes, headers: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/api/verdict", body=body, headers=headers)
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by .ci/run (Debian package)")
def test_a_reviewer_goes_through_held_rows_with_keys_and_buttons(server):
    from playwright.sync_api import sync_playwright

    srv, review, out = server
    port = srv.server_address[1]
    url = f"http://127.0.0.1:{port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        cards = page.locator(".card")
        assert cards.count() == 9  # every generated row: 7 held, 2 passed
        statuses = page.locator("[data-role=status]").all_inner_texts()
        assert statuses[:7] == ["held"] * 7 and statuses[7:] == ["passed"] * 2
        first, third = cards.nth(0).get_attribute("data-id"), cards.nth(2).get_attribute("data-id")
        page.fill("#reviewer", "Bo")
        page.locator("#reviewer").press("Tab")
        page.keyboard.press("a")  # approve the current (first) card
        page.wait_for_selector("#row-0 [data-role=status]:text('approved')")
        cards.nth(2).locator("button[data-verdict=reject]").click()
        page.wait_for_selector("#row-2 [data-role=status]:text('rejected')")
        # the pictures load (the page's own endpoints, allowed by its CSP)
        page.wait_for_function("document.querySelector('#row-0 img[alt=output]').naturalWidth > 0")
        _the_failed_region_is_outlined(page, review)
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        now = dict(
            zip(
                page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)"),
                page.locator("[data-role=status]").all_inner_texts(),
            )
        )
        assert now[first] == "approved" and now[third] == "rejected"
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    verdicts = [json.loads(p.read_text()) for p in (out / "review" / "verdicts").iterdir()]
    assert sorted((v["id"], v["verdict"], v["reviewer"]) for v in verdicts) == sorted(
        [(first, "approve", "Bo"), (third, "reject", "Bo")]
    )
    assert next((out / "images").glob(f"{first}.*")).exists()
    assert not list((out / "images").glob(f"{third}.*"))


def _the_failed_region_is_outlined(page, review):
    """Each held card outlines, over its output, where the defect that failed it was found
    (``quality_region_*``), at that place on the picture as drawn; a passed card has none."""
    by_id = {r["id"]: r for r in review.rows}
    cards = page.locator(".card")
    outlined = 0
    for i in range(cards.count()):
        card = cards.nth(i)
        row = by_id[card.get_attribute("data-id")]
        region = card.locator("[data-role=region]")
        if row["review_status"] == "passed":
            assert region.count() == 0
            continue
        assert region.count() == 1 and row["quality_defect"] in card.inner_text()
        card.scroll_into_view_if_needed()
        card.locator("img[alt=output]").click()  # the outline lets clicks through to the picture
        img = card.locator("img[alt=output]").bounding_box()
        box = region.bounding_box()
        W, H = row["canvas_width"], row["canvas_height"]
        x0, y0, x1, y1 = (row[f"quality_region_{c}"] for c in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        for got, want in (
            (box["x"] - img["x"], img["width"] * x0 / W),
            (box["y"] - img["y"], img["height"] * y0 / H),
            (box["width"], img["width"] * (x1 - x0) / W),
            (box["height"], img["height"] * (y1 - y0) / H),
        ):
            assert abs(got - want) <= 2, (row["id"], got, want)
        outlined += 1
    assert outlined == 7  # every held row


def test_no_verdict_without_the_token_or_from_another_host(server):
    srv, review, out = server
    port = srv.server_address[1]
    row = review.rows[0]["id"]
    body = json.dumps({"id": row, "verdict": "approve"}).encode()
    plain = {"Content-Type": "application/json"}
    assert _post(port, body, plain)[0] == 403
    token = _token(port)
    good = {**plain, "X-Outpaint-Token": token}
    assert _post(port, body, {**good, "Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert _post(port, b"{", good)[0] == 400
    assert _post(port, b"x" * 5000, good)[0] == 413
    assert _post(port, json.dumps({"id": "nope", "verdict": "approve"}).encode(), good)[0] == 404
    assert _post(port, json.dumps({"id": row, "verdict": "maybe"}).encode(), good)[0] == 400
    assert not (out / "review" / "verdicts").exists()  # nothing cast so far
    status, reply = _post(port, body, good)
    assert status == 200 and reply == {"id": row, "review_status": "approved"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    r = conn.getresponse()
    csp = r.getheader("Content-Security-Policy")
    assert (
        "script-src 'nonce-" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    )
    r.read()
    for path in ("/picture/999/after", "/picture/-1/after", "/picture/0/other", "/../etc/passwd"):
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 404, path
        r.read()


@SERVER
@given(
    body=bodies(),
    kind=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=x"]),
    path=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30
    ),
)
def test_malformed_requests_are_4xx_never_5xx(server, body, kind, path):
    srv, review, _ = server
    port = srv.server_address[1]
    token = _token(port)
    status, _ = _post(port, body, {"Content-Type": kind, "X-Outpaint-Token": token})
    assert 200 <= status < 500
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/" + path.lstrip("/"))
    r = conn.getresponse()
    r.read()
    assert r.status < 500
