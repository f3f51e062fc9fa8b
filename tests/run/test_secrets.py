"""Secrets stay secret: storage credentials, the API key, an HTTP header's token and a
password inside a source URL are found nowhere under the output (every object of it) or
in the run's logs, and never shipped with a submitted job."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from pipeline.run.submit import strip_secrets

from ..bfl_server import BflServer
from ..conftest import BFL_KEY_ENV, write_config, write_manifest
from ..servers import ImageServer


def test_a_submitted_job_ships_no_credential():
    data = {
        "input": {"manifest": "s3://b/m/", "storage_options": {"key": "AKIA1", "secret": "s3cr3t", "anon": False},
                  "http": {"headers": {"Authorization": "Bearer tok", "User-Agent": "shop-bot"}}},
        "output": {"uri": "s3://b/o", "storage_options": {"client_kwargs": {"aws_session_token": "sess"}}},
        "model": {"api": {"key_env": "BFL_API_KEY"}},
    }  # fmt: skip
    shipped, removed = strip_secrets(data)
    assert sorted(removed) == ["input.http.headers.Authorization", "input.storage_options.key",
                               "input.storage_options.secret", "output.storage_options.client_kwargs.aws_session_token"]  # fmt: skip
    text = repr(shipped)
    assert not any(v in text for v in ("AKIA1", "s3cr3t", "Bearer tok", "sess"))
    assert shipped["input"]["http"]["headers"] == {
        "User-Agent": "shop-bot"
    }  # not a credential: kept
    assert (
        shipped["model"]["api"]["key_env"] == "BFL_API_KEY"
    )  # the variable's name, never its value


@pytest.mark.slow
def test_no_secret_reaches_the_output_or_the_logs(tmp_path, photos, s3_bucket, s3_server):
    fs, bucket, _ = s3_bucket
    secret = {name: f"{name}-{uuid.uuid4().hex}" for name in ("key", "secret", "token", "password")}
    opts = {"key": secret["key"], "secret": secret["secret"],
            "client_kwargs": {"endpoint_url": s3_server["endpoint"], "region_name": "eu-west-1"}}  # fmt: skip
    fs.put_file(str(photos["coffee"]), f"{bucket}/images/coffee.png")
    fs.put_file(str(photos["chelsea"]), f"{bucket}/images/chelsea.png")
    cdn_dir = tmp_path / "cdn"
    cdn_dir.mkdir()
    with (
        ImageServer(cdn_dir) as cdn,
        BflServer(key=os.environ[BFL_KEY_ENV], latency=(0.05, 0.1)) as api,
    ):
        gone = cdn.endpoint.replace("http://", f"http://shop:{secret['password']}@") + "/gone.jpg"
        rows = [{"id": "cup", "image": "coffee.png", "aspect_ratio": "4:3"},
                {"id": "cat", "image": "chelsea.png", "aspect_ratio": "1:1"},
                {"id": "gone", "image": gone, "aspect_ratio": "1:1"}]  # fmt: skip
        cfg = write_config(tmp_path / "c.yaml", {
            "input": {"manifest": write_manifest(tmp_path / "m.parquet", rows), "image_root": f"s3://{bucket}/images",
                      "storage_options": opts,
                      "http": {"headers": {"Authorization": f"Bearer {secret['token']}"}, "allow_private_networks": True}},
            "output": {"uri": f"s3://{bucket}/out", "storage_options": opts},
            "model": {"backend": "bfl-api", "api": {"endpoint": api.endpoint, "key_env": BFL_KEY_ENV,
                                                     "poll_interval_s": 0.05, "poll_max_interval_s": 0.1}},
        })  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "pipeline", "run", cfg, "--verbose", "--progress", "line"],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    values = [*secret.values(), os.environ[BFL_KEY_ENV]]
    logs = r.stdout + r.stderr
    assert [v for v in values if v in logs] == []
    fs.invalidate_cache()
    objects = [p for p in fs.find(f"{bucket}/out")]
    assert any(p.endswith("run.json") for p in objects) and any("/images/" in p for p in objects)
    leaked = {p: v for p in objects for v in values if v.encode() in fs.cat_file(p)}
    assert leaked == {}
    run_json = fs.cat_file(f"{bucket}/out/run.json").decode()
    assert '"key": "***"' in run_json and '"Authorization": "***"' in run_json
    import pyarrow.parquet as pq

    meta = {m["id"]: m for m in pq.read_table(f"{bucket}/out/metadata", filesystem=fs).to_pylist()}
    assert meta["cup"]["status"] == "ok" and meta["gone"]["error_code"] == "image_not_found"
    assert (
        "http://***@127.0.0.1" in meta["gone"]["error_message"]
    )  # the URL shown, its user:password not
