"""``model.backend: diffusers`` is validated before any work from the checkpoint's own
files (no weights loaded): its pipeline class, its recipe's defaults, the pipeline
arguments a config may add, and its licence, for the plan and for
``model.require_commercial_license`` (flux-fill included)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from pipeline import cli
from pipeline import config as config_mod
from pipeline.config import ConfigError
from pipeline.config.checkpoints import card_front_matter, describe
from pipeline.config.licenses import COMMERCIAL, NON_COMMERCIAL, UNKNOWN, verdict

pytest.importorskip("diffusers")


def cfg_of(path: str, backend: str = "diffusers", **model):
    return config_mod.from_dict(
        {
            "input": {"manifest": "m"},
            "output": {"uri": "o"},
            "model": {"backend": backend, "path": path, "dtype": "float32", **model},
        }
    )


def test_a_checkpoint_that_is_not_an_inpainting_pipeline_is_refused(tiny_flux, tmp_path):
    with pytest.raises(ConfigError) as e:
        cfg_of(tiny_flux)
    msg = str(e.value)
    assert "holds a FluxFillPipeline, not an inpainting pipeline" in msg
    assert "StableDiffusionXLInpaintPipeline" in msg and "Flux2KleinInpaintPipeline" in msg
    with pytest.raises(ConfigError, match=r"model.path: no model_index.json at"):
        cfg_of(str(tmp_path / "nothing-here"))
    with pytest.raises(ConfigError, match=r"backend diffusers needs model.path"):
        config_mod.from_dict(
            {"input": {"manifest": "m"}, "output": {"uri": "o"}, "model": {"backend": "diffusers"}}
        )


def test_pipeline_kwargs_are_checked_against_the_signature(tiny_inpaint):
    z = tiny_inpaint["z-image"]
    with pytest.raises(ConfigError) as e:
        cfg_of(z, pipeline_kwargs={"cfg_trunc": 0.9})
    assert "model.pipeline_kwargs.cfg_trunc: not an argument of ZImageInpaintPipeline" in str(
        e.value
    )
    assert "cfg_truncation" in str(e.value)  # what it takes instead
    with pytest.raises(ConfigError, match=r"model.pipeline_kwargs.prompt: set by outpaint itself"):
        cfg_of(z, pipeline_kwargs={"prompt": "x"})
    ok = cfg_of(z, pipeline_kwargs={"cfg_truncation": 0.9})
    assert ok.model.pipeline_kwargs == {"cfg_truncation": 0.9}
    # it changes pixels: part of every row's request hash
    from pipeline.plan.hashing import run_constant

    assert run_constant(ok) != run_constant(cfg_of(z))


def test_licences_from_cards_and_overrides(tiny_inpaint, tiny_flux, tmp_path):
    from pipeline.config.licenses import license_of

    assert license_of(cfg_of(tiny_inpaint["sdxl"]).model).id == "openrail++"
    z = license_of(cfg_of(tiny_inpaint["z-image"]).model)
    assert (z.id, z.source, z.verdict) == ("apache-2.0", "model card", COMMERCIAL)
    over = license_of(cfg_of(tiny_inpaint["z-image"], license="cc-by-nc-sa-4.0").model)
    assert (over.id, over.source, over.verdict) == (
        "cc-by-nc-sa-4.0",
        "model.license",
        NON_COMMERCIAL,
    )
    # flux-fill: FLUX.1 Fill [dev]'s card, as published
    flux = str(tmp_path / "flux")
    shutil.copytree(tiny_flux, flux)
    with open(os.path.join(flux, "README.md"), "w") as f:
        f.write(
            "---\nlanguage:\n- en\nlicense: other\nlicense_name: flux-1-dev-non-commercial-license\n"
            "license_link: LICENSE.md\n---\n\n# FLUX.1 Fill [dev]\n"
        )
    fl = license_of(cfg_of(flux, backend="flux-fill").model)
    assert (fl.id, fl.verdict, fl.link) == (
        "flux-1-dev-non-commercial-license",
        NON_COMMERCIAL,
        "LICENSE.md",
    )
    assert "non-commercial" in fl.line()
    assert license_of(cfg_of(tiny_flux, backend="flux-fill").model).verdict == UNKNOWN  # no card
    assert (
        license_of(config_mod.from_dict({"input": {"manifest": "m"}, "output": {"uri": "o"}}).model)
        is None
    )


@pytest.mark.parametrize(
    "license_id,expected",
    [
        ("apache-2.0", COMMERCIAL),
        ("MIT", COMMERCIAL),
        ("openrail++", COMMERCIAL),
        ("flux-1-dev-non-commercial-license", NON_COMMERCIAL),
        ("cc-by-nc-4.0", NON_COMMERCIAL),
        ("cc-by-nc-nd-3.0", NON_COMMERCIAL),
        ("stabilityai-ai-community", UNKNOWN),
        ("llama3", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_the_table_of_licence_ids(license_id, expected):
    assert verdict(license_id)[0] == expected


def test_card_front_matter_is_read_safely():
    assert card_front_matter("---\nlicense: mit\n---\n# x") == {"license": "mit"}
    assert card_front_matter("# no front matter\nlicense: mit") == {}
    assert card_front_matter("---\nlicense: [unclosed\n---\n") == {}
    assert card_front_matter("---\n!!python/object:os.system ls\n---\n") == {}  # safe_load


def _write_config(tmp_path, path: str, **model) -> str:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,image,width,height\na,missing.png,64,64\n")
    doc = {
        "input": {"manifest": str(manifest)},
        "output": {"uri": str(tmp_path / "out")},
        "model": {"backend": "diffusers", "path": path, "dtype": "float32", **model},
    }
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def test_the_plan_prints_the_licence_and_commercial_use_is_enforced(tiny_inpaint, tmp_path, capsys):
    ok = _write_config(tmp_path, tiny_inpaint["z-image"], require_commercial_license=True)
    assert cli.main(["plan", ok]) == 0
    out = capsys.readouterr().out
    assert "model licence: apache-2.0, from the model card: known to permit commercial use" in out
    assert "measure this checkpoint with `outpaint bench`" in out  # not FLUX: price it yourself
    nc = _write_config(
        tmp_path, tiny_inpaint["z-image"], require_commercial_license=True, license="cc-by-nc-4.0"
    )
    assert cli.main(["plan", nc]) == 2  # before any work
    err = capsys.readouterr().err
    assert "model.require_commercial_license" in err and "non-commercial" in err
    bare = str(tmp_path / "no-card")
    shutil.copytree(tiny_inpaint["sdxl"], bare)
    os.remove(os.path.join(bare, "README.md"))
    assert cli.main(["plan", _write_config(tmp_path, bare)]) == 0
    assert "model licence: unknown (no model card beside the weights" in capsys.readouterr().out
    assert cli.main(["plan", _write_config(tmp_path, bare, require_commercial_license=True)]) == 2
    assert "set model.license" in capsys.readouterr().err
    # the card absent but the licence known to whoever runs it
    fixed = _write_config(tmp_path, bare, require_commercial_license=True, license="openrail++")
    assert cli.main(["plan", fixed]) == 0
    assert (
        "openrail++, from model.license: known to permit commercial use" in capsys.readouterr().out
    )


def test_a_checkpoint_on_object_storage_is_described_from_its_small_files(tiny_inpaint, s3_bucket):
    fs, bucket, opts = s3_bucket
    fs.put(tiny_inpaint["z-image"].rstrip("/") + "/", f"{bucket}/models/z/", recursive=True)
    uri = f"s3://{bucket}/models/z"
    cfg = cfg_of(uri, storage_options=opts)
    assert (cfg.model.steps, cfg.model.guidance) == (50, 4.0)
    ckpt = describe(uri, opts)
    assert ckpt.class_name == "ZImageInpaintPipeline" and ckpt.vae_scale == 8
    assert ckpt.license == "apache-2.0"
    assert (
        json.loads(fs.cat(f"{bucket}/models/z/model_index.json"))["_class_name"] == ckpt.class_name
    )


def test_a_card_s_licence_is_reduced_to_an_id(tmp_path):
    from pipeline.config.checkpoints import Checkpoint

    hostile = Checkpoint(
        "X",
        (),
        card={"license": "Apache-2.0\x1b[31m<script>", "license_link": "LICENSE\n<b>x</b>"},
    )
    assert hostile.license == "apache-2.031mscript" and hostile.license_link is None
    fine = Checkpoint(
        "X",
        (),
        card={
            "license": "other",
            "license_name": "flux-1-dev-non-commercial-license",
            "license_link": "https://example.com/LICENSE.md",
        },
    )
    assert fine.license == "flux-1-dev-non-commercial-license"
    assert fine.license_link == "https://example.com/LICENSE.md"


def test_the_vae_scale_of_each_kind_of_vae(tmp_path):
    """From vae/config.json alone: 2 ** (blocks - 1) for AutoencoderKL-style VAEs; Qwen-Image's
    video VAE (no block_out_channels) one factor 2 per stage of temperal_downsample."""
    for name, vae, scale in [
        ("sd", {"block_out_channels": [128, 256, 512, 512]}, 8),
        ("small", {"block_out_channels": [8, 16, 16]}, 4),
        ("qwen", {"base_dim": 96, "temperal_downsample": [False, True, True]}, 8),
    ]:
        d = tmp_path / name
        (d / "vae").mkdir(parents=True)
        (d / "model_index.json").write_text(
            json.dumps({"_class_name": "QwenImagePipeline", "vae": ["diffusers", "X"]})
        )
        (d / "vae" / "config.json").write_text(json.dumps(vae))
        assert describe(str(d)).vae_scale == scale, name


@pytest.mark.parametrize(
    "released,runs_as,steps,guidance,grid",
    [
        ("QwenImagePipeline", "QwenImageInpaintPipeline", 50, 4.0, 16),
        ("QwenImageEditPipeline", "QwenImageEditInpaintPipeline", 50, 4.0, 16),
        ("StableDiffusion3Pipeline", "StableDiffusion3InpaintPipeline", 28, 3.5, 16),
        ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline", 50, 7.5, 8),
        ("FluxPipeline", "FluxInpaintPipeline", 28, 7.0, 16),  # no recipe: the pipeline's own
    ],
)
def test_families_without_tiny_models_resolve_from_their_declaration(
    tmp_path, released, runs_as, steps, guidance, grid
):
    """What the config reads of a released checkpoint without loading it: the inpainting
    class that runs it, the recipe's steps and guidance, the grid."""
    from pipeline.config import families

    d = tmp_path / released
    (d / "vae").mkdir(parents=True)
    comp = "transformer" if grid == 16 else "unet"
    index = {"_class_name": released, comp: ["diffusers", "X"], "vae": ["diffusers", "Y"]}
    (d / "model_index.json").write_text(json.dumps(index))
    (d / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [1, 2, 3, 4]}))
    ckpt = describe(str(d))
    assert families.runs_as(ckpt) == runs_as
    assert families.checkpoint_defaults(str(d), None) == {"steps": steps, "guidance": guidance}
    assert families.grid(ckpt) == grid
