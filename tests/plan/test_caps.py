"""Bounded work per row: a manifest or a source over a cap gives that row its code, and
the oversized value never travels on (plan, metadata, review page); the job goes on."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from pipeline import api
from pipeline.io.headers import SourceLimits
from pipeline.io.imageio import ImageError, decode


def _cfg(tmp_path, manifest="unused", **limits):
    return api.load_config({
        "input": {"manifest": str(manifest)}, "defaults": {"aspect_ratio": "1:1"},
        "output": {"uri": str(tmp_path / "out"), "passthrough_columns": ["note"]}, "limits": limits,
    })  # fmt: skip


def test_prompt_cell_and_id_caps_reject_the_row_and_cut_the_value(tmp_path, photos):
    src = str(photos["coffee"])
    rows = [
        {"id": "fine", "image": src, "prompt": "a wooden table", "note": "ok"},
        {"id": "wordy", "image": src, "prompt": "x" * 501, "note": "ok"},
        {"id": "fat", "image": src, "prompt": "", "note": "n" * 5000},
        {"id": "i" * 4000, "image": src, "prompt": "", "note": "ok"},
    ]
    plan = api.plan(rows, _cfg(tmp_path, max_prompt_chars=500, max_cell_bytes=1024)).to_pylist()
    got = [(r["status"], r["error_code"]) for r in plan]
    assert got == [("ok", None), ("rejected", "prompt_too_long"), ("rejected", "cell_too_large"),
                   ("rejected", "cell_too_large")]  # fmt: skip
    assert "501 characters, over limits.max_prompt_chars = 500" in plan[1]["error_message"]
    assert "column note holds 5,000 bytes" in plan[2]["error_message"]
    assert len(plan[1]["prompt"]) < 100 and len(plan[2]["note"]) < 100  # cut, not carried
    assert len(plan[3]["id"]) < 100 and plan[3]["id"].startswith("i" * 64)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_over_long_text_line_is_its_own_rejected_row(tmp_path, photos, fmt):
    src = str(photos["coffee"])
    rows = [{"id": "a", "image": src, "prompt": ""}, {"id": "long", "image": src, "prompt": "p" * 5000},
            {"id": "c", "image": src, "prompt": ""}]  # fmt: skip
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        path.write_text(
            "id,image,prompt\n" + "".join(f"{r['id']},{r['image']},{r['prompt']}\n" for r in rows)
        )
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(tmp_path, path, max_manifest_line_bytes=2048)
    cfg.output.passthrough_columns = []
    plan = api.plan(None, cfg).to_pylist()
    assert [(r["id"], r["status"], r["error_code"], r["manifest_row"]) for r in plan] == [
        ("a", "ok", None, 0), ("long", "rejected", "row_too_large", 1), ("c", "ok", None, 2)]  # fmt: skip
    assert "over limits.max_manifest_line_bytes = 2,048" in plan[1]["error_message"]
    assert not plan[1]["prompt"]  # the line was never parsed whole


def _png_with_xmp(photo, size: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(
        "XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + " " * size + "</x:xmpmeta>"
    )
    buf = io.BytesIO()
    Image.open(photo).convert("RGB").resize((80, 60)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def test_embedded_profile_and_xmp_over_their_caps_fail_the_row(tmp_path, photos):
    data = _png_with_xmp(photos["coffee"], 20_000)
    with pytest.raises(ImageError) as e:
        decode(data, SourceLimits(1 << 30, 1 << 30, max_xmp_bytes=4096), "big.png")
    assert e.value.code == "image_metadata_too_large" and "bytes of XMP" in e.value.message
    assert decode(data, SourceLimits(1 << 30, 1 << 30)).size == (80, 60)  # under the cap: read
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.open(photos["coffee"]).convert("RGB").save(buf, "JPEG", icc_profile=srgb)
    with pytest.raises(ImageError) as e:
        decode(
            buf.getvalue(),
            SourceLimits(1 << 30, 1 << 30, max_icc_bytes=len(srgb) - 1),
            "tagged.jpg",
        )
    assert e.value.code == "image_metadata_too_large" and "ICC profile" in e.value.message
    # through the stages: that row fails with its code, the others are written
    (tmp_path / "big.png").write_bytes(data)
    cfg = _cfg(tmp_path, max_xmp_bytes=4096)
    cfg.output.passthrough_columns = []
    stages = api.stages(cfg, run_id="r")
    planned = stages.plan(api.as_table([{"id": "big", "image": str(tmp_path / "big.png")},
                                        {"id": "plain", "image": str(photos["chelsea"])}]))  # fmt: skip
    meta = stages.process(planned).to_pylist()
    assert [(m["status"], m["error_code"]) for m in meta] == [
        ("failed", "image_metadata_too_large"),
        ("ok", None),
    ]
    assert np.asarray(Image.open(meta[1]["output_uri"])).shape[:2] == (451, 451)
