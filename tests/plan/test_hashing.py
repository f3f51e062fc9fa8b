"""Request hashes and their 128-bit fingerprints (the resume check's keys)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from pipeline.io.done import DoneSet, fingerprints
from pipeline.plan.hashing import request_hashes
from pipeline.plan.stage import PlanStage

from ..conftest import make_config, write_manifest


def test_fingerprints_are_the_hash_bits():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(1000)]
    hi, lo, valid = fingerprints(pa.array(hashes + [None, "xyz", "g" * 32]))
    assert valid.tolist() == [True] * 1000 + [False] * 3
    assert [int(h[:16], 16) for h in hashes] == hi[:1000].tolist()
    assert [int(h[16:], 16) for h in hashes] == lo[:1000].tolist()
    # a slice of a chunked array (non-zero offset) reads the right rows
    arr = pa.chunked_array([pa.array(hashes[:10]), pa.array(hashes[10:20])]).slice(5, 10)
    assert fingerprints(arr)[0].tolist() == [int(h[:16], 16) for h in hashes[5:15]]


def test_done_set_matches_exactly():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(2000)]
    hi, lo, _ = fingerprints(pa.array(hashes[:1000]))
    # same high half, other low half: must not match (both halves are compared)
    twin = hashes[0][:16] + "0" * 16
    done = DoneSet(np.append(hi, fingerprints(pa.array([twin]))[0]), np.append(lo, np.uint64(1)))
    got = done.contains(pa.array(hashes + [twin, None]))
    assert got[:1000].all() and not got[1000:2000].any()
    assert got[2000] == False  # noqa: E712 - twin's low half is 0, the set holds 1
    assert got[2001] == False  # noqa: E712
    assert (
        DoneSet(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        .contains(pa.array(hashes[:3]))
        .tolist()
        == [False] * 3
    )


def test_request_hash_names_the_row(tmp_path, photos):
    """Two ids with the same image and request still get different hashes (the id is in
    it), and rows without a source identity get none."""
    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {"id": "a", "image": str(photos["coffee"]), "aspect_ratio": "1:1", "seed": 1},
            {"id": "b", "image": str(photos["coffee"]), "aspect_ratio": "1:1", "seed": 1},
        ],
    )
    cfg = make_config(tmp_path, m)
    from pipeline.io import manifest

    plan = PlanStage(cfg, identify=True)(manifest.read(cfg))
    h = plan.column("request_hash").to_pylist()
    assert len(h[0]) == 32 and h[0] != h[1]
    assert (
        request_hashes(plan, np.array([None, "size=1"], dtype=object), cfg).to_pylist()[0] is None
    )


def test_the_cascade_and_its_scene_fill_are_in_the_request(tmp_path, monkeypatch):
    """``route: cascade`` and ``model.scene`` away from its default change every row's
    hash, and so does a new version of the scene fill under the cascade (its rows redone);
    at the defaults the hash is what it was before the cascade existed."""
    from pipeline.backends import BACKENDS
    from pipeline.plan.hashing import run_constant

    m = str(tmp_path / "m.parquet")
    auto = run_constant(make_config(tmp_path, m))
    assert "scene" not in auto
    cascade = make_config(tmp_path, m, model={"route": "cascade"})
    before = run_constant(cascade)
    assert before != auto and '"model.scene_fill": "1"' in before
    looser = make_config(tmp_path, m, model={"route": "cascade", "scene": {"max_variation": 1.0}})
    assert run_constant(looser) not in (before, auto)
    spec = BACKENDS["scene"]
    monkeypatch.setitem(BACKENDS, "scene", type(spec)(**{**spec.__dict__, "version": "2"}))
    assert run_constant(cascade) != before
    assert run_constant(make_config(tmp_path, m)) == auto  # auto never runs the scene fill
