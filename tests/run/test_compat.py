"""Outputs written by an earlier outpaint stay valid: a rerun skips what they hold."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipeline import config as config_mod
from pipeline.run.runner import run

DATA = Path(__file__).parent.parent / "data" / "premove"


def test_rerun_over_an_output_written_before_the_split_skips_every_row(tmp_path):
    """tests/data/premove/out was written by the commit in recorded.json (the flat
    package): same request hashes, so every ok row is skipped and no image rewritten."""
    rec = json.loads((DATA / "recorded.json").read_text())
    src = tmp_path / "src"
    shutil.copytree(DATA / "src", src)
    for name, ns in rec["mtime_ns"].items():  # local sources are identified by size + mtime
        os.utime(src / name, ns=(ns, ns))
    out = tmp_path / "out"
    shutil.copytree(DATA / "out", out)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "images").iterdir()}
    cfg = config_mod.from_dict(
        {
            "input": {"manifest": str(DATA / "manifest.parquet"), "image_root": str(src)},
            "output": {"uri": str(out), "report": False},
            "runtime": rec["config"]["runtime"],
        }
    )
    result = run(cfg, quiet=True)
    assert result["rows"] == 6 and result["work_rows"] == 0
    assert result["counts"]["skipped"] == 5  # every ok row of the old output
    assert result["counts"]["by_status"] == {
        "rejected": 1
    }  # rejected rows are re-checked, never skipped
    assert result["manifest"]["by_status"] == {"ok": 5, "rejected": 1, "failed": 0}
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "images").iterdir()}
    assert after == before and len(after) == 5
