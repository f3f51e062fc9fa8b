"""A reviewer's verdicts from scripts (``outpaint review OUT --approve/--reject``) and
``outpaint run --redo``: approved rows published, rejected rows unpublished then
regenerated with their next attempt's seed, every other row untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.cli import main
from pipeline.io.outputs import OutputStore
from pipeline.review import verdicts
from pipeline.review.gate import attempt_seed


def _meta(out: Path) -> dict[str, dict]:
    table = OutputStore(str(out)).metadata.read()
    return {r["id"]: r for r in table.to_pylist()}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_approve_publishes_reject_unpublishes_and_redo_touches_only_rejected(held_run, capsys):
    config, out = held_run
    meta = _meta(out)
    held = sorted(i for i, r in meta.items() if r["review_status"] == "held")
    passed = sorted(i for i, r in meta.items() if r["review_status"] == "passed")
    assert len(held) == 7 and passed == ["cup-vignette-banner", "cup-white-square"]
    assert sorted(p.name.split(".")[0] for p in (out / "held").iterdir()) == held
    assert not any(p.name.split(".")[0] in held for p in (out / "images").iterdir())
    # --strict counts held rows
    assert main(["run", str(config), "--quiet", "--strict"]) == 1

    approve, reject = held[:2], [held[2], "cup-white-square"]
    args = ["review", str(out), "--approve", *approve, "--reject", *reject, "--reviewer", "Ann"]
    assert main(args) == 0
    meta2 = _meta(out)
    for i in approve:
        assert meta2[i]["review_status"] == "approved"
        assert meta2[i]["output_uri"].startswith(str(out / "images"))
        assert Path(meta2[i]["output_uri"]).exists()
    for i in reject:
        assert meta2[i]["review_status"] == "rejected"
        assert meta2[i]["output_uri"].startswith(str(out / "held"))  # no longer published
    assert not (out / "images" / "cup-white-square.png").exists()
    cast = [json.loads(p.read_text()) for p in (out / "review" / "verdicts").iterdir()]
    assert sorted((v["id"], v["verdict"], v["reviewer"]) for v in cast) == sorted(
        [(i, "approve", "Ann") for i in approve] + [(i, "reject", "Ann") for i in reject]
    )
    # an id that is not a generated ok row: exit 2, nothing persisted
    assert main(["review", str(out), "--approve", "missing-file"]) == 2
    assert len(list((out / "review" / "verdicts").iterdir())) == 4

    before_images, before_held = _digests(out / "images"), _digests(out / "held")
    before = _meta(out)
    assert main(["run", str(config), "--quiet", "--redo"]) == 0
    after = _meta(out)
    redone = {i for i in after if after[i]["run_id"] != before[i]["run_id"]}
    assert redone == set(reject)  # --redo touches no other row
    for i in reject:
        plan_seed = before[i]["seed"]  # the row's own seed (one attempt so far)
        assert after[i]["seed"] == attempt_seed(plan_seed, 1) != plan_seed
        assert after[i]["quality_attempts"] == 2
        assert after[i]["review_status"] in ("passed", "held")
    # the studio backdrop passes again, published; the scene row is held again
    assert after["cup-white-square"]["review_status"] == "passed"
    assert (out / "images" / "cup-white-square.png").exists()
    assert not (out / "held" / "cup-white-square.png").exists()
    assert after[held[2]]["review_status"] == "held"
    # every other image byte-identical
    others = lambda d: {k: v for k, v in d.items() if k.split(".")[0] not in reject}
    assert others(_digests(out / "images")) == others(before_images)
    assert others(_digests(out / "held")) == others(before_held)
    # a plain rerun skips every row, held ones included
    capsys.readouterr()
    assert main(["run", str(config), "--progress", "line"]) == 0
    assert "0 to do" in capsys.readouterr().err


def test_a_verdict_cast_before_a_crash_is_applied_on_the_next_review(held_run):
    _, out = held_run
    store = OutputStore(str(out))
    row_id = next(i for i, r in _meta(out).items() if r["review_status"] == "held")
    # the verdict persisted, then the process died before anything moved
    store.folder.write_json(
        f"{verdicts.VERDICTS}/20990101T000000-crash.json",
        {"id": row_id, "verdict": "approve", "time": 4e9, "reviewer": None},
    )
    assert _meta(out)[row_id]["review_status"] == "held"
    assert verdicts.apply(store) == 1
    assert _meta(out)[row_id]["review_status"] == "approved"
    assert verdicts.apply(store) == 0  # applied once
    assert next((out / "images").glob(f"{row_id}.*")).exists()
    assert not list((out / "held").glob(f"{row_id}.*"))
