"""Shared fixtures: real photos, manifests, configs, a moto S3 server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import config as config_mod

# The hosted-API tests' keys, in the environment before the session's Ray starts, so its
# workers (the API actor) find them there, as a cluster's workers find theirs.
BFL_KEY_ENV, BFL_WRONG_KEY_ENV = "OUTPAINT_TEST_BFL_KEY", "OUTPAINT_TEST_BFL_WRONG_KEY"
os.environ.setdefault(BFL_KEY_ENV, "bfl-test-" + os.urandom(8).hex())
os.environ.setdefault(BFL_WRONG_KEY_ENV, "not-the-key")


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """scikit-image's bundled photos (shipped in the wheel: no download)."""
    import skimage

    d = Path(skimage.__file__).parent / "data"
    names = {
        "astronaut": "astronaut.png",
        "coffee": "coffee.png",
        "chelsea": "chelsea.png",
        "camera": "camera.png",
        "rocket": "rocket.jpg",
        "retina": "retina.jpg",
    }
    out = {k: d / v for k, v in names.items()}
    assert all(p.exists() for p in out.values())
    return out


def write_manifest(path, rows: list[dict], schema: pa.Schema | None = None, filesystem=None) -> str:
    """Rows (dicts; missing keys = null) -> Parquet; column order of first appearance."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    table = (
        pa.table({c: [r.get(c) for r in rows] for c in cols})
        if schema is None
        else pa.Table.from_pylist(rows, schema=schema)
    )
    pq.write_table(table, str(path), filesystem=filesystem)
    return str(path)


def make_config(tmp_path, manifest: str, **sections) -> config_mod.Config:
    data = {"input": {"manifest": manifest}, "output": {"uri": str(tmp_path / "out")}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return config_mod.from_dict(data)


def write_config(path, data: dict) -> str:
    Path(path).write_text(yaml.safe_dump(data))
    return str(path)


def relay(handler, host: str, port: int, body: bytes, timeout: float = 60) -> None:
    """Forward a ``BaseHTTPRequestHandler``'s request to host:port and write the answer
    back (the loopback fault proxies of the tests)."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
    conn.request(handler.command, handler.path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    handler.send_response(resp.status)
    for k, v in resp.getheaders():
        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
            handler.send_header(k, v)
    # HEAD keeps the object's length; other answers carry exactly their body
    length = resp.getheader("Content-Length") if handler.command == "HEAD" else str(len(data))
    handler.send_header("Content-Length", length or "0")
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)
    conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real moto S3 server process on 127.0.0.1; yields storage_options for s3fs."""
    pytest.importorskip("s3fs")
    port = _free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    opts = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"},
    }
    yield {"endpoint": endpoint, "storage_options": opts}
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket per test; yields (s3fs filesystem, bucket name, storage_options)."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server["storage_options"])
    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[
        :40
    ].strip("-")
    fs.mkdir(name)
    fs.invalidate_cache()
    yield fs, name, s3_server["storage_options"]
    fs.rm(name, recursive=True)


@pytest.fixture
def s3_counted(s3_server, s3_bucket):
    """``s3_bucket`` whose storage options go through a request-counting proxy:
    (fs, bucket, counted storage_options, proxy)."""
    from .servers import CountingProxy, counted_options

    fs, bucket, opts = s3_bucket
    proxy = CountingProxy(s3_server["endpoint"])
    yield fs, bucket, counted_options(opts, proxy), proxy
    proxy.close()


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole test session (2 CPUs, like CI)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def read_png(path):
    """Any image file as an H x W x 3 uint8 array."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    """A tiny FLUX Fill pipeline with random weights, saved with save_pretrained."""
    pytest.importorskip("diffusers")
    from pipeline.backends.testmodel import make_test_model

    return make_test_model(str(tmp_path_factory.mktemp("models") / "tiny-flux"))


@pytest.fixture(scope="session")
def tiny_inpaint(tmp_path_factory):
    """Tiny random-weight inpainting checkpoints of three families (model.backend:
    diffusers), saved with save_pretrained beside a model card: family -> directory."""
    pytest.importorskip("diffusers")
    from pipeline.backends.tinyinpaint import FAMILIES, make_tiny_inpaint

    root = tmp_path_factory.mktemp("inpaint-models")
    return {f: make_tiny_inpaint(str(root / f), f) for f in FAMILIES}
