"""The planning stage on real photos and real broken files, and ``outpaint plan``."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.io import manifest
from pipeline.plan.rows import derive_seed
from pipeline.plan.stage import PLAN_SCHEMA, PlanStage, duplicate_first_rows, plan_manifest
from pipeline.plan.summary import summarise

from ..conftest import make_config, write_config, write_manifest


def run_plan(tmp_path, rows, **sections):
    cfg = make_config(tmp_path, write_manifest(tmp_path / "m.parquet", rows), **sections)
    manifest.read_schema(cfg)
    plan = plan_manifest(cfg, manifest.read(cfg))
    return {r["id"] + f"#{r['manifest_row']}": r for r in plan.to_pylist()}, plan, cfg


def by_row(plan):
    return plan.to_pylist()


@pytest.fixture
def broken(tmp_path, photos):
    """Real broken files: empty, truncated header, text, HEIF brand, and an EXIF-rotated JPEG."""
    d = tmp_path / "broken"
    d.mkdir()
    (d / "empty.png").write_bytes(b"")
    (d / "truncated.png").write_bytes(photos["astronaut"].read_bytes()[:20])
    (d / "text.png").write_text("this is not an image\n" * 10)
    (d / "photo.heic").write_bytes(
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    )
    img = Image.open(photos["coffee"])  # 600x400
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: displayed 400x600
    img.save(d / "rotated.jpg", exif=exif, quality=90)
    img.save(d / "png_named.jpg", format="PNG")  # wrong extension
    with Image.open(photos["camera"]) as cam:  # header declares 512x512
        cam.save(d / "camera.png")
    return d


def test_real_photos_sizes_from_headers(tmp_path, photos):
    rows = [{"id": k, "image": str(p), "aspect_ratio": "1:1"} for k, p in photos.items()]
    got, plan, _ = run_plan(tmp_path, rows)
    for k, p in photos.items():
        r = got[f"{k}#{list(photos).index(k)}"]
        with Image.open(p) as im:
            w, h = im.size
        assert (r["source_width"], r["source_height"]) == (w, h)
        assert r["status"] == "ok" and r["canvas_width"] == r["canvas_height"] == max(w, h)
        assert r["generated"] == (w != h)
    assert plan.schema.names[: len(PLAN_SCHEMA)] == PLAN_SCHEMA.names


def test_broken_files_get_image_codes(tmp_path, broken):
    rows = [
        {"id": p.stem, "image": str(p), "width": 1024, "height": 1024, "auto_crop": True}
        for p in sorted(broken.iterdir())
    ]
    rows.append({"id": "missing", "image": str(broken / "nope.png"), "width": 1024, "height": 1024})
    got = {r["id"]: r for r in by_row(run_plan(tmp_path, rows)[1])}
    expect = {
        "empty": ("failed", "image_unreadable"),
        "truncated": ("failed", "image_unreadable"),
        "text": ("failed", "image_unreadable"),
        "photo": ("failed", "unsupported_image"),
        "missing": ("failed", "image_not_found"),
        "rotated": ("ok", None),
        "png_named": ("ok", None),
        "camera": ("ok", None),
    }
    for k, (status, code) in expect.items():
        assert (got[k]["status"], got[k]["error_code"]) == (status, code), got[k]
        assert (got[k]["error_message"] is None) == (code is None)
    assert (got["rotated"]["source_width"], got["rotated"]["source_height"]) == (400, 600)
    assert "0 bytes" in got["empty"]["error_message"]
    assert "HEIF" in got["photo"]["error_message"]


def test_source_limits_from_header_and_from_manifest(tmp_path, broken):
    rows = [
        {"id": "hdr", "image": str(broken / "camera.png"), "aspect_ratio": "1:1"},
        {
            "id": "known",
            "image": "never/read.png",
            "image_width": 9000,
            "image_height": 9000,
            "aspect_ratio": "1:1",
        },
        {
            "id": "fine",
            "image": "never/read.png",
            "image_width": 500,
            "image_height": 100,
            "aspect_ratio": "1:1",
        },
    ]
    got = {
        r["id"]: r
        for r in by_row(run_plan(tmp_path, rows, limits={"max_source_pixels": 100_000})[1])
    }
    assert (
        got["hdr"]["error_code"] == "image_too_large" and "512×512" in got["hdr"]["error_message"]
    )
    assert (
        got["known"]["error_code"] == "image_too_large"
        and "max_source_pixels" in got["known"]["error_message"]
    )
    # known size: planned without touching the (non-existent) file
    assert got["fine"]["status"] == "ok" and got["fine"]["canvas_width"] == 500
    small = {
        r["id"]: r
        for r in by_row(run_plan(tmp_path, rows[:1], limits={"max_source_bytes": 1000})[1])
    }
    assert (
        small["hdr"]["error_code"] == "image_too_large"
        and "max_source_bytes" in small["hdr"]["error_message"]
    )


def test_image_bytes_rows(tmp_path, photos):
    buf = io.BytesIO()
    Image.open(photos["chelsea"]).save(buf, format="WEBP")
    rows = [
        {"id": "inline", "image_bytes": buf.getvalue(), "aspect_ratio": "1:1"},
        {"id": "junk", "image_bytes": b"\x89PNG\r\n\x1a\nnope", "aspect_ratio": "1:1"},
        {
            "id": "both",
            "image": str(photos["chelsea"]),
            "image_bytes": buf.getvalue(),
            "aspect_ratio": "1:1",
        },
        {"id": "none", "aspect_ratio": "1:1"},
    ]
    got = {r["id"]: r for r in by_row(run_plan(tmp_path, rows)[1])}
    assert (
        got["inline"]["status"],
        got["inline"]["source_width"],
        got["inline"]["canvas_height"],
    ) == ("ok", 451, 451)
    assert got["junk"]["error_code"] == "image_unreadable"
    assert (
        got["both"]["error_code"] == "invalid_request"
        and "not both" in got["both"]["error_message"]
    )
    assert (
        got["none"]["error_code"] == "invalid_request"
        and "no source image" in got["none"]["error_message"]
    )


@pytest.mark.parametrize(
    "bad_id", ["../x", "a/b", "/abs", "", ".hidden", "x" * 201, "tab\there", "nul\x00", "é"]
)
def test_unsafe_ids_rejected(tmp_path, bad_id):
    rows = [
        {
            "id": bad_id,
            "image": "never.png",
            "image_width": 100,
            "image_height": 100,
            "aspect_ratio": "1:1",
        },
        {
            "id": "x" * 200,
            "image": "never.png",
            "image_width": 100,
            "image_height": 100,
            "aspect_ratio": "1:1",
        },
    ]
    got = by_row(run_plan(tmp_path, rows)[1])
    assert got[0]["status"] == "rejected" and got[0]["error_code"] == "invalid_id"
    assert "not allowed" in got[0]["error_message"]
    assert got[1]["status"] == "ok"


def test_duplicate_ids_keep_the_first(tmp_path):
    base = {"image": "n.png", "image_width": 100, "image_height": 100}
    rows = [
        {"id": "a", **base, "aspect_ratio": "1:1"},
        {"id": "b", **base, "aspect_ratio": "1:1"},
        {"id": "a", **base, "aspect_ratio": "2:1"},
        {"id": "a", **base, "mode": "ultra", "aspect_ratio": "1:1"},
    ]
    got = by_row(run_plan(tmp_path, rows)[1])
    assert [r["error_code"] for r in got] == [None, None, "duplicate_id", "invalid_request"]
    assert "manifest row 0" in got[2]["error_message"]
    assert duplicate_first_rows(["x", "y", "x", "z", "y"], [0, 1, 2, 3, 4]) == {"x": 0, "y": 1}


@pytest.mark.parametrize(
    "row,needle",
    [
        ({"width": "abc", "height": 100}, "width must be an integer"),
        ({"width": 100.5, "height": 100}, "width must be an integer"),
        ({"aspect_ratio": "0:1"}, "aspect_ratio '0:1'"),
        ({"aspect_ratio": "wide"}, "aspect_ratio 'wide'"),
        ({"aspect_ratio": "1:1", "mode": "ultra"}, "mode 'ultra'"),
        ({"aspect_ratio": "1:1", "output_format": "gif"}, "output_format 'gif'"),
        ({"aspect_ratio": "1:1", "anchor": "middle"}, "anchor 'middle'"),
        ({"aspect_ratio": "1:1", "width": 100, "height": 100}, "not both"),
        ({"width": 100}, "go together"),
        ({"aspect_ratio": "1:1", "seed": -5}, "seed must be"),
        (
            {"aspect_ratio": "1:1", "reference_offset_x": "left"},
            "reference_offset_x must be an integer",
        ),
    ],
)
def test_invalid_request_rows(tmp_path, row, needle):
    base = {"id": "r", "image": "n.png", "image_width": 100, "image_height": 100}
    ok = {
        "id": "fine",
        "image": "n.png",
        "image_width": 100,
        "image_height": 100,
        "aspect_ratio": "2:1",
    }
    got = by_row(run_plan(tmp_path, [{**base, **row}, ok])[1])
    assert got[0]["status"] == "rejected" and got[0]["error_code"] == "invalid_request"
    assert needle in got[0]["error_message"], got[0]["error_message"]
    assert got[1]["status"] == "ok"  # a bad row never takes others with it


def test_defaults_and_row_overrides(tmp_path):
    base = {"image": "n.png", "image_width": 300, "image_height": 200}
    rows = [
        {"id": "d", **base},
        {"id": "w", **base, "width": 400, "height": 400},
        {"id": "f", **base, "mode": "FAST", "output_format": "jpg"},
    ]
    got = {
        r["id"]: r
        for r in by_row(
            run_plan(tmp_path, rows, defaults={"aspect_ratio": "1:1", "output_format": "webp"})[1]
        )
    }
    assert (got["d"]["canvas_width"], got["d"]["canvas_height"], got["d"]["output_format"]) == (
        300,
        300,
        "webp",
    )
    assert (got["w"]["canvas_width"], got["w"]["canvas_height"]) == (
        400,
        400,
    )  # row target wins, not "both"
    assert (got["f"]["mode"], got["f"]["output_format"], got["f"]["steps"]) == ("fast", "jpeg", 17)


def test_seeds_derived_from_run_seed_and_id(tmp_path):
    base = {"image": "n.png", "image_width": 100, "image_height": 100, "aspect_ratio": "1:1"}
    rows = [{"id": "a", **base}, {"id": "b", **base}, {"id": "c", **base, "seed": 42}]
    s0 = {r["id"]: r["seed"] for r in by_row(run_plan(tmp_path, rows)[1])}
    s7 = {r["id"]: r["seed"] for r in by_row(run_plan(tmp_path, rows, runtime={"seed": 7})[1])}
    assert s0["a"] == derive_seed(0, "a") and s0["a"] != s0["b"] and s0["c"] == 42
    assert s7["a"] != s0["a"] and s7["c"] == 42
    # batch-independent: planning row "b" alone gives the same seed
    assert by_row(run_plan(tmp_path, rows[1:2])[1])[0]["seed"] == s0["b"]


def test_passthrough_columns_copied(tmp_path):
    rows = [
        {
            "id": "a",
            "image": "n.png",
            "image_width": 100,
            "image_height": 50,
            "aspect_ratio": "1:1",
            "sku": "S-1",
        },
        {
            "id": "../b",
            "image": "n.png",
            "image_width": 100,
            "image_height": 50,
            "aspect_ratio": "1:1",
            "sku": "S-2",
        },
    ]
    plan = run_plan(tmp_path, rows, output={"passthrough_columns": ["sku"]})[1]
    assert plan.column("sku").to_pylist() == ["S-1", "S-2"]


def test_batches_equal_whole(tmp_path, photos):
    rows = [
        {
            "id": f"r{i}",
            "image": str(photos["coffee"]),
            "aspect_ratio": ["1:1", "16:9", "4:5"][i % 3],
            "mode": ["high", "fast"][i % 2],
        }
        for i in range(20)
    ] + [{"id": "r3", "image": "x", "aspect_ratio": "1:1"}]
    _, whole, cfg = run_plan(tmp_path, rows)
    table = manifest.read(cfg)
    stage = PlanStage(cfg, duplicate_first_rows(table.column("id"), table.column("manifest_row")))
    parts = pa.concat_tables([stage(table.slice(s, 4)) for s in range(0, table.num_rows, 4)])
    assert parts.equals(whole)


def test_summary_counts_and_cost(tmp_path):
    base = {"image": "n.png", "image_width": 1024, "image_height": 512}
    rows = [
        {"id": "h", **base, "width": 1024, "height": 1024},
        {"id": "f", **base, "width": 1024, "height": 1024, "mode": "fast"},
        {"id": "same", **base, "aspect_ratio": "2:1"},
        {"id": "big", **base, "width": 4096, "height": 4096},
        {"id": "../x", **base, "aspect_ratio": "1:1"},
    ]
    _, plan, cfg = run_plan(tmp_path, rows)
    s = summarise(plan, cfg)
    assert s["by_status"] == {"ok": 3, "rejected": 2, "failed": 0}
    assert s["by_code"] == {"canvas_too_large": 1, "invalid_id": 1}
    assert s["generated"] == {"high": 1, "fast": 1} and s["passthrough_ok"] == 1
    assert s["output_megapixels"] == round((2 * 1024 * 1024 + 1024 * 512) / 1e6, 3)
    assert s["estimated_gpu_seconds"] == round((50 + 17) * cfg.plan.seconds_per_step_at_1mp, 1)
    # fast: the reference (1024 x 512 at y=256) is on the grid, so both generate 1024 x 1024
    assert s["generated_shapes"] == 2
    assert s["top_generated_shapes"] == {"1024x1024 fast": 1, "1024x1024 high": 1}


def test_gpu_estimate_prices_attention_quadratically(tmp_path):
    """A 2048^2 canvas costs FLUX.1's FLOP ratio (5.62x) of a 1024^2 one, not 4x."""
    from pipeline.plan.flops import FLUX1_CONFIG, transformer_flops

    ratio = transformer_flops(FLUX1_CONFIG, 16384, 512) / transformer_flops(FLUX1_CONFIG, 4096, 512)
    assert ratio == pytest.approx(5.62, abs=0.01)
    base = {"image": "n.png", "image_width": 512, "image_height": 512}
    rows = [
        {"id": "a", **base, "width": 1024, "height": 1024},
        {"id": "b", **base, "width": 2048, "height": 2048},
    ]
    _, plan, cfg = run_plan(tmp_path, rows)
    spp = cfg.plan.seconds_per_step_at_1mp
    assert summarise(plan, cfg)["estimated_gpu_seconds"] == round(50 * spp * (1 + ratio), 1)


def test_summary_counts_generated_shapes_after_bucketing(tmp_path):
    """The compiled-shape count `outpaint plan` reports: 16-px grid by default, fewer
    with model.optimize.bucket_px; the cost estimate prices the bucketed canvas."""
    base = {"image": "n.png", "image_width": 300, "image_height": 300}
    rows = [{"id": f"r{i}", **base, "width": 1000 + 8 * i, "height": 1000} for i in range(6)]
    _, plan, cfg = run_plan(tmp_path, rows)
    s = summarise(plan, cfg)
    assert (
        s["generated_shapes"] == 3
    )  # widths 1000..1040 on the 16 grid: 1008, 1024, 1040 (two each)
    assert set(s["top_generated_shapes"]) == {"1008x1008 high", "1024x1008 high", "1040x1008 high"}
    cfg64 = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(
                update={
                    "optimize": cfg.model.optimize.model_copy(
                        update={"bucket_px": 64, "max_shapes": 1}
                    )
                }
            )
        }
    )
    s64 = summarise(plan, cfg64)
    assert s64["top_generated_shapes"] == {"1024x1024 high": 4, "1088x1024 high": 2}
    assert s64["estimated_gpu_seconds"] > s["estimated_gpu_seconds"]  # padded canvases cost more
    from pipeline.plan.summary import format_summary

    assert "shapes" not in format_summary(s64)  # the CPU backend compiles nothing
    assert "more shapes than model.optimize.max_shapes (1)" in format_summary(
        {**s64, "backend": "flux-fill"}
    )


# ------------------------------------------------------------------ CLI


def outpaint(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_plan_writes_parquet_and_summary(tmp_path, photos):
    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {"id": "a", "image": str(photos["astronaut"]), "aspect_ratio": "16:9"},
            {"id": "b", "image": str(photos["coffee"]), "width": 2049, "height": 2048},
        ],
    )
    c = write_config(
        tmp_path / "c.yaml", {"input": {"manifest": m}, "output": {"uri": str(tmp_path / "out")}}
    )
    r = outpaint("plan", c, "--out", str(tmp_path / "plan"))
    assert r.returncode == 0, r.stderr
    assert "canvas_too_large" in r.stdout
    # the classical CPU backend: no GPU estimate, no compiled-shape advice
    assert "GPU" not in r.stdout and "shapes" not in r.stdout
    plan = pq.read_table(tmp_path / "plan" / "plan.parquet")
    assert plan.column("status").to_pylist() == ["ok", "rejected"]
    assert plan.column("canvas_width").to_pylist() == [911, 2049]
    assert "4,196,352 px exceeds the 4,194,304 px limit" in plan.column("error_message")[1].as_py()
    summary = json.loads((tmp_path / "plan" / "summary.json").read_text())
    assert summary["by_code"] == {"canvas_too_large": 1}
    # nothing written under the output: a dry run
    assert not (tmp_path / "out").exists()


def test_cli_validate_and_bad_config_exit_codes(tmp_path):
    m = write_manifest(
        tmp_path / "m.parquet", [{"id": "a", "image": "x.png", "aspect_ratio": "1:1", "bbox_x1": 1}]
    )
    good = write_config(tmp_path / "c.yaml", {"input": {"manifest": m}, "output": {"uri": "o"}})
    r = outpaint("validate", good)
    assert r.returncode == 2 and "bbox_x1" in r.stderr and "reference_offset_x" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one line, no traceback
    r = outpaint("validate", good, "--set", "sizing.max_pixels=9999999")
    assert r.returncode == 2 and "sizing.max_pixels" in r.stderr
    m2 = write_manifest(
        tmp_path / "m2.parquet", [{"id": "a", "image": "x.png", "aspect_ratio": "1:1"}]
    )
    r = outpaint("validate", good, "--set", f"input.manifest={m2}")
    assert r.returncode == 0 and "1 rows" in r.stdout


def test_plan_warns_about_mostly_generated_rows(tmp_path, photos):
    """chelsea (451x300) on a 1080x1350 tile is ~91 % generated: plan says so, counts
    the rows and gives the fill-the-canvas recipe, which then clears the warning."""
    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {"id": "small", "image": str(photos["chelsea"]), "width": 1080, "height": 1350},
            {"id": "small2", "image": str(photos["chelsea"]), "width": 1080, "height": 1350},
            {"id": "fine", "image": str(photos["chelsea"]), "width": 500, "height": 400},
        ],
    )
    c = write_config(
        tmp_path / "c.yaml", {"input": {"manifest": m}, "output": {"uri": str(tmp_path / "out")}}
    )
    r = outpaint("plan", c)
    assert r.returncode == 0, r.stderr
    assert "warning: 2 rows would be more than 75% generated (up to 91%)" in r.stdout
    assert "sizing.fit: contain and sizing.allow_upscale: true" in r.stdout
    r = outpaint("plan", c, "--set", "sizing.fit=contain", "--set", "sizing.allow_upscale=true")
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout
    r = outpaint("plan", c, "--set", "plan.warn_generated_share=0.95")
    assert "warning" not in r.stdout


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_text_manifests_plan_like_parquet(tmp_path, photos, fmt):
    """The same rows as CSV, TSV or JSON Lines give the same plan as Parquet; ids that
    look like numbers stay strings; `jpg` is taken for jpeg."""
    from pipeline.io.catalogue import write as write_table

    rows = [
        {
            "id": "00123",
            "image": str(photos["coffee"]),
            "aspect_ratio": "16:9",
            "output_format": "jpg",
        },
        {
            "id": "b",
            "image": str(photos["chelsea"]),
            "width": 640,
            "height": 480,
            "mode": "fast",
            "reference_offset_x": 3,
            "reference_offset_y": 5,
        },
        {
            "id": "c",
            "image": str(photos["camera"]),
            "aspect_ratio": "1.5",
            "prompt": 'a, "quoted" scene',
        },
        {"id": "d", "image": str(tmp_path / "missing.png"), "aspect_ratio": "1:1"},
    ]
    cols = [
        "id",
        "image",
        "aspect_ratio",
        "width",
        "height",
        "mode",
        "output_format",
        "reference_offset_x",
        "reference_offset_y",
        "prompt",
    ]
    table = pa.table({c: [r.get(c) for r in rows] for c in cols})
    ref = plan_manifest(
        make_config(tmp_path, write_manifest(tmp_path / "m.parquet", rows)),
        manifest.read(make_config(tmp_path, str(tmp_path / "m.parquet"))),
    )
    text = write_table(table, str(tmp_path / f"m.{fmt}"))
    cfg = make_config(tmp_path, text)
    got = plan_manifest(cfg, manifest.read(cfg))
    assert got.column("id").to_pylist()[0] == "00123"
    assert got.column("output_format").to_pylist()[0] == "jpeg"
    for c in (
        "id",
        "status",
        "error_code",
        "canvas_width",
        "canvas_height",
        "offset_x",
        "offset_y",
        "mode",
        "prompt",
        "seed",
    ):
        assert got.column(c).to_pylist() == ref.column(c).to_pylist(), c


def test_non_table_manifest_is_one_line_exit_2(tmp_path, photos):
    """A PNG named .parquet, a CSV named .parquet, a broken JSON Lines file: one stderr
    line and exit 2 from validate, plan and run, before any work."""
    import shutil

    shutil.copy(photos["coffee"], tmp_path / "photo.parquet")
    (tmp_path / "rows.parquet").write_text("id,image,aspect_ratio\na,x.png,1:1\n")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "image": "x.png"}\n{not json\n')
    for name in ("photo.parquet", "rows.parquet", "bad.jsonl"):
        c = write_config(
            tmp_path / "c.yaml",
            {"input": {"manifest": str(tmp_path / name)}, "output": {"uri": str(tmp_path / "out")}},
        )
        for verb in ("validate", "plan", "run"):
            r = outpaint(verb, c)
            assert r.returncode == 2, (name, verb, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and name in lines[0] and "not a readable" in lines[0], (
                name,
                verb,
                lines,
            )
    assert not (tmp_path / "out" / "images").exists()
    # the CSV, read as what it is, works
    c = write_config(
        tmp_path / "c.yaml",
        {
            "input": {"manifest": str(tmp_path / "rows.parquet"), "format": "csv"},
            "output": {"uri": str(tmp_path / "out")},
        },
    )
    r = outpaint("validate", c)
    assert r.returncode == 0 and "1 rows" in r.stdout


def test_vectorised_seeds_equal_scalar():
    from pipeline.plan.rows import derive_seeds

    ids = ["a", "", "sku-00000001", "x" * 200, "ünï", "a", "b.c_d-e"]
    got = derive_seeds(123, pa.array(ids)).tolist()
    assert got == [derive_seed(123, i) for i in ids]
    assert got[0] == got[5] and len(set(got)) == 6 and all(0 <= s < 2**63 for s in got)
    sliced = pa.array(["zz"] + ids).slice(1)  # non-zero array offset
    assert derive_seeds(123, sliced).tolist() == got
