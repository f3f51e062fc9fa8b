"""The example job's outputs against a recorded run: images byte for byte (sha256 of each
file), strings, integers and booleans exactly, and every float the run computed (scores,
scales) within a relative 1e-9: another CPU of the same kind sums in another order and
moves the last bit, never more. What records when, where or how long is left out. Sources
get a fixed mtime, so their identity (and the request hash) is the same in every checkout.

Record again only when a change is meant to alter outputs:
``OUTPAINT_RECORD_GOLDEN=1 python -m pytest tests/run/test_golden.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import config as config_mod

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "golden"
# what says when, where or how long: differs on every run by nature
VOLATILE = {
    "load_ms",
    "generate_ms",
    "encode_ms",
    "write_ms",
    "run_id",
    "worker_node",
    "completed_at",
    "model_actor",
    "model_loop_s",
    "model_wall_s",
    "api_active",
    "api_spent",
}
FIXED_MTIME = 1_700_000_000
REL_TOL = 1e-9  # computed floats: another summation order moves the last bits, no more


def _example(tmp_path: Path) -> config_mod.Config:
    """The example job over a copy of its sources at a fixed path (source URIs are part of
    the request hash and of messages)."""
    src = ROOT / "configs" / "example"
    dst = Path("/tmp/outpaint-golden-example")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "images", dst / "images")
    shutil.copy(src / "manifest.parquet", dst / "manifest.parquet")
    for p in (dst / "images").iterdir():
        os.utime(p, (FIXED_MTIME, FIXED_MTIME))
    data = config_mod.parse_yaml((ROOT / "configs" / "example.yaml").read_text())
    data["input"].update(manifest=str(dst / "manifest.parquet"), image_root=str(dst / "images"))
    data["output"]["uri"] = str(tmp_path / "out")
    data["runtime"]["progress_interval_s"] = 60
    return config_mod.from_dict(data)


def _record(out: Path) -> tuple[list[dict], dict[str, str]]:
    meta = pq.read_table(out / "metadata").sort_by("id")
    keep = [c for c in meta.column_names if c not in VOLATILE]
    rows = meta.select(keep).to_pylist()
    prefix = str(out) + "/"
    for r in rows:  # where the output lives differs per machine: keep the part under output.uri
        r["output_uri"] = r["output_uri"] and r["output_uri"].replace(prefix, "")
        r["output_uris"] = r["output_uris"] and [u.replace(prefix, "") for u in r["output_uris"]]
    images = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "images").iterdir())
    }
    return rows, images


def differences(got, want, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: floats beyond ``REL_TOL``, anything else at all."""
    if isinstance(want, float) and isinstance(got, (float, int)) and not isinstance(got, bool):
        same = math.isclose(got, want, rel_tol=REL_TOL, abs_tol=1e-300) or (
            math.isnan(got) and math.isnan(want)
        )
        return [] if same else [f"{path}: {got!r} != {want!r}"]
    if isinstance(want, dict) and isinstance(got, dict):
        return [
            d
            for k in sorted(set(got) | set(want))
            for d in differences(got.get(k), want.get(k), f"{path}.{k}" if path else k)
        ]
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [
            d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{path}[{i}]")
        ]
    return [] if got == want and type(got) is type(want) else [f"{path}: {got!r} != {want!r}"]


def check(rows: list[dict], images: dict[str, str], want_rows: list[dict], want_images: dict):
    """The run against the recording; an AssertionError that names each difference."""
    assert images == want_images, "images differ: " + ", ".join(
        k for k in sorted(set(images) | set(want_images)) if images.get(k) != want_images.get(k)
    )
    got = json.loads(json.dumps(rows, sort_keys=True, default=str))
    assert len(got) == len(want_rows) == 12, f"{len(got)} rows, recorded {len(want_rows)}"
    for g, w in zip(got, want_rows):
        found = differences(g, w)
        assert not found, f"row {w['id']}: " + ", ".join(found)


def _recorded() -> tuple[list[dict], dict[str, str]]:
    return (
        json.loads((GOLDEN / "metadata.json").read_text()),
        json.loads((GOLDEN / "images.json").read_text()),
    )


def _last_bit(value):
    """Every float one ulp away (alternately up and down), as another CPU may give it."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return math.nextafter(value, math.inf if hash(value) % 2 else -math.inf)
    if isinstance(value, dict):
        return {k: _last_bit(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_last_bit(v) for v in value]
    return value


def test_the_check_forgives_the_last_bit_of_a_float_and_nothing_else():
    rows, images = _recorded()
    perturbed = _last_bit(copy.deepcopy(rows))
    assert perturbed != rows  # the recording holds computed floats to perturb
    check(perturbed, images, rows, images)
    # 1e-7 relative is not a summation order: a real change of a score
    moved = copy.deepcopy(rows)
    row = next(r for r in moved if isinstance(r.get("quality_distance"), float))
    row["quality_distance"] *= 1 + 1e-7
    with pytest.raises(AssertionError, match="quality_distance"):
        check(moved, images, rows, images)
    # strings and integers stay exact
    changed = copy.deepcopy(rows)
    changed[0]["canvas_width"] += 1
    with pytest.raises(AssertionError, match="canvas_width"):
        check(changed, images, rows, images)


@pytest.mark.ray
def test_example_outputs_are_byte_identical_to_the_recorded_run(tmp_path, ray_local):
    from pipeline.run.runner import run

    cfg = _example(tmp_path)
    run(cfg, quiet=True)
    rows, images = _record(tmp_path / "out")
    if os.environ.get("OUTPAINT_RECORD_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / "metadata.json").write_text(
            json.dumps(rows, indent=1, sort_keys=True, default=str) + "\n"
        )
        (GOLDEN / "images.json").write_text(json.dumps(images, indent=1, sort_keys=True) + "\n")
    want_rows, want_images = _recorded()
    check(rows, images, want_rows, want_images)
    # and one byte of one image changed is a failure, whatever the metadata says
    first = sorted((tmp_path / "out" / "images").iterdir())[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x01
    first.write_bytes(bytes(data))
    rows, images = _record(tmp_path / "out")
    with pytest.raises(AssertionError, match=f"images differ: {first.name}"):
        check(rows, images, want_rows, want_images)
