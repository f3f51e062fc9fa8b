from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import config as C
from pipeline.config import ConfigError
from pipeline.io import manifest

from ..conftest import make_config, write_manifest


def test_unquoted_ratio_in_yaml_file_stays_a_ratio(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "input: {manifest: m.parquet}\noutput: {uri: out}\ndefaults: {aspect_ratio: 16:9}\n"
    )
    assert C.parse_ratio(C.load(str(p)).defaults.aspect_ratio) == C.Fraction(16, 9)


def test_unknown_columns_fail_naming_them_with_hints(tmp_path):
    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {
                "id": "a",
                "image": "x.png",
                "width": 100,
                "height": 100,
                "bbox_x1": 3,
                "bbox_y1": 4,
                "colour": "red",
            }
        ],
    )
    cfg = make_config(tmp_path, m)
    with pytest.raises(ConfigError) as e:
        manifest.read_schema(cfg)
    msg = str(e.value)
    assert "`bbox_x1` (use reference_offset_x" in msg
    assert "`bbox_y1` (use reference_offset_y" in msg
    assert "`colour`" in msg and "passthrough_columns" in msg


def test_passthrough_columns_allowed_and_must_exist(tmp_path):
    m = write_manifest(
        tmp_path / "m.parquet", [{"id": "a", "image": "x.png", "aspect_ratio": "1:1", "sku": "S1"}]
    )
    manifest.read_schema(make_config(tmp_path, m, output={"passthrough_columns": ["sku"]}))
    with pytest.raises(ConfigError, match="no such column"):
        manifest.read_schema(
            make_config(tmp_path, m, output={"passthrough_columns": ["sku", "brand"]})
        )


@pytest.mark.parametrize(
    "rows,needle",
    [
        ([{"image": "x.png", "aspect_ratio": "1:1"}], "no `id` column"),
        ([{"id": "a", "aspect_ratio": "1:1"}], "no `image` or `image_bytes`"),
        ([{"id": "a", "image": "x.png"}], "defaults.aspect_ratio"),
    ],
)
def test_missing_required_columns(tmp_path, rows, needle):
    cfg = make_config(tmp_path, write_manifest(tmp_path / "m.parquet", rows))
    with pytest.raises(ConfigError, match=needle):
        manifest.read_schema(cfg)


def test_target_from_defaults_satisfies_schema(tmp_path):
    m = write_manifest(tmp_path / "m.parquet", [{"id": "a", "image": "x.png"}])
    manifest.read_schema(make_config(tmp_path, m, defaults={"aspect_ratio": "4:5"}))


def _three_files(d):
    d.mkdir()
    for k in range(3):
        write_manifest(
            d / f"part-{k}.parquet",
            [{"id": f"r{k}{j}", "image": "x.png", "aspect_ratio": "1:1"} for j in range(k + 1)],
        )
    (d / "_SUCCESS").write_text("")
    return d


def test_read_directory_and_glob_in_order(tmp_path):
    d = _three_files(tmp_path / "man")
    t = manifest.read(make_config(tmp_path, str(d)))
    assert t.column("id").to_pylist() == ["r00", "r10", "r11", "r20", "r21", "r22"]
    assert t.column(manifest.ROW_INDEX).to_pylist() == list(range(6))
    g = manifest.read(make_config(tmp_path, str(d / "part-[12].parquet")))
    assert g.num_rows == 5


def test_missing_manifest_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="input.manifest: .*nope"):
        manifest.read_schema(make_config(tmp_path, str(tmp_path / "nope")))


def test_files_with_different_columns_concatenate(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    write_manifest(d / "a.parquet", [{"id": "a", "image": "x.png", "aspect_ratio": "1:1"}])
    write_manifest(d / "b.parquet", [{"id": "b", "image": "x.png", "width": 100, "height": 100}])
    t = manifest.read(make_config(tmp_path, str(d)))
    assert t.num_rows == 2 and t.column("width").to_pylist() == [None, 100]


def test_manifest_on_memory_filesystem(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open("/mf/m.parquet", "wb") as f:
        pq.write_table(pa.table({"id": ["a"], "image": ["x.png"], "aspect_ratio": ["1:1"]}), f)
    t = manifest.read(make_config(tmp_path, "memory://mf/"))
    assert t.column("id").to_pylist() == ["a"]


def test_manifest_on_s3(tmp_path, s3_bucket):
    fs, bucket, opts = s3_bucket
    for k in range(2):
        with fs.open(f"{bucket}/manifests/day={k}/part.parquet", "wb") as f:
            pq.write_table(
                pa.table({"id": [f"a{k}"], "image": ["x.png"], "aspect_ratio": ["1:1"]}), f
            )
    cfg = make_config(tmp_path, f"s3://{bucket}/manifests/", input={"storage_options": opts})
    assert manifest.read(cfg).column("id").to_pylist() == ["a0", "a1"]
    cfg = make_config(
        tmp_path, f"s3://{bucket}/manifests/day=1/*.parquet", input={"storage_options": opts}
    )
    assert manifest.read(cfg).column("id").to_pylist() == ["a1"]
