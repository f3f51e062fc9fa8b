"""``outpaint serve`` under concurrent clients: requests/s and latency with and without
``@serve.batch``, against the same model called directly in one process, in the same run.

The model: the tiny FLUX Fill test pipeline (random weights, ``make-test-model``) on CPU,
``--steps`` steps; one model replica. Each client runs the hosted API's flow in a loop
(base64 POST, poll the polling_url every 20 ms until Ready, download result.sample); a
request's latency is POST to image downloaded. For each concurrency (``--clients``, e.g.
1, 8, 32) and each ``serve.max_batch_size`` (1: batching off; ``--batch``), ``--requests``
requests (at least 2 per client) after one warm-up request per client.

The direct baseline, in this process: the pipeline's own stages (plan, load, route,
FLUX, write) on the same request, one at a time and ``--batch`` at a time. The server's
overhead per request = its latency with one client minus the direct single call.

    python benchmarks/serve_throughput.py [--clients 1,8,32] [--batch 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import io
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from record import record  # noqa: E402 - benchmarks/ on the path first

PATH = "/v1/flux-tools/outpainting-v1"
KEY = "bench-" + os.urandom(6).hex()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image() -> bytes:
    import skimage
    from PIL import Image

    img = Image.open(os.path.join(os.path.dirname(skimage.__file__), "data", "coffee.png"))
    buf = io.BytesIO()
    img.convert("RGB").resize((192, 128)).save(buf, "PNG")
    return buf.getvalue()


def _http(method: str, url: str, body: dict | None = None, key: str | None = KEY) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", **({"x-key": key} if key else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.read()


def one_request(base: str, body: dict) -> float:
    """The hosted API's client flow; seconds from POST to the image downloaded."""
    t0 = time.perf_counter()
    task = json.loads(_http("POST", base + PATH, body))
    while True:
        answer = json.loads(_http("GET", task["polling_url"]))
        if answer["status"] != "Pending":
            break
        time.sleep(0.02)
    assert answer["status"] == "Ready", answer
    _http("GET", answer["result"]["sample"], key=None)
    return time.perf_counter() - t0


def load(base: str, body: dict, clients: int, requests: int) -> dict:
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: one_request(base, body), range(clients)))  # warm-up
        t0 = time.perf_counter()
        lat = list(pool.map(lambda _: one_request(base, body), range(requests)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {
        "clients": clients,
        "requests": requests,
        "requests_per_s": round(requests / wall, 3),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p95_ms": round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
    }


def direct(cfg, image: bytes, batch: int, repeats: int) -> dict:
    """The stages in this process: ms per request, one at a time and ``batch`` at a time."""
    import pyarrow as pa

    from pipeline import api

    s = api.stages(cfg)
    model = s.Outpaint(*s.outpaint_args)

    def rows(n: int, start: int) -> pa.Table:
        return pa.Table.from_pylist(
            [
                {"id": f"d{start + i}", "image_bytes": image, "width": 256, "height": 256}
                for i in range(n)
            ]
        )

    def run(n: int, start: int) -> float:
        t0 = time.perf_counter()
        out = s.write(model(s.route(s.load(s.plan(rows(n, start))))))
        assert set(out.column("status").to_pylist()) == {"ok"}
        return time.perf_counter() - t0

    run(1, 10_000)  # warm-up
    single = [run(1, i) for i in range(repeats)]
    batched = [run(batch, 1000 + i * batch) / batch for i in range(max(1, repeats // batch))]
    return {
        "single_ms": round(1000 * statistics.median(single), 1),
        f"batch{batch}_ms_per_request": round(1000 * statistics.median(batched), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32, help="timed requests per measurement")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    import ray
    from ray import serve

    from pipeline import api
    from pipeline.serve.app import application

    clients = [int(c) for c in args.clients.split(",")]
    work = tempfile.mkdtemp(prefix="servebench-")
    os.environ["OUTPAINT_SERVE_KEYS"] = KEY
    try:
        model_dir = api.make_test_model(os.path.join(work, "tiny-flux"))
        image = _image()
        body = {"input_image": base64.b64encode(image).decode(), "width": 256, "height": 256}

        def config(max_batch: int):
            return api.serve_config(
                {
                    "model": {
                        "backend": "flux-fill",
                        "path": model_dir,
                        "dtype": "float32",
                        "device": "cpu",
                        "steps": args.steps,
                    },
                    "output": {"uri": os.path.join(work, f"out-{max_batch}")},
                    "runtime": {"batch_size": max_batch},
                    "serve": {
                        "max_batch_size": max_batch,
                        "batch_wait_s": 0.02,
                        "max_active_per_key": 1024,  # one key for every client
                    },
                }
            )

        results = {"direct": direct(config(args.batch), image, args.batch, 16), "served": []}
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
        port = _port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        for max_batch in (1, args.batch):
            serve.run(application(config(max_batch)), name="outpaint", route_prefix="/")
            for n in clients:
                row = load(base, body, n, max(args.requests, 2 * n))
                row["max_batch_size"] = max_batch
                results["served"].append(row)
                print(json.dumps(row), flush=True)
        one = next(r for r in results["served"] if r["clients"] == 1 and r["max_batch_size"] == 1)
        results["overhead_ms_per_request"] = round(
            one["p50_ms"] - results["direct"]["single_ms"], 1
        )
        serve.shutdown()
        ray.shutdown()
        record(results, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
