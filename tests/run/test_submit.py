"""Cluster jobs: `outpaint submit` to a real two-node Ray cluster on this machine, and the
Kubernetes manifests in jobs/."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ..conftest import relay, write_config, write_manifest

JOBS = Path(__file__).parents[2] / "jobs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bare_venv(root: str) -> str:
    """A virtualenv that sees this interpreter's packages (Ray, pyarrow...) but not the
    outpaint package: a .pth line adds site-packages without running its .pth files,
    so the editable install's finder is never loaded."""
    import sysconfig

    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", root], check=True, capture_output=True
    )
    py = os.path.join(root, "bin", "python")
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(purelib, "outer.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    return py


@pytest.fixture
def two_nodes(request):
    """`ray start --head` plus a second `ray start --address` node: separate raylets and
    object stores, on 127.0.0.1, with an isolated HOME and temp dir and token auth off (so
    nothing a developer's ~/.ray holds matters). S3 credentials come from the nodes'
    environment, as a Kubernetes Secret would give them. With ``bare_worker`` the worker
    node runs from a virtualenv without outpaint. Torn down by killing exactly its processes."""
    import psutil
    import ray

    ray.shutdown()  # this process joins the cluster under test only through the job server
    work = tempfile.mkdtemp(prefix="ro", dir="/tmp")  # short: unix socket paths are limited
    home = os.path.join(work, "home")
    os.makedirs(home)
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        HOME=home,
        RAY_ADDRESS="",
        RAY_USAGE_STATS_ENABLED="0",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    gcs, dash = _free_port(), _free_port()
    common = [
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        f"--temp-dir={work}/t",
        "--disable-usage-stats",
    ]
    worker_py = (
        _bare_venv(os.path.join(work, "venv"))
        if getattr(request, "param", None) == "bare_worker"
        else sys.executable
    )
    ray_cli = ["-m", "ray.scripts.scripts"]
    try:
        subprocess.run(
            [
                sys.executable,
                *ray_cli,
                "start",
                "--head",
                f"--port={gcs}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                "--include-dashboard=true",
                *common,
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
            cwd=work,
        )
        subprocess.run(
            [worker_py, *ray_cli, "start", f"--address=127.0.0.1:{gcs}", *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
            cwd=work,
        )
        yield {
            "env": env,
            "address": f"http://127.0.0.1:{dash}",
            "gcs": f"127.0.0.1:{gcs}",
            "worker_py": worker_py,
            "work": work,
        }
    finally:
        roots = [
            p for p in psutil.process_iter(["cmdline"]) if work in " ".join(p.info["cmdline"] or [])
        ]
        procs = {p.pid: p for r in roots for p in [r, *r.children(recursive=True)]}
        for p in procs.values():
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(list(procs.values()), timeout=30)


def _s3_job(tmp_path, photos, s3_server, bucket: str, rows: int, **runtime) -> str:
    """Sources, a manifest and a config in moto S3; returns the config path."""
    import s3fs

    opts = s3_server["storage_options"]
    fs = s3fs.S3FileSystem(**opts)
    fs.mkdir(bucket)
    names = ("coffee", "chelsea", "camera")
    for n in names:
        fs.put_file(str(photos[n]), f"{bucket}/images/{n}.png")
    table = [
        {"id": f"n{i:03d}", "image": f"{names[i % 3]}.png", "width": 640, "height": 640}
        for i in range(rows)
    ]
    fs.put_file(
        write_manifest(tmp_path / "m.parquet", table), f"{bucket}/manifests/day=1/part-0.parquet"
    )
    return write_config(
        tmp_path / "c.yaml",
        {
            "input": {
                "manifest": f"s3://{bucket}/manifests/",
                "image_root": f"s3://{bucket}/images",
                "storage_options": opts,
            },
            "output": {"uri": f"s3://{bucket}/out", "storage_options": opts},
            "runtime": {"block_rows": 1, **runtime},
        },
    )


def _submit(cfg: str, address: str, *extra: str, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "submit", cfg, "--address", address, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


@pytest.mark.slow
@pytest.mark.parametrize("two_nodes", ["bare_worker"], indirect=True)
def test_submit_to_a_two_node_cluster(tmp_path, photos, s3_server, two_nodes):
    """The worker node's Python has no outpaint: the package travels with the job. The
    credentials do not: the nodes' environment has them."""
    import s3fs

    bare = subprocess.run(
        [two_nodes["worker_py"], "-c", "import pipeline"],
        capture_output=True,
        cwd=two_nodes["work"],
    )
    assert bare.returncode != 0 and b"No module named 'pipeline'" in bare.stderr
    cfg = _s3_job(tmp_path, photos, s3_server, "cluster-job", 16)
    t0 = time.time()
    p = _submit(cfg, two_nodes["address"], "--timeout", "400", env=two_nodes["env"])
    _, err = p.communicate(timeout=500)
    assert p.returncode == 0 and "SUCCEEDED" in err, err[-3000:]
    assert (
        "not shipped (credentials come from the cluster's environment): input.storage_options.key"
        in err
    )
    assert "[outpaint] planned in" in err  # the job's own log, streamed while waiting
    fs = s3fs.S3FileSystem(**s3_server["storage_options"])
    meta = pq.read_table("cluster-job/out/metadata", filesystem=fs)
    assert meta.num_rows == 16 and set(meta.column("status").to_pylist()) == {"ok"}
    assert len(fs.ls("cluster-job/out/images")) == 16
    nodes = set(meta.column("worker_node").to_pylist())
    assert len(nodes) == 2 and None not in nodes  # both nodes wrote images, the bare one too
    assert time.time() - t0 < 450


@pytest.mark.slow
def test_submit_twice_attaches_and_sigterm_stops_the_job(tmp_path, photos, s3_server, two_nodes):
    from ray.job_submission import JobSubmissionClient

    cfg = _s3_job(tmp_path, photos, s3_server, "cluster-attach", 400, num_cpus=None)
    client = JobSubmissionClient(two_nodes["address"])
    first = _submit(cfg, two_nodes["address"], env=two_nodes["env"])
    deadline = time.time() + 240
    while time.time() < deadline:  # until the job runs
        jobs = [j for j in client.list_jobs() if (j.submission_id or "").startswith("outpaint-")]
        if jobs and str(jobs[0].status).endswith("RUNNING"):
            break
        time.sleep(0.5)
    job_id = jobs[0].submission_id
    second = _submit(cfg, two_nodes["address"], "--no-wait", env=two_nodes["env"])
    _, err2 = second.communicate(timeout=120)
    assert second.returncode == 0 and f"attached to the running job {job_id}" in err2, err2[-2000:]
    assert (
        len([j for j in client.list_jobs() if (j.submission_id or "").startswith("outpaint-")]) == 1
    )
    first.send_signal(signal.SIGTERM)
    _, err1 = first.communicate(timeout=120)
    assert first.returncode == 1 and f"SIGTERM: stopping job {job_id}" in err1, err1[-2000:]
    assert str(client.get_job_info(job_id).status).endswith("STOPPED")
    # the run is stopped, not finished: the next submit is a new job of the series, and resumes
    third = _submit(cfg, two_nodes["address"], "--no-wait", env=two_nodes["env"])
    _, err3 = third.communicate(timeout=120)
    assert third.returncode == 0 and f"submitted {job_id}-r2" in err3, err3[-2000:]
    client.stop_job(f"{job_id}-r2")


@pytest.mark.slow
def test_submit_retries_when_the_job_server_refuses(tmp_path, photos, s3_server, two_nodes):
    """The job server answers the first submission "No available agent" (as under load):
    one line, a retry, and the job is submitted once."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    host, port = two_nodes["address"].replace("http://", "").split(":")
    refused = []

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _relay(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.command == "POST" and self.path.rstrip("/") == "/api/jobs" and not refused:
                refused.append(self.path)
                msg = b"No available agent to submit job, please try again later."
                self.send_response(500)
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return
            relay(self, host, int(port), body)

        do_GET = do_POST = do_PUT = do_DELETE = _relay

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = _s3_job(tmp_path, photos, s3_server, "cluster-retry", 3)
        p = _submit(
            cfg, f"http://127.0.0.1:{server.server_address[1]}", "--no-wait", env=two_nodes["env"]
        )
        _, err = p.communicate(timeout=180)
    finally:
        server.shutdown()
    assert p.returncode == 0, err[-2000:]
    assert (
        refused
        and "job server busy (Request failed with status code 500: No available agent" in err
    )
    assert "[outpaint] submitted outpaint-" in err
    from ray.job_submission import JobSubmissionClient

    jobs = [
        j
        for j in JobSubmissionClient(two_nodes["address"]).list_jobs()
        if (j.submission_id or "").startswith("outpaint-")
    ]
    assert len(jobs) == 1


def test_submit_refuses_a_local_output(tmp_path):
    m = write_manifest(
        tmp_path / "m.parquet", [{"id": "a", "image": "x.png", "aspect_ratio": "1:1"}]
    )
    c = write_config(
        tmp_path / "c.yaml", {"input": {"manifest": m}, "output": {"uri": str(tmp_path / "out")}}
    )
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "submit", c, "--address", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        r.returncode == 2
        and "is a local path" in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )


def test_submit_to_an_unreachable_job_server_is_one_line_exit_2(tmp_path):
    c = write_config(
        tmp_path / "c.yaml",
        {
            "input": {
                "manifest": write_manifest(
                    tmp_path / "m.parquet", [{"id": "a", "image": "x.png", "aspect_ratio": "1:1"}]
                )
            },
            "output": {"uri": "s3://bucket/out"},
        },
    )  # nothing reaches S3: the job server is tried first
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "submit", c, "--address", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [
        ln
        for ln in r.stderr.strip().splitlines()
        if not ln.startswith("[outpaint] job server busy")
    ]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("outpaint: job server: connect to http://127.0.0.1:9 failed"), (
        r.stderr
    )


def test_submission_ids_are_deterministic_and_secrets_stay_home():
    from pipeline.run.submit import strip_secrets, submission_id

    data = {
        "input": {
            "manifest": "s3://b/m/",
            "storage_options": {
                "key": "AK",
                "secret": "SK",
                "client_kwargs": {"endpoint_url": "http://x"},
            },
        },
        "output": {"uri": "s3://b/out", "storage_options": {"token": "T"}},
        "model": {"storage_options": {}},
    }
    shipped, removed = strip_secrets(data)
    assert removed == [
        "input.storage_options.key",
        "input.storage_options.secret",
        "output.storage_options.token",
    ]
    assert shipped["input"]["storage_options"] == {"client_kwargs": {"endpoint_url": "http://x"}}
    assert "AK" not in str(shipped) and data["input"]["storage_options"]["key"] == "AK"
    a = submission_id(shipped)
    assert a == submission_id(strip_secrets(data)[0]) and a.startswith("outpaint-")
    other = {**shipped, "output": {"uri": "s3://b/other"}}
    assert submission_id(other) != a


# ------------------------------------------------------------------ Kubernetes manifests
# KubeRay's CRDs of one release (v1.7.0, ray-operator/config/crd/bases), vendored: every
# object in jobs/ is validated against its openAPIV3Schema, and a field the API server
# would prune (not in the schema, no x-kubernetes-preserve-unknown-fields) fails the test.
CRDS = Path(__file__).parents[1] / "data" / "kuberay-crds-v1.7.0"
KUBERAY = {
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}


@functools.cache
def _crd_schema(kind: str) -> dict:
    crd = yaml.load(
        (CRDS / KUBERAY[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )
    assert crd["spec"]["names"]["kind"] == kind
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"][
        "openAPIV3Schema"
    ]


def pruned(doc, schema: dict, path: str = "") -> list[str]:
    """Paths in ``doc`` that a structural schema does not declare (the API server drops them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(doc, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, v in doc.items():
            if props is not None and k in props:
                out += pruned(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                out += pruned(v, extra, f"{path}.{k}")
            elif props is not None and extra is not True:
                out.append(f"{path}.{k}")
    elif isinstance(doc, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(doc):
            out += pruned(v, schema["items"], f"{path}[{i}]")
    return out


def validate_kuberay(doc: dict) -> None:
    import jsonschema

    schema = _crd_schema(doc["kind"])
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5]]
    assert not pruned(doc, schema), pruned(doc, schema)


def test_the_schema_check_catches_what_kuberay_would_refuse_or_prune():
    doc = yaml.safe_load((JOBS / "rayjob.yaml").read_text())
    validate_kuberay(doc)
    typo = yaml.safe_load((JOBS / "rayjob.yaml").read_text())
    typo["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = (
        8  # pruned silently by the API
    )
    assert pruned(typo, _crd_schema("RayJob")) == [
        ".spec.rayClusterSpec.workerGroupSpecs[0].maxReplica"
    ]
    bad = yaml.safe_load((JOBS / "rayjob.yaml").read_text())
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    with pytest.raises(AssertionError, match="maxReplicas"):
        validate_kuberay(bad)
    del bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    with pytest.raises(AssertionError):
        validate_kuberay(bad)


def _pods(doc: dict) -> list[dict]:
    spec = doc["spec"].get("jobTemplate", doc["spec"])
    rc = spec.get("rayClusterSpec", spec)
    return [rc["headGroupSpec"]["template"]] + [g["template"] for g in rc["workerGroupSpecs"]]


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml", "raycronjob.yaml"])
def test_kuberay_manifests_validate_against_the_crds(name):
    doc = yaml.safe_load((JOBS / name).read_text())
    validate_kuberay(doc)
    pods = _pods(doc)
    for pod in pods:  # credentials from a Secret, on every Ray pod
        for c in pod["spec"]["containers"]:
            assert {"secretRef": {"name": "outpaint-storage"}} in c["envFrom"], name
            assert c["resources"]["limits"] and c["resources"]["requests"]
    spec = doc["spec"].get("jobTemplate", doc["spec"])
    rc = spec.get("rayClusterSpec", spec)
    gpu = next(g for g in rc["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        gpu["minReplicas"] == 0 and gpu["maxReplicas"] > 1 and rc["enableInTreeAutoscaling"] is True
    )
    if "entrypoint" in spec:  # RayJob, RayCronJob: a deadline and a sized submitter
        assert spec["entrypoint"].startswith("outpaint run ") and spec["activeDeadlineSeconds"] > 0
        sub = spec["submitterPodTemplate"]["spec"]["containers"][0]
        assert sub["resources"]["requests"] and sub["resources"]["limits"]


def test_manifest_names_are_distinct_and_the_cronjob_reaches_the_cluster():
    names = {
        n: yaml.safe_load((JOBS / n).read_text())["metadata"]["name"]
        for n in ("rayjob.yaml", "raycluster.yaml", "raycronjob.yaml", "cronjob.yaml")
    }
    assert len(set(names.values())) == 4, names
    cron = yaml.safe_load((JOBS / "cronjob.yaml").read_text())
    assert cron["apiVersion"] == "batch/v1" and cron["kind"] == "CronJob"
    spec = cron["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    pod = job["template"]
    assert pod["spec"]["restartPolicy"] in ("Never", "OnFailure")
    c = pod["spec"]["containers"][0]
    assert c["command"][:2] == ["outpaint", "submit"] and c["resources"]["limits"]
    # KubeRay names a RayCluster's head Service <name>-head-svc
    assert f"http://{names['raycluster.yaml']}-head-svc:8265" in c["command"]
    # the entrypoint's config key exists: the same loader validates it
    from pipeline import config as config_mod

    config_mod.apply_overrides({}, ["runtime.ray_address=auto"])
