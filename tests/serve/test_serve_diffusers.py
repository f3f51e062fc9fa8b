"""``outpaint serve`` with ``model.backend: diffusers``: the hosted API's contract answered by
a tiny random-weight Z-Image inpainting checkpoint on a model replica (real Ray Serve, real
HTTP on loopback), the result exactly the size asked and labelled as trained media."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline import api

from .test_serve import KEY, PATH, b64, call, encoded, http, poll  # noqa: F401 - http: a fixture

pytestmark = [pytest.mark.ray, pytest.mark.slow]
TRAINED = b"compositeWithTrainedAlgorithmicMedia"


def test_serve_answers_with_a_diffusers_checkpoint(
    http,  # noqa: F811 - the fixture imported above
    tiny_inpaint,
    photos,
    tmp_path,
    monkeypatch,
):
    from ray import serve

    from pipeline.serve.app import application

    monkeypatch.setenv("OUTPAINT_SERVE_KEYS", KEY)
    cfg = api.serve_config(
        {
            "model": {
                "backend": "diffusers",
                "path": tiny_inpaint["z-image"],
                "dtype": "float32",
                "steps": 2,
            },
            "output": {"uri": str(tmp_path / "out")},
            "serve": {"cpus_per_replica": 0.5},
        }
    )
    serve.run(application(cfg), name="outpaint", route_prefix="/")
    photo = Image.open(photos["coffee"]).convert("RGB").crop((150, 100, 278, 196))  # 128 x 96
    body = {
        "input_image": b64(encoded(np.asarray(photo))),
        "width": 208,
        "height": 144,
        "prompt": "a cafe table",
    }
    status, task, _ = call("POST", http + PATH, body)
    assert status == 200, task
    done = poll(task["polling_url"], timeout=120)
    assert done["status"] == "Ready", done
    status, data, _ = call("GET", done["result"]["sample"], key=None)
    assert status == 200 and TRAINED in data
    assert Image.open(io.BytesIO(data)).size == (208, 144)
    serve.delete("outpaint")
