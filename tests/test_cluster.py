"""Cluster jobs: `outpaint submit` to a real two-node Ray cluster on this machine, and the
Kubernetes manifests in jobs/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from .conftest import write_config, write_manifest

JOBS = Path(__file__).parent.parent / "jobs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes():
    """`ray start --head` plus a second `ray start --address` node: separate raylets and
    object stores, on 127.0.0.1, with an isolated HOME and temp dir and token auth off (so
    nothing a developer's ~/.ray holds matters). Torn down by killing exactly its processes."""
    import psutil
    import ray

    ray.shutdown()  # this process joins the cluster under test only through the job server
    work = tempfile.mkdtemp(prefix="ro", dir="/tmp")  # short: unix socket paths are limited
    home = os.path.join(work, "home")
    os.makedirs(home)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", HOME=home, RAY_ADDRESS="", RAY_USAGE_STATS_ENABLED="0")
    gcs, dash = _free_port(), _free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={work}/t", "--disable-usage-stats"]
    try:
        subprocess.run(["ray", "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={dash}", "--include-dashboard=true", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        subprocess.run(["ray", "start", f"--address=127.0.0.1:{gcs}", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        yield {"env": env, "address": f"http://127.0.0.1:{dash}", "gcs": f"127.0.0.1:{gcs}"}
    finally:
        roots = [p for p in psutil.process_iter(["cmdline"]) if work in " ".join(p.info["cmdline"] or [])]
        procs = {p.pid: p for r in roots for p in [r, *r.children(recursive=True)]}
        for p in procs.values():
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(procs.values()), timeout=30)


@pytest.mark.slow
def test_submit_to_a_two_node_cluster(tmp_path, photos, s3_server, two_nodes):
    import s3fs

    opts = s3_server["storage_options"]
    fs = s3fs.S3FileSystem(**opts)
    bucket = "cluster-job"
    fs.mkdir(bucket)
    names = ("coffee", "chelsea", "camera")
    for n in names:
        fs.put_file(str(photos[n]), f"{bucket}/images/{n}.png")
    rows = [{"id": f"n{i:02d}", "image": f"{names[i % 3]}.png", "width": 640, "height": 640} for i in range(16)]
    fs.put_file(write_manifest(tmp_path / "m.parquet", rows), f"{bucket}/manifests/day=1/part-0.parquet")
    cfg = write_config(tmp_path / "c.yaml", {
        "input": {"manifest": f"s3://{bucket}/manifests/", "image_root": f"s3://{bucket}/images",
                  "storage_options": opts},
        "output": {"uri": f"s3://{bucket}/out", "storage_options": opts},
        "runtime": {"block_rows": 1}})
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "pipeline", "submit", cfg, "--address", two_nodes["address"],
                        "--timeout", "400"], capture_output=True, text=True, timeout=500, env=two_nodes["env"])
    assert r.returncode == 0 and "SUCCEEDED" in r.stderr, r.stderr[-3000:]
    fs.invalidate_cache()
    meta = pq.read_table(f"{bucket}/out/metadata", filesystem=fs)
    assert meta.num_rows == 16 and set(meta.column("status").to_pylist()) == {"ok"}
    assert len(fs.ls(f"{bucket}/out/images")) == 16
    nodes = set(meta.column("worker_node").to_pylist())
    assert len(nodes) == 2 and None not in nodes  # both nodes wrote images
    assert time.time() - t0 < 450


def test_submit_refuses_a_local_output(tmp_path):
    m = write_manifest(tmp_path / "m.parquet", [{"id": "a", "image": "x.png", "aspect_ratio": "1:1"}])
    c = write_config(tmp_path / "c.yaml", {"input": {"manifest": m}, "output": {"uri": str(tmp_path / "out")}})
    r = subprocess.run([sys.executable, "-m", "pipeline", "submit", c, "--address", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "is a local path" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# Required fields of the KubeRay v1 CRDs (rayjobs.ray.io / rayclusters.ray.io, openAPIV3Schema):
# rayClusterSpec needs headGroupSpec; headGroupSpec needs template (and rayStartParams before
# KubeRay 1.4); each workerGroupSpecs item needs groupName and template (+ rayStartParams
# before 1.4); a pod template's spec needs containers, each with a name. batch/v1 CronJob:
# spec.schedule and spec.jobTemplate, whose pod spec needs containers.
def _pod_ok(template: dict) -> None:
    containers = template["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)


def test_rayjob_manifest_has_what_kuberay_requires():
    doc = yaml.safe_load((JOBS / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    spec = doc["spec"]
    assert spec["entrypoint"].startswith("outpaint run ")
    rc = spec["rayClusterSpec"]
    head = rc["headGroupSpec"]
    assert "rayStartParams" in head
    _pod_ok(head["template"])
    assert rc["enableInTreeAutoscaling"] is True
    groups = rc["workerGroupSpecs"]
    assert {g["groupName"] for g in groups} == {"gpu", "cpu"}
    for g in groups:
        assert "rayStartParams" in g and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        _pod_ok(g["template"])
    gpu = next(g for g in groups if g["groupName"] == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] > 1  # an autoscaling range
    # the entrypoint's config keys exist: the same loader validates them
    from pipeline import config as config_mod

    config_mod.apply_overrides({}, ["runtime.ray_address=auto"])


def test_cronjob_manifest_has_what_kubernetes_requires():
    doc = yaml.safe_load((JOBS / "cronjob.yaml").read_text())
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]
    assert pod["spec"]["restartPolicy"] in ("Never", "OnFailure")
    _pod_ok(pod)
    assert pod["spec"]["containers"][0]["command"][:2] == ["outpaint", "submit"]
