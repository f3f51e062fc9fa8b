"""``outpaint review OUTPUT_URI``: the review page served by a small local web server,
where a reviewer approves or rejects generated rows (held rows first, then by quality
distance), with buttons or keys, each verdict persisted as it is cast (``verdicts``).

As safe as ``report.html``: every manifest string is escaped (Jinja2 autoescape), a
Content-Security-Policy allows only the page's own nonce'd script and style, and a verdict
needs the session's token in a header (a form or a page elsewhere cannot cast one through
the reviewer's browser: a cross-origin request with that header is preflighted, and this
server answers no preflight), from a ``Host`` the server listens on (no DNS rebinding).
Standard library HTTP (``http.server``): one reviewer's clicks need no framework.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets as tokens  # the session token and page nonce (not ..common.secrets)
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ..common import secrets
from ..config import InputConfig
from ..io.outputs import OutputStore
from . import verdicts
from .report import _environment
from .score import REGION_COLUMNS
from .thumbnails import jpeg, open_srgb, read

PAGE_ROWS = 60  # cards a page
THUMB_PX = 512
MAX_BODY = 4096  # bytes of a verdict request
SHOWN = [
    "id",
    "image",
    "output_uri",
    "status",
    "generated",
    "review_status",
    "quality_distance",
    "quality_defect",
    "canvas_width",
    "canvas_height",
    "visible_x0",
    "visible_y0",
    "visible_x1",
    "visible_y1",
    *REGION_COLUMNS,
]
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'nonce-{n}'; script-src 'nonce-{n}'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _region(r: dict) -> str:
    """Where the defect that failed the row was found, as the page's outline reads it
    (x0,y0,x1,y1,width,height); empty where none (numbers only: nothing of the row's
    strings reaches the page's attributes)."""
    region = [r.get(c) for c in REGION_COLUMNS]
    if any(v is None for v in region):
        return ""
    return ",".join(str(int(v)) for v in [*region, r["canvas_width"], r["canvas_height"]])


class Review:
    """What the server shows and changes: the output's generated rows in review order,
    their pictures, and the verdicts (one lock: verdicts are cast one at a time)."""

    def __init__(self, store: OutputStore, sources: InputConfig | None = None):
        self.store = store
        self.sources = sources or InputConfig(manifest="-")
        self.outputs = InputConfig(manifest="-", storage_options=store.options)
        self.lock = threading.Lock()
        verdicts.apply(store)  # verdicts a crash left unapplied
        # the generated rows' metadata, read once: a verdict updates it here and in a new
        # part, never by reading the whole metadata again
        self.meta = self._load()
        self.at = {row_id: i for i, row_id in enumerate(self.meta.column("id").to_pylist())}
        self.changed: dict[str, dict] = {}
        self.rows = self.meta.select(SHOWN).to_pylist()
        held = {"held": 0, "rejected": 1}
        self.rows.sort(
            key=lambda r: (held.get(r["review_status"], 2), -(r["quality_distance"] or 0))
        )
        self.by_id = {r["id"]: r for r in self.rows}

    def _load(self) -> pa.Table:
        meta = self.store.metadata.read()
        if meta is None:
            return pa.table({name: pa.array([], pa.string()) for name in SHOWN})
        for name in SHOWN:
            if name not in meta.column_names:
                meta = meta.append_column(name, pa.nulls(meta.num_rows))
        ok = pc.and_(pc.equal(meta.column("status"), "ok"), meta.column("generated"))
        return meta.filter(pc.and_(ok, pc.is_valid(meta.column("output_uri"))).fill_null(False))

    def counts(self) -> list[tuple[str, int]]:
        found: dict[str, int] = {}
        for r in self.rows:
            key = r["review_status"] or "not judged"
            found[key] = found.get(key, 0) + 1
        return sorted(found.items())

    def judge(self, row_id: str, verdict: str, reviewer: str | None) -> dict:
        with self.lock:
            row = self.changed.get(row_id)
            if row is None:
                row = self.meta.slice(self.at[row_id], 1).to_pylist()[0]
                self.changed[row_id] = row
            verdicts.cast(
                self.store, [row_id], verdict, reviewer, ({row_id: row}, self.meta.schema)
            )
            shown = self.by_id[row_id]
            shown.update(review_status=row["review_status"], output_uri=row["output_uri"])
            return shown

    def picture(self, row_id: str, which: str) -> bytes | None:
        row = self.by_id.get(row_id)
        if row is None:
            return None
        uri, cfg = (
            (row["image"], self.sources) if which == "before" else (row["output_uri"], self.outputs)
        )
        data = read(uri, cfg)
        if not data:
            return None
        try:
            return jpeg(open_srgb(data, THUMB_PX), 85)
        except Exception:  # noqa: BLE001 - a picture that cannot be read is a gap
            return None

    def page(self, number: int, token: str, nonce: str) -> str:
        pages = max(1, math.ceil(len(self.rows) / PAGE_ROWS))
        number = min(max(0, number), pages - 1)
        shown = []
        for i, r in enumerate(self.rows[number * PAGE_ROWS : (number + 1) * PAGE_ROWS]):
            index = number * PAGE_ROWS + i
            box = [r[k] for k in ("visible_x0", "visible_y0", "visible_x1", "visible_y1")]
            shown.append(
                {
                    **r,
                    "distance": "n/a"
                    if r["quality_distance"] is None
                    else f"{r['quality_distance']:.2f}",
                    "defect": r["quality_defect"],
                    "box": ",".join(str(v) for v in [*box, r["canvas_width"], r["canvas_height"]]),
                    "region": _region(r),
                    # by position, never by id: no manifest string becomes part of a URL
                    "before_url": f"picture/{index}/before",
                    "after_url": f"picture/{index}/after",
                }
            )
        template = _environment().get_template("review.html")
        return template.render(
            title=secrets.scrub(self.store.uri),
            token=token,
            nonce=nonce,
            rows=shown,
            counts=self.counts(),
            page=number,
            pages=pages,
        )


Reply = tuple[int, bytes, str, dict]  # status, body, content type, extra headers


def _json(code: int, obj: dict) -> Reply:
    return code, json.dumps(obj).encode(), "application/json", {}


def get(review: Review, path: str, token: str) -> Reply:
    """The page (``/``, ``?page=N``) or a row's picture (``/picture/{index}/before|after``)."""
    url = urlsplit(path)
    parts = [p for p in url.path.split("/") if p]
    if not parts:
        raw = (parse_qs(url.query).get("page") or ["0"])[0]
        number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 9 else 0
        nonce = tokens.token_urlsafe(16)
        html = review.page(number, token, nonce).encode()
        csp = {"Content-Security-Policy": CSP.format(n=nonce)}
        return HTTPStatus.OK, html, "text/html; charset=utf-8", csp
    if len(parts) == 3 and parts[0] == "picture" and parts[2] in ("before", "after"):
        i = int(parts[1]) if parts[1].isascii() and parts[1].isdigit() else -1
        data = review.picture(review.rows[i]["id"], parts[2]) if 0 <= i < len(review.rows) else None
        if data:
            return HTTPStatus.OK, data, "image/jpeg", {}
    return _json(HTTPStatus.NOT_FOUND, {"detail": "Not Found"})


def post_verdict(review: Review, headers, read: Callable[[int], bytes], token: str) -> Reply:
    """A verdict: the token, JSON of at most ``MAX_BODY`` bytes, a row of the page, approve
    or reject. Anything else a 4xx that says what is wrong."""
    given = headers.get("X-Outpaint-Token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _json(HTTPStatus.FORBIDDEN, {"detail": "a verdict needs the page's token"})
    if not headers.get("Content-Type", "").startswith("application/json"):
        return _json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"detail": "send JSON"})
    length = headers.get("Content-Length", "")
    if not (length.isascii() and length.isdigit()):
        return _json(HTTPStatus.LENGTH_REQUIRED, {"detail": "Content-Length"})
    if int(length) > MAX_BODY:
        return _json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"detail": "too large"})
    try:
        body = json.loads(read(int(length)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _json(HTTPStatus.BAD_REQUEST, {"detail": "not JSON"})
    if not isinstance(body, dict):
        return _json(HTTPStatus.BAD_REQUEST, {"detail": "a JSON object"})
    row_id, verdict, name = body.get("id"), body.get("verdict"), body.get("reviewer")
    if not isinstance(row_id, str) or row_id not in review.by_id:
        return _json(HTTPStatus.NOT_FOUND, {"detail": "no such row to review"})
    if verdict not in (verdicts.APPROVE, verdicts.REJECT):
        return _json(HTTPStatus.BAD_REQUEST, {"detail": "verdict: approve or reject"})
    if name is not None and not isinstance(name, str):
        return _json(HTTPStatus.BAD_REQUEST, {"detail": "reviewer: a string"})
    row = review.judge(row_id, verdict, name)
    return _json(HTTPStatus.OK, {"id": row_id, "review_status": row["review_status"]})


def make_server(review: Review, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """The server (not yet serving): ``server.server_address`` says where it listens."""
    token = tokens.token_urlsafe(32)

    class Handler(BaseHTTPRequestHandler):
        server_version = "outpaint-review"

        def log_message(self, format, *args):
            pass  # no request line (ids, names) in a terminal's scrollback

        def _send(self, reply: Reply) -> None:
            code, body, kind, headers = reply
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _host_ok(self) -> bool:
            """Only the names this server listens on: a page elsewhere that resolves its own
            name to 127.0.0.1 (DNS rebinding) is refused."""
            h, p = self.server.server_address[:2]
            allowed = {f"{h}:{p}", f"localhost:{p}", f"127.0.0.1:{p}", f"[::1]:{p}"}
            return self.headers.get("Host", "") in allowed

        def do_GET(self) -> None:
            if not self._host_ok():
                return self._send(_json(HTTPStatus.FORBIDDEN, {"detail": "unknown Host"}))
            self._send(get(review, self.path, token))

        def do_POST(self) -> None:
            if not self._host_ok():
                return self._send(_json(HTTPStatus.FORBIDDEN, {"detail": "unknown Host"}))
            if urlsplit(self.path).path != "/api/verdict":
                return self._send(_json(HTTPStatus.NOT_FOUND, {"detail": "Not Found"}))
            self._send(post_verdict(review, self.headers, self.rfile.read, token))

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(
    review: Review,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted; ``ready(url)`` once it listens."""
    server = make_server(review, host, port)
    h, p = server.server_address[:2]
    if ready is not None:
        ready(f"http://{h}:{p}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
