"""What the review tests share: a finished run with rows held by the quality gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def held_run(tmp_path, ray_local):
    """The example job with ``quality.hold: true``: the classical backend's scene rows
    fail the score (it mirrors near the seam) and are held at once (a deterministic backend
    is not retried); the studio backdrops pass."""
    src = ROOT / "configs" / "example"
    shutil.copytree(src, tmp_path / "example")
    config = tmp_path / "job.yaml"
    text = (ROOT / "configs" / "example.yaml").read_text()
    text = text.replace("configs/example/", f"{tmp_path}/example/").replace(
        "uri: out/example", f"uri: {tmp_path}/out"
    )
    config.write_text(text + "quality:\n  hold: true\n")
    assert main(["run", str(config), "--quiet"]) == 0
    return config, tmp_path / "out"
