"""``outpaint serve`` for real: Ray Serve on the session's local Ray, real HTTP on loopback,
the documented client flow (base64 POST, poll the returned polling_url, download
result.sample), every planner rule as a 422, 403, 413, 429, signed URLs, restarts, and
``outpaint run`` with ``model.backend: bfl-api`` pointed at it."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pipeline import api
from pipeline.io.folder import OutputFolder
from pipeline.serve.tasks import PENDING, new_task_id

from ..conftest import BFL_KEY_ENV, _free_port, write_manifest
from ..fuzz import SERVER, bodies

pytestmark = [pytest.mark.ray, pytest.mark.slow]
KEY = os.environ[BFL_KEY_ENV]
PATH = "/v1/flux-tools/outpainting-v1"
ROOT = Path(__file__).parents[2]


def call(method: str, url: str, body=None, key: str | None = KEY, raw: bytes | None = None):
    """(status, parsed JSON or bytes, headers) of one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["x-key"] = key
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, payload, h = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        status, payload, h = e.code, e.read(), dict(e.headers)
    is_json = h.get("content-type", "").startswith("application/json")
    return status, json.loads(payload) if is_json else payload, h


def poll(url: str, timeout: float = 60.0, key: str = KEY) -> dict:
    """The SDK's loop: GET the polling_url as given until the task leaves Pending."""
    end = time.time() + timeout
    while time.time() < end:
        status, answer, _ = call("GET", url, key=key)
        assert status == 200
        if answer["status"] != PENDING:
            return answer
        time.sleep(0.1)
    raise AssertionError(f"still Pending after {timeout} s")


def encoded(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def http(ray_local):
    """Ray Serve's HTTP proxy on a free loopback port, for this module's applications."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def deploy(http: str, out: Path, monkeypatch, **serve_keys) -> str:
    """``outpaint serve``'s application for a classical-backend config, (re)deployed."""
    from ray import serve

    from pipeline.serve.app import application

    monkeypatch.setenv("OUTPAINT_SERVE_KEYS", f"{KEY},second-key")
    # half a CPU for the model replica: the session's Ray has 2, and a batch run shares them
    sections = {"cpus_per_replica": 0.5, **serve_keys}
    cfg = api.serve_config(
        {"model": {"backend": "classical"}, "output": {"uri": str(out)}, "serve": sections}
    )
    serve.run(application(cfg, verbose=True), name="outpaint", route_prefix="/")
    return http


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    img = np.asarray(Image.open(photos["coffee"]).convert("RGB"))
    return np.ascontiguousarray(img[100:292, 150:406])  # 256 x 192


@pytest.fixture(scope="module")
def server(http, tmp_path_factory, photo):
    mp = pytest.MonkeyPatch()
    out = tmp_path_factory.mktemp("served")
    deploy(http, out, mp)
    yield http, out
    mp.undo()


# ------------------------------------------------------------------ the client flow


@pytest.mark.parametrize(
    "fields,at",
    [
        (
            {"width": 512, "height": 320, "reference_offset_x": 40, "reference_offset_y": 100},
            (40, 100),
        ),
        ({"width": 400, "height": 400}, ((400 - 256) // 2, (400 - 192) // 2)),  # null: centred
    ],
)
def test_the_documented_client_flow(server, photo, fields, at):
    base, out = server
    status, task, _ = call("POST", base + PATH, {"input_image": b64(encoded(photo)), **fields})
    assert status == 200, task
    assert set(task) == {"id", "polling_url", "cost", "input_mp", "output_mp"}
    assert task["polling_url"] == f"{base}/v1/get_result?id={task['id']}"
    assert task["input_mp"] == round(256 * 192 / 1e6, 4)
    assert task["output_mp"] == round(fields["width"] * fields["height"] / 1e6, 4)
    done = poll(task["polling_url"])
    assert done["status"] == "Ready", done
    sample = done["result"]["sample"]
    assert sample.startswith(f"{base}/v1/delivery/{task['id']}.png?exp=")
    status, data, headers = call("GET", sample, key=None)  # a signed URL needs no key
    assert status == 200 and headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert img.shape == (fields["height"], fields["width"], 3)
    x, y = at
    assert np.array_equal(img[y : y + 192, x : x + 256], photo)  # the reference, exact
    assert img[:, :x].std() > 3  # the canvas was filled, not left blank
    # the same bytes are in the output store, as outpaint run writes images
    assert (out / "images" / f"{task['id']}.png").read_bytes() == data


def test_fast_mode_and_webp(server, photo):
    """Fast mode's placement (offsets on the latent grid) and the newer page's webp."""
    base, _ = server
    body = {"input_image": b64(encoded(photo)), "width": 512, "height": 384, "mode": "fast"}
    body.update(reference_offset_x=128, reference_offset_y=96, output_format="webp")
    status, task, _ = call("POST", base + PATH, body)
    assert status == 200, task
    done = poll(task["polling_url"])
    status, data, headers = call("GET", done["result"]["sample"], key=None)
    assert status == 200 and headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "WEBP" and im.size == (512, 384)


def test_jpeg_output_and_get_result_by_id(server, photo):
    base, _ = server
    body = {"input_image": b64(encoded(photo, "JPEG")), "width": 320, "height": 320}
    status, task, _ = call("POST", base + PATH, {**body, "output_format": "jpeg"})
    assert status == 200
    done = poll(f"{base}/v1/get_result?id={task['id']}")
    status, data, headers = call("GET", done["result"]["sample"], key=None)
    assert headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(data)).size == (320, 320)


# ------------------------------------------------------------------ 422: the planner's rules


CASES = [
    ((64, 64), {"width": 63, "height": 64}),
    ((64, 64), {"width": 2049, "height": 2048}),
    ((64, 64), {"width": 100, "height": 100, "reference_offset_x": 37, "reference_offset_y": 0}),
    (
        (200, 100),
        {"width": 300, "height": 300, "reference_offset_x": -50, "reference_offset_y": 10},
    ),
    (
        (200, 100),
        {
            "width": 300,
            "height": 300,
            "reference_offset_x": -1000,
            "reference_offset_y": 0,
            "auto_crop": True,
        },
    ),
    (
        (63, 200),
        {
            "width": 1024,
            "height": 1024,
            "reference_offset_x": 0,
            "reference_offset_y": 0,
            "mode": "fast",
        },
    ),
    (
        (801, 100),
        {
            "width": 1024,
            "height": 1024,
            "reference_offset_x": 0,
            "reference_offset_y": 0,
            "mode": "fast",
        },
    ),
    ((1000, 1000), {"width": 2048, "height": 2048, "mode": "fast"}),
    ((64, 64), {"width": 100, "height": 100, "reference_offset_x": 36, "reference_offset_y": 36}),
    ((500, 500), {"width": 300, "height": 200, "auto_crop": True}),
]
EXPECTED = [
    "canvas_too_small",
    "canvas_too_large",
    "out_of_bounds",
    "out_of_bounds",
    "no_overlap",
    "reference_too_small",
    "reference_aspect",
    "aligned_canvas_too_large",
    None,
    None,
]


def test_every_planner_rule_is_a_422_with_the_same_code(server, tmp_path):
    """The batch planner (``outpaint plan`` on a manifest of the same images) and the
    server judge each request alike: one geometry, two front ends."""
    base, _ = server
    rng = np.random.default_rng(0)
    rows, bodies = [], []
    for i, ((w, h), fields) in enumerate(CASES):
        data = encoded(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        path = tmp_path / f"s{i}.png"
        path.write_bytes(data)
        rows.append({"id": f"r{i}", "image": str(path), **fields})
        bodies.append({"input_image": b64(data), **fields})
    cfg = {"output": {"uri": str(tmp_path / "plan")}}
    planned = api.plan(rows, cfg).to_pylist()
    by_id = {r["id"]: r["error_code"] for r in planned}
    assert [by_id[f"r{i}"] for i in range(len(rows))] == EXPECTED
    for body, code in zip(bodies, EXPECTED):
        status, answer, _ = call("POST", base + PATH, body)
        if code is None:
            assert status == 200 and "id" in answer
            continue
        assert status == 422, (code, answer)
        (detail,) = answer["detail"]
        assert detail["type"] == code and detail["loc"][0] == "body" and detail["msg"]


def test_unknown_fields_bad_base64_and_non_images_are_422(server, photo):
    base, _ = server
    good = {"input_image": b64(encoded(photo)), "width": 300, "height": 300}
    status, answer, _ = call("POST", base + PATH, {**good, "bbox_x1": 10})
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "bbox_x1"]
    assert "reference_offset_x" in answer["detail"][0]["msg"]
    status, answer, _ = call("POST", base + PATH, {**good, "seed": 1})  # the API has no seed
    assert status == 422 and answer["detail"][0]["type"] == "extra_forbidden"
    status, answer, _ = call("POST", base + PATH, {**good, "input_image": "%%% not base64"})
    assert status == 422 and answer["detail"][0]["type"] == "base64_decode"
    status, answer, _ = call("POST", base + PATH, {**good, "input_image": b64(b"GIF? no, text")})
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "input_image"]
    status, answer, _ = call("POST", base + PATH, raw=b"{not json")
    assert status == 422 and answer["detail"][0]["type"] == "json_invalid"
    status, answer, _ = call("POST", base + PATH, {"width": 64})
    assert status == 422 and {d["loc"][1] for d in answer["detail"]} == {"input_image", "height"}


def test_an_image_corrupt_past_its_header_ends_error_not_500(server, photo):
    base, _ = server
    data = encoded(photo)
    status, task, _ = call(
        "POST",
        base + PATH,
        {"input_image": b64(data[: len(data) // 2]), "width": 300, "height": 300},
    )
    assert status == 200  # the header is whole: the decode finds the rest missing
    done = poll(task["polling_url"])
    assert done["status"] == "Error" and done["details"]["code"] == "image_unreadable"
    assert done["result"] is None


# ------------------------------------------------------------------ keys and limits


def test_keys_are_checked_on_every_endpoint(server, photo):
    base, _ = server
    body = {"input_image": b64(encoded(photo)), "width": 300, "height": 300}
    forbidden = {"detail": "Not authenticated - Invalid Authentication"}
    for key in (None, "wrong-key", ""):
        assert call("POST", base + PATH, body, key=key)[:2] == (403, forbidden)
        assert call("GET", f"{base}/v1/get_result?id={new_task_id()}", key=key)[:2] == (
            403,
            forbidden,
        )
        assert call("GET", base + "/v1/credits", key=key)[:2] == (403, forbidden)
    assert call("GET", base + "/v1/credits", key="second-key")[:2] == (
        200,
        {"credits": 1_000_000.0},
    )
    status, answer, _ = call("GET", f"{base}/v1/get_result?id={new_task_id()}")
    assert status == 200 and answer["status"] == "Task not found"
    status, answer, _ = call("GET", f"{base}/v1/get_result?id=../../etc/passwd")
    assert answer["status"] == "Task not found"


def test_health(server):
    base, _ = server
    assert call("GET", base + "/-/healthz", key=None)[:2] == (200, b"success")


# ------------------------------------------------------------------ outpaint run against it


def test_outpaint_run_with_the_bfl_api_backend_against_the_server(server, tmp_path, photos):
    base, _ = server
    rows = []
    for i, name in enumerate(["coffee", "chelsea", "astronaut", "rocket"]):
        img = np.asarray(Image.open(photos[name]).convert("RGB"))
        path = tmp_path / f"{name}.png"
        Image.fromarray(img[: 160 + 8 * i, : 200 + 16 * i]).save(path)
        rows.append({"id": name, "image": str(path), "width": 320 + 16 * i, "height": 256})
    cfg = {
        "input": {"manifest": write_manifest(tmp_path / "m.parquet", rows)},
        "output": {"uri": str(tmp_path / "out")},
        "model": {
            "backend": "bfl-api",
            "api": {"endpoint": base, "key_env": BFL_KEY_ENV, "poll_interval_s": 0.1},
        },
    }
    result = api.run(cfg, quiet=True)
    assert result.by_status == {"ok": 4, "rejected": 0, "failed": 0}
    meta = {r["id"]: r for r in result.metadata().to_pylist()}
    for i, row in enumerate(rows):
        r = meta[row["id"]]
        assert r["api_task_id"] and r["cost_credits"] == 0.0
        with Image.open(r["output_uri"]) as im:
            assert im.size == (320 + 16 * i, 256)


# ------------------------------------------------------------------ the command


def test_outpaint_serve_command(tmp_path, photo):
    """``outpaint serve configs/serve.yaml``: its own Ray, up, answering, stopped by Ctrl-C."""
    port = _free_port()
    env = {**os.environ, "OUTPAINT_SERVE_KEYS": "cli-key", "RAY_ADDRESS": ""}
    args = [sys.executable, "-m", "pipeline", "serve", "configs/serve.yaml", "--port", str(port)]
    args += ["--set", f"output.uri={tmp_path / 'out'}", "--set", "runtime.num_cpus=2"]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"outpaint serve: http://127.0.0.1:{port}{PATH}"), (
            line,
            proc.stderr.read() if proc.poll() is not None else "",
        )
        base = f"http://127.0.0.1:{port}"
        body = {"input_image": b64(encoded(photo)), "width": 320, "height": 240}
        status, task, _ = call("POST", base + PATH, body, key="cli-key")
        assert status == 200
        done = poll(task["polling_url"], key="cli-key")
        assert done["status"] == "Ready"
        status, data, _ = call("GET", done["result"]["sample"], key=None)
        assert Image.open(io.BytesIO(data)).size == (320, 240)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert "cli-key" not in proc.stderr.read()  # keys are never logged


def test_outpaint_serve_without_keys_fails_fast(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUTPAINT_SERVE_KEYS"}
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "configs/serve.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "OUTPAINT_SERVE_KEYS" in r.stderr and "keys_file" in r.stderr


# ------------------------------------------------------------------ limits, expiry, restarts
# last: it redeploys the application the tests above share


def test_active_limit_expiry_and_restart(http, tmp_path, photo, monkeypatch):
    """One application, redeployed: 429 past the key's active tasks (with Retry-After),
    413 past the body limit, a result URL that expires, a finished result that survives a
    restart, and a task an earlier start left pending ending Error."""
    out = tmp_path / "out"
    slow = dict(max_active_per_key=2, batch_wait_s=3.0, max_batch_size=8, result_ttl_s=2)
    base = deploy(http, out, monkeypatch, max_body_bytes=200_000, **slow)
    body = {"input_image": b64(encoded(photo)), "width": 300, "height": 300}
    first = [call("POST", base + PATH, body) for _ in range(2)]
    assert [s for s, _, _ in first] == [200, 200]
    status, answer, headers = call("POST", base + PATH, body)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert "max_active_per_key = 2" in answer["detail"]
    status, third, _ = call("POST", base + PATH, body, key="second-key")  # limits are per key
    assert status == 200
    huge = {**body, "input_image": b64(os.urandom(160_000))}
    assert call("POST", base + PATH, huge)[0] == 413
    done = poll(first[0][1]["polling_url"])
    assert done["status"] == "Ready"
    # the three tasks submitted within batch_wait_s went to the model in one call
    assert poll(third["polling_url"], key="second-key")["status"] == "Ready"  # its key's task
    from ray import serve

    model = serve.get_deployment_handle("Outpainter", app_name="outpaint")
    assert model.stats.remote().result() == {"calls": 1}
    status, image, _ = call("GET", done["result"]["sample"], key=None)
    assert status == 200
    tampered = done["result"]["sample"].replace("sig=", "sig=0")
    assert call("GET", tampered, key=None)[:2] == (403, {"detail": "Invalid signature"})
    expires = int(done["result"]["sample"].split("exp=")[1].split("&")[0])
    assert done["result"]["end_time"] + 2 <= expires <= done["result"]["end_time"] + 3
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    assert call("GET", done["result"]["sample"], key=None)[:2] == (
        403,
        {"detail": "Request has expired"},
    )
    assert call("POST", base + PATH, body)[0] == 200  # the slots came back
    # a crash: the pending state an earlier start wrote, as it wrote it
    lost = new_task_id()
    pending = {"id": lost, "status": PENDING, "submitted_at": time.time(), "server": "crashed"}
    OutputFolder(str(out)).put(f"serve/pending/{lost}.json", json.dumps(pending).encode())
    deploy(http, out, monkeypatch)  # a new start: nothing of the old one in memory
    again = poll(first[0][1]["polling_url"])
    assert again["status"] == "Ready"
    status, same, _ = call("GET", again["result"]["sample"], key=None)
    assert status == 200 and same == image
    status, gone, _ = call("GET", f"{base}/v1/get_result?id={lost}")
    assert gone["status"] == "Error" and gone["details"]["code"] == "server_restarted"


# ------------------------------------------------------------------ hostile clients (issue 37)


def test_malformed_bodies_are_4xx_never_500(server, photo):
    """Each of these was a 500: a body that is not UTF-8, a lone surrogate, JSON nested
    50,000 deep, a 5,000-digit integer; and loose types are 422 (strict as documented)."""
    base, _ = server
    good = {"input_image": b64(encoded(photo)), "width": 300, "height": 300}
    prefix = json.dumps(good)[:-1]
    raws = {
        "latin-1 byte": (prefix + ', "prompt": "caf\xe9"}').encode("latin-1"),
        "garbage": b"\xff\xfe\xfd garbage",
        "lone surrogate": (prefix + ', "prompt": "a\\ud800b"}').encode(),
        "deep": b"[" * 50_000 + b"]" * 50_000,
        "huge int": (prefix[: prefix.index('"width"')] + '"width": 1' + "0" * 5000 + ', "height": 300}').encode(),
        "NaN": (prefix + ', "reference_offset_x": NaN}').encode(),
    }  # fmt: skip
    for name, raw in raws.items():
        status, answer, _ = call("POST", base + PATH, raw=raw)
        assert status == 422, (name, status, answer)
        assert answer["detail"][0]["type"] in ("json_invalid", "string_type"), (name, answer)
    loose = {
        "width": "1024",
        "height": 1024.0,
        "auto_crop": "yes",
        "reference_offset_x": True,
    }
    for field, value in loose.items():
        status, answer, _ = call("POST", base + PATH, {**good, field: value})
        assert status == 422 and answer["detail"][0]["loc"] == ["body", field], (field, answer)
    assert call("POST", base + PATH, {**good, "auto_crop": 1})[0] == 422
    # a delivery URL whose exp is not plain ASCII digits
    for exp in ("%C2%B2", "%E2%91%A0", "9" * 5000):
        status, answer, _ = call("GET", f"{base}/v1/delivery/x.png?exp={exp}&sig=ab", key=None)
        assert status == 403 and answer == {"detail": "Invalid signature"}, exp
    # and the server still answers a valid request
    status, answer, _ = call("POST", base + PATH, good)
    assert status == 200 and poll(answer["polling_url"])["status"] == "Ready"


def test_a_task_is_its_key_s_alone(server, photo):
    base, _ = server
    body = {"input_image": b64(encoded(photo)), "width": 300, "height": 300}
    status, submitted, _ = call("POST", base + PATH, body)
    assert status == 200
    mine = poll(submitted["polling_url"])
    assert mine["status"] == "Ready"
    status, theirs, _ = call("GET", submitted["polling_url"], key="second-key")
    assert status == 200 and theirs["status"] == "Task not found" and theirs["result"] is None
    unknown = call("GET", f"{base}/v1/get_result?id={new_task_id()}", key="second-key")[1]
    assert {k: v for k, v in theirs.items() if k != "id"} == {
        k: v for k, v in unknown.items() if k != "id"
    }


def test_a_poisoned_host_header_is_refused(server, photo):
    base, _ = server
    body = json.dumps({"input_image": b64(encoded(photo)), "width": 300, "height": 300}).encode()
    headers = {"content-type": "application/json", "x-key": KEY, "Host": "evil.example"}
    req = urllib.request.Request(base + PATH, data=body, method="POST", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    assert e.value.code == 400 and b"serve.public_url" in e.value.read()


def test_a_burst_holds_the_per_key_limit_and_422_comes_before_429(
    http, tmp_path, photo, monkeypatch
):
    """32 submissions released together against a limit of 24: exactly 24 accepted (the
    slot is reserved before planning); at the limit a broken request is still a 422."""
    import threading

    slow = dict(max_active_per_key=24, batch_wait_s=4.0, max_batch_size=64)
    base = deploy(http, tmp_path / "out", monkeypatch, **slow)
    body = {"input_image": b64(encoded(photo)), "width": 300, "height": 300}
    barrier = threading.Barrier(32)
    codes: list[int] = []
    lock = threading.Lock()

    def one():
        barrier.wait()
        status = call("POST", base + PATH, body)[0]
        with lock:
            codes.append(status)

    threads = [threading.Thread(target=one) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(codes) == [200] * 24 + [429] * 8, codes
    broken = {**body, "input_image": "%%% not base64"}
    status, answer, _ = call("POST", base + PATH, broken)
    assert status == 422 and answer["detail"][0]["type"] == "base64_decode"
    assert call("POST", base + PATH, body)[0] == 429


def test_a_stalled_body_is_cut_at_the_read_timeout(http, tmp_path, photo, monkeypatch):
    import socket

    base = deploy(http, tmp_path / "out", monkeypatch, read_timeout_s=1.0)
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nx-key: {KEY}\r\n"
            "content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
        )
        s.sendall(head.encode() + b'{"width": 1')
        start = time.time()
        reply = s.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 408"), reply[:200]
    assert time.time() - start < 20


@SERVER
@given(
    body=bodies(),
    header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    exp=st.text(max_size=20),
    sig=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=70),
)
def test_generated_requests_are_never_a_5xx(server, body, header, exp, sig):
    """Property: whatever the body, a header's value or a delivery URL's query, the
    answer is a 2xx or a 4xx, and the server goes on answering."""
    from urllib.parse import quote

    base, _ = server
    for key in (KEY, header or None):
        status = call("POST", base + PATH, raw=body, key=key)[0]
        assert status < 500, (body[:80], key)
    url = f"{base}/v1/delivery/x.png?exp={quote(exp)}&sig={quote(sig)}"
    assert call("GET", url, key=None)[0] < 500
    assert call("GET", f"{base}/v1/get_result?id={quote(exp)}")[0] < 500
    # and it still answers a valid request
    assert call("GET", f"{base}/v1/credits")[:2] == (200, {"credits": 1_000_000.0})


def test_sigterm_finishes_the_accepted_tasks_then_exits(tmp_path, photo):
    """A rolling update's SIGTERM with tasks in flight: each accepted task is finished and
    recorded Ready before the process exits, and a new start (its recovery) finds them
    Ready with their images, and no image that no Ready task points to."""
    from pipeline.serve.tasks import READY, TaskStore

    port = _free_port()
    out = tmp_path / "out"
    env = {**os.environ, "OUTPAINT_SERVE_KEYS": "cli-key", "RAY_ADDRESS": ""}
    args = [sys.executable, "-m", "pipeline", "serve", "configs/serve.yaml", "--port", str(port)]
    args += ["--set", f"output.uri={out}", "--set", "runtime.num_cpus=2"]
    args += ["--set", "serve.batch_wait_s=3", "--set", "serve.max_batch_size=16"]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("outpaint serve:"), (line, proc.poll())
        base = f"http://127.0.0.1:{port}"
        body = {"input_image": b64(encoded(photo)), "width": 320, "height": 240}
        ids = [call("POST", base + PATH, body, key="cli-key")[1]["id"] for _ in range(5)]
        proc.send_signal(signal.SIGTERM)  # the tasks wait for their batch: all in flight
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = TaskStore(OutputFolder(str(out)), "a-new-start", 900)
    store.recover()
    tasks = {i: store.get(i) for i in ids}
    assert {t["status"] for t in tasks.values()} == {READY}, tasks
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == sorted(t["result_name"] for t in tasks.values())
    assert not list((out / "serve" / "pending").glob("*.json"))
