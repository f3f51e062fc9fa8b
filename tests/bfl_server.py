"""A loopback server that behaves as ../shared/bfl-api.md documents the hosted FLUX
Outpainting API (tests and benchmarks; 127.0.0.1 only):

- ``POST /v1/flux-tools/outpainting-v1`` with ``x-key``: 403 without a valid key, 422
  (FastAPI-style ``detail``) for unknown fields or invalid values, 402 when the
  account's credits do not cover the task, 429 past ``max_active`` active tasks; else
  ``{id, polling_url, cost, input_mp, output_mp}`` where ``polling_url`` points at a
  second server ("another regional cluster", another port).
- polling: ``Pending`` for ``latency`` seconds, then ``Ready`` with ``result.sample`` on
  a third server (the delivery host), signed and expiring ``sample_ttl`` seconds after
  the task finished; ``Request Moderated`` / ``Content Moderated`` / ``Error`` when the
  prompt asks for it (``moderate-request``, ``moderate-content``, ``fail``); ``Task not
  found`` for unknown ids. Only ``Ready`` tasks are charged.
- ``GET /v1/credits``.

The result image: the reference placed on the canvas at the given offsets (centred when
null), the rest continued from the reference's border colours, in the asked format.
Every submission is recorded; ``max_seen_active`` is the most tasks ever active at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

FIELDS = {
    "input_image",
    "width",
    "height",
    "reference_offset_x",
    "reference_offset_y",
    "auto_crop",
    "mode",
    "output_format",
    "prompt",
    "safety_tolerance",
}
MAX_PIXELS = 4_194_304
PATH = "/v1/flux-tools/outpainting-v1"


def _validation(body: dict) -> list[dict]:
    errors = []

    def err(loc, msg, typ):
        errors.append({"loc": ["body", loc], "msg": msg, "type": typ})

    for k in body:
        if k not in FIELDS:
            err(k, "Extra inputs are not permitted", "extra_forbidden")
    for k in ("input_image", "width", "height"):
        if k not in body:
            err(k, "Field required", "missing")
    w, h = body.get("width"), body.get("height")
    if isinstance(w, int) and isinstance(h, int):
        if w < 64 or h < 64:
            err("width", "Input should be greater than or equal to 64", "greater_than_equal")
        if w * h > MAX_PIXELS:
            err("width", f"width * height must be at most {MAX_PIXELS}", "value_error")
    if body.get("mode", "high") not in ("high", "fast"):
        err("mode", "Input should be 'high' or 'fast'", "enum")
    if body.get("output_format", "png") not in ("png", "jpeg", "webp"):
        err("output_format", "Input should be 'png', 'jpeg' or 'webp'", "enum")
    tol = body.get("safety_tolerance", 2)
    if not isinstance(tol, int) or not 0 <= tol <= 5:
        err("safety_tolerance", "Input should be between 0 and 5", "value_error")
    if len(body.get("prompt") or "") > 2000:
        err("prompt", "String should have at most 2000 characters", "string_too_long")
    return errors


class _Http:
    def __init__(self, handler):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class BflServer:
    def __init__(  # noqa: C901 - the API's routes, one branch each, as the contract lists them
        self,
        key: str = "test-key",
        credits: float = 1000.0,
        max_active: int = 24,
        latency: tuple[float, float] = (0.2, 0.4),
        sample_ttl: float = 600.0,
        cost: float = 2.5,
        seed: int = 0,
    ):
        self.key, self.credits, self.max_active = key, credits, max_active
        self.latency, self.sample_ttl, self.cost = latency, sample_ttl, cost
        self.secret = uuid.uuid4().bytes
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.tasks: dict[str, dict] = {}
        self.submissions: list[dict] = []  # every accepted POST: id, a digest of its input, time
        self.refused: dict[str, int] = {"403": 0, "402": 0, "422": 0, "429": 0}
        self.max_seen_active = 0
        self.polls = 0
        api = self

        class Api(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status: int, obj, headers: dict | None = None) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def authorised(self) -> bool:
                if self.headers.get("x-key") != api.key:
                    with api.lock:
                        api.refused["403"] += 1
                    self.reply(403, {"detail": "Not authenticated - Invalid Authentication"})
                    return False
                return True

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if urlsplit(self.path).path != PATH:
                    return self.reply(404, {"detail": "Not Found"})
                if not self.authorised():
                    return None
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self.reply(400, {"detail": "body is not JSON"})
                errors = _validation(body)
                try:
                    ref = Image.open(
                        io.BytesIO(base64.b64decode(body.get("input_image", ""), validate=True))
                    )
                    ref.load()
                except Exception:  # noqa: BLE001
                    errors.append(
                        {
                            "loc": ["body", "input_image"],
                            "msg": "input_image is not a base64 image",
                            "type": "value_error",
                        }
                    )
                if errors:
                    with api.lock:
                        api.refused["422"] += 1
                    return self.reply(422, {"detail": errors})
                with api.lock:
                    now = time.time()
                    for (
                        tid_,
                        t,
                    ) in api.tasks.items():  # tasks finish on the server's clock, polled or not
                        if t["status"] == "Pending" and now >= t["ready_at"]:
                            api._finish(tid_, t)
                    active = sum(1 for t in api.tasks.values() if t["status"] == "Pending")
                    if active >= api.max_active:
                        api.refused["429"] += 1
                        return self.reply(429, {"detail": "Too many active tasks"})
                    if api.credits < api.cost:
                        api.refused["402"] += 1
                        return self.reply(402, {"detail": "Insufficient credits"})
                    tid = str(uuid.uuid4())
                    lat = api.rng.uniform(*api.latency)
                    api.tasks[tid] = {
                        "status": "Pending",
                        "body": body,
                        "ref": ref.convert("RGB"),
                        "ready_at": time.time() + lat,
                        "finished": None,
                    }
                    api.submissions.append(
                        {
                            "id": tid,
                            "input": hashlib.sha256(raw).hexdigest(),
                            "prompt": body.get("prompt", ""),
                            "time": time.time(),
                        }
                    )
                    api.max_seen_active = max(api.max_seen_active, active + 1)
                w, h = body["width"], body["height"]
                return self.reply(
                    200,
                    {
                        "id": tid,
                        "polling_url": f"{api.poll.url}/v1/get_result?id={tid}",
                        "cost": api.cost,
                        "input_mp": round(ref.width * ref.height / 1e6, 3),
                        "output_mp": round(w * h / 1e6, 3),
                    },
                )

            def do_GET(self):
                url = urlsplit(self.path)
                if url.path == "/v1/credits":
                    if self.authorised():
                        self.reply(200, {"credits": api.credits})
                    return None
                if url.path == "/v1/get_result":
                    if self.authorised():
                        self.reply(200, api.result(parse_qs(url.query).get("id", [""])[0]))
                    return None
                return self.reply(404, {"detail": "Not Found"})

        class Delivery(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                q = parse_qs(url.query)
                tid = url.path.rsplit("/", 1)[-1].split(".")[0]
                exp = float(q.get("exp", ["0"])[0])
                good = hmac.compare_digest(q.get("sig", [""])[0], api.sign(tid, exp))
                task = api.tasks.get(tid)
                if not good or time.time() > exp or task is None or "sample" not in task:
                    body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
                    self.send_response(403)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = task["sample"]
                self.send_response(200)
                self.send_header(
                    "Content-Type", "image/" + task["body"].get("output_format", "png")
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.api, self.poll, self.delivery = _Http(Api), _Http(Api), _Http(Delivery)
        self.endpoint = self.api.url

    def sign(self, tid: str, exp: float) -> str:
        return hmac.new(self.secret, f"{tid}:{exp}".encode(), hashlib.sha256).hexdigest()

    def result(self, tid: str) -> dict:
        with self.lock:
            self.polls += 1
            task = self.tasks.get(tid)
            if task is None:
                return {
                    "id": tid,
                    "status": "Task not found",
                    "result": None,
                    "progress": None,
                    "details": None,
                }
            if task["status"] == "Pending" and time.time() >= task["ready_at"]:
                self._finish(tid, task)
            out = {
                "id": tid,
                "status": task["status"],
                "result": None,
                "progress": None,
                "details": None,
                "preview": None,
            }
            if task["status"] == "Pending":
                out["progress"] = 0.5
            elif task["status"] == "Ready":
                exp = task["finished"] + self.sample_ttl
                out["result"] = {
                    "sample": f"{self.delivery.url}/samples/{tid}.{task['ext']}?exp={exp}"
                    f"&sig={self.sign(tid, exp)}",
                    "prompt": task["body"].get("prompt", ""),
                }
            elif task["status"] == "Error":
                out["details"] = {"error": "The generation failed (test: the prompt asked for it)"}
            return out

    def _finish(self, tid: str, task: dict) -> None:
        prompt = task["body"].get("prompt") or ""
        task["finished"] = time.time()
        if "moderate-request" in prompt:
            task["status"] = "Request Moderated"
        elif "moderate-content" in prompt:
            task["status"] = "Content Moderated"
        elif "fail" in prompt:
            task["status"] = "Error"
        else:
            task["status"] = "Ready"
            self.credits -= self.cost  # only Ready tasks are charged
            fmt = task["body"].get("output_format", "png")
            task["ext"] = "jpg" if fmt == "jpeg" else fmt
            buf = io.BytesIO()
            self.render(task).save(buf, format={"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt])
            task["sample"] = buf.getvalue()

    @staticmethod
    def render(task: dict) -> Image.Image:
        b = task["body"]
        W, H, ref = b["width"], b["height"], np.asarray(task["ref"])
        h, w = ref.shape[:2]
        x = b.get("reference_offset_x")
        y = b.get("reference_offset_y")
        x = (W - w) // 2 if x is None else x
        y = (H - h) // 2 if y is None else y
        border = np.concatenate([ref[0], ref[-1], ref[:, 0], ref[:, -1]]).mean(axis=0)
        canvas = np.empty((H, W, 3), np.uint8)
        canvas[:] = border.astype(np.uint8)
        canvas[max(0, y) : y + h, max(0, x) : x + w] = ref[max(0, -y) : H - y, max(0, -x) : W - x]
        return Image.fromarray(canvas)

    def active(self) -> int:
        with self.lock:
            return sum(1 for t in self.tasks.values() if t["status"] == "Pending")

    def close(self) -> None:
        for s in (self.api, self.poll, self.delivery):
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
