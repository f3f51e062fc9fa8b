"""How the server reaches a cluster: the KubeRay RayService manifest against the vendored
CRD, its Serve config pointing at the real application builder with a config that loads."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline import api

from ..run.test_submit import JOBS, validate_kuberay

ROOT = Path(__file__).parents[2]


def test_the_rayservice_validates_and_builds_our_application():
    doc = yaml.safe_load((JOBS / "rayservice.yaml").read_text())
    assert doc["kind"] == "RayService"
    validate_kuberay(doc)
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])  # a string, as KubeRay takes it
    (app,) = serve_config["applications"]
    assert app["import_path"] == "pipeline.serve.app:build" and app["route_prefix"] == "/"
    assert serve_config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    from pipeline.serve import app as app_module

    assert callable(app_module.build)
    cluster = doc["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    mounted = app["args"]["config"].rsplit("/", 1)[0]
    for pod in pods:  # keys, signing secret and storage credentials from Secrets on every pod
        c = pod["spec"]["containers"][0]
        assert {"secretRef": {"name": "outpaint-serve-keys"}} in c["envFrom"]
        assert {"secretRef": {"name": "outpaint-storage"}} in c["envFrom"]
        assert any(m["mountPath"] == mounted for m in c["volumeMounts"])
        assert c["resources"]["limits"] and c["resources"]["requests"]
    gpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert cluster["rayVersion"] in (ROOT / "jobs" / "Dockerfile").read_text()
    assert "serve" in (ROOT / "jobs" / "Dockerfile").read_text().split("[")[-1]


def test_the_embedded_serve_config_loads_without_an_input_section():
    cfg = api.serve_config(ROOT / "configs" / "serve.yaml")
    assert cfg.model.backend == "classical" and cfg.serve.keys_env == "OUTPAINT_SERVE_KEYS"
    assert cfg.serve.max_active_per_key == 24 and cfg.serve.result_ttl_s == 600
