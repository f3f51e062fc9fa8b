from __future__ import annotations

from fractions import Fraction

import pytest

from pipeline import config as C
from pipeline.config import ConfigError

BASE = {"input": {"manifest": "m.parquet"}, "output": {"uri": "out"}}


def with_(**sections):
    data = {k: dict(v) for k, v in BASE.items()}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return data


def error(data) -> str:
    with pytest.raises(ConfigError) as e:
        C.from_dict(data)
    return str(e.value)


def test_minimal_config_has_defaults():
    cfg = C.from_dict(BASE)
    assert cfg.model.backend == "classical"
    assert cfg.sizing.max_pixels == 4_194_304
    assert (
        cfg.defaults.mode == "high"
        and cfg.defaults.output_format == "png"
        and cfg.defaults.anchor == "center"
    )
    assert cfg.model.steps == 50 and cfg.model.steps_fast == 17
    assert cfg.output.mode == "resume" and cfg.runtime.seed == 0


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"output": {"uri": "x"}}, "`input` is required"),
        ({"input": {"manifest": "m"}}, "`output` is required"),
        ({"input": {}, "output": {"uri": "x"}}, "`input.manifest` is required"),
    ],
)
def test_required_keys_named(data, needle):
    assert needle in error(data)


def test_unknown_key_named_with_allowed_list():
    msg = error(with_(sizing={"max_pixel": 5}))
    assert "unknown key `sizing.max_pixel`" in msg and "max_pixels" in msg
    assert "unknown key `bogus`" in error({**BASE, "bogus": 1})


@pytest.mark.parametrize(
    "section,values,needle",
    [
        ("sizing", {"max_pixels": 5_000_000}, "sizing.max_pixels"),
        ("sizing", {"max_pixels": 0}, "sizing.max_pixels"),
        ("defaults", {"mode": "ultra"}, "defaults.mode"),
        ("defaults", {"output_format": "gif"}, "defaults.output_format"),
        ("defaults", {"anchor": "middle"}, "defaults.anchor"),
        ("defaults", {"aspect_ratio": "0:1"}, "must be positive"),
        ("defaults", {"aspect_ratio": "1:1", "width": 512, "height": 512}, "not both"),
        ("defaults", {"width": 512}, "width and height go together"),
        ("model", {"backend": "dalle"}, "model.backend"),
        ("model", {"backend": "flux-fill"}, "needs model.path"),
        ("output", {"mode": "append"}, "output.mode"),
        ("runtime", {"seed": -1}, "runtime.seed"),
    ],
)
def test_bad_values_name_the_key(section, values, needle):
    msg = error(with_(**{section: values}))
    assert needle in msg, msg


def test_bad_value_message_says_what_is_allowed():
    msg = error(with_(defaults={"mode": "ultra"}))
    assert "'high'" in msg and "'fast'" in msg and "ultra" in msg


def test_set_overrides_parse_yaml_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("input: {manifest: m.parquet}\noutput: {uri: out}\n")
    cfg = C.load(
        str(p),
        [
            "runtime.seed=7",
            "defaults.auto_crop=true",
            "output.passthrough_columns=[sku, brand]",
            "defaults.aspect_ratio=16:9",
            "model.backend=solid",
        ],
    )
    assert cfg.runtime.seed == 7 and cfg.defaults.auto_crop is True
    assert cfg.output.passthrough_columns == ["sku", "brand"]
    assert C.parse_ratio(cfg.defaults.aspect_ratio) == Fraction(16, 9)
    assert cfg.model.backend == "solid"


def test_set_unknown_key_fails_naming_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("input: {manifest: m.parquet}\noutput: {uri: out}\n")
    with pytest.raises(ConfigError, match="runtime.sed"):
        C.load(str(p), ["runtime.sed=7"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        C.load(str(p), ["runtime.seed"])


def test_yaml_syntax_error_says_where(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("input: {manifest: m.parquet\noutput: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        C.load(str(p))
    with pytest.raises(ConfigError, match="file not found"):
        C.load(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize(
    "value,ratio",
    [
        ("16:9", (16, 9)),
        ("1.91:1", (191, 100)),
        (1.5, (3, 2)),
        ("4:5", (4, 5)),
        (" 2 : 3 ", (2, 3)),
        ("0.8", (4, 5)),
    ],
)
def test_parse_ratio_exact(value, ratio):
    r = C.parse_ratio(value)
    assert (r.numerator, r.denominator) == ratio


@pytest.mark.parametrize("value", ["0:1", "-1:2", "abc", "1:0", "", None, True, "1:100000"])
def test_parse_ratio_rejects(value):
    with pytest.raises(ValueError):
        C.parse_ratio(value)


def test_reference_config_lists_every_key_with_its_default():
    """configs/reference.yaml is the documentation of every key: it must load, name each
    key the model has (no more, no fewer) and give each its default."""
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "configs", "reference.yaml")
    with open(path) as f:
        raw = C.parse_yaml(f.read())
    ref = C.dump(C.from_dict(raw))
    defaults = C.dump(
        C.from_dict(
            with_(
                output={"uri": ref["output"]["uri"]}, input={"manifest": ref["input"]["manifest"]}
            )
        )
    )
    assert ref == defaults

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and v and k not in ("storage_options",):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(raw) == keys(defaults)
