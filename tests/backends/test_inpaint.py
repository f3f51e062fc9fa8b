"""``model.backend: diffusers`` on tiny random-weight checkpoints of three families (an SDXL
inpainting UNet, Z-Image's DiT, FLUX.2 [klein]), loaded by the code that loads real ones:
each canvas equals the family's pipeline called directly with the documented arguments
(within 2/255), batched equals one at a time, the grid pads and never resizes, and the
recipe's claims hold (what the fill reaches, the steps and guidance from the cards)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.backends import Job

from ..conftest import read_png

torch = pytest.importorskip("torch")
FAMILIES = ("sdxl", "z-image", "flux2-klein")


def model_cfg(path: str, **model):
    cfg = config_mod.from_dict(
        {
            "input": {"manifest": "m"},
            "output": {"uri": "o"},
            "model": {"backend": "diffusers", "path": path, "dtype": "float32", **model},
        }
    )
    return cfg.model


def backend(path: str, prompts=None, **model):
    from pipeline.backends.inpaint import DiffusersInpaintBackend

    return DiffusersInpaintBackend(model_cfg(path, **model), prompts=prompts)


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    return read_png(photos["astronaut"])


def job(photo, W, H, rh, rw, x0, y0, seed=11, prompt="a studio photo", at=(100, 150), **kw) -> Job:
    ref = np.ascontiguousarray(photo[at[0] : at[0] + rh, at[1] : at[1] + rw])
    return Job(ref, W, H, x0, y0, seed=seed, prompt=prompt, steps=kw.pop("steps", 3), **kw)


def diffusers_call(be, j: Job, AW: int, AH: int) -> np.ndarray:
    """The family's pipeline called as its docs show, on the same canvas and mask: a PIL
    image with the reference placed on the recipe's fill (grey, or for Z-Image the classical
    backend's continuation, its right/bottom padding the edge repeated), a PIL mask (white =
    generate), the prompt, strength 1, the recipe's steps, guidance and negative prompt, a
    seeded CPU generator."""
    canvas = np.full((AH, AW, 3), 128, np.uint8)
    h, w = j.ref.shape[:2]
    if be.recipe.fill == "classical":
        from pipeline.backends.classical import ClassicalBackend

        done = ClassicalBackend(be.cfg).outpaint(
            [Job(j.ref, j.width, j.height, j.x0, j.y0, j.seed)]
        )[0]
        canvas = np.pad(done, ((0, AH - j.height), (0, AW - j.width), (0, 0)), mode="edge")
    canvas[j.y0 : j.y0 + h, j.x0 : j.x0 + w] = j.ref
    mask = np.full((AH, AW), 255, np.uint8)
    mask[j.y0 : j.y0 + h, j.x0 : j.x0 + w] = 0
    args = {
        "prompt": j.prompt,
        "image": Image.fromarray(canvas),
        "mask_image": Image.fromarray(mask),
        "height": AH,
        "width": AW,
        "strength": 1.0,
        "num_inference_steps": j.steps,
        be.recipe.guidance_arg: be.cfg.guidance,
        "generator": torch.Generator("cpu").manual_seed(j.seed),
        "output_type": "np",
        **be.recipe.extra,
    }
    if be.recipe.negative_prompt is not None:
        args["negative_prompt"] = be.recipe.negative_prompt
    if "image_reference" in be.takes:
        args["image_reference"] = Image.fromarray(j.ref)
    img = be.pipe(**args).images[0]
    return (img * 255).round().astype(np.uint8)


CASES = [  # canvas W x H, reference (h, w), placement x0, y0
    ((128, 96), (48, 64), (32, 24)),
    ((101, 77), (45, 61), (17, 9)),  # off the grid: padded right/bottom, cropped back
]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_equals_its_pipeline_called_directly(tiny_inpaint, photo, family):
    be = backend(tiny_inpaint[family], prompts=["a studio photo"])
    assert be.pipe.text_encoder is None  # every prompt embedded: the encoders were dropped
    direct = backend(tiny_inpaint[family], free_text_encoders=False)
    for (W, H), (rh, rw), (x0, y0) in CASES:
        j = job(photo, W, H, rh, rw, x0, y0)
        AW, AH, GW, GH, steps, _ = be.shape_key(j)
        assert (AW, AH) == (GW, GH) and AW % be.grid == 0 and AH % be.grid == 0
        assert 0 <= AW - W < be.grid and 0 <= AH - H < be.grid  # padded, never resized
        ours = be.outpaint([j])[0]
        theirs = diffusers_call(direct, j, AW, AH)[:H, :W]
        assert ours.shape == theirs.shape == (H, W, 3)
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        assert diff.max() <= 2, (family, (W, H), int(diff.max()))
        assert ours.std() > 5  # a generated canvas, not a constant


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time(tiny_inpaint, photo, family):
    """A row's pixels come from its own seed, prompt and reference, whatever it is batched
    with (a shared reference or generator would show as whole-image differences)."""
    prompts = ["a studio photo", "a beach", ""]
    be = backend(tiny_inpaint[family], prompts=prompts)
    jobs = [  # each its own reference (FLUX.2 [klein] reads it as image_reference too)
        job(photo, 96, 64, 40, 48, 16, 8, seed=1, prompt=prompts[0]),
        job(photo, 96, 64, 40, 48, 16, 8, seed=2, prompt=prompts[1], at=(200, 250)),
        job(photo, 96, 64, 40, 48, 32, 16, seed=3, prompt=prompts[2], at=(300, 120)),
        job(photo, 64, 80, 40, 48, 8, 20, seed=1, prompt=prompts[0]),  # another shape
    ]
    calls = []
    pipe = be.pipe

    class Spy:  # counts pipeline calls and their batch sizes
        def __getattr__(self, name):
            return getattr(pipe, name)

        def __call__(self, **kw):
            calls.append((len(kw["image"]), kw["output_type"]))
            return pipe(**kw)

    be.pipe = Spy()
    batched = be.outpaint(jobs)
    # one call per generated shape; the latents decoded outside the call (and the GPU lock)
    assert sorted(calls) == [(1, "latent"), (3, "latent")]
    be.pipe = pipe
    for j, b in zip(jobs, batched):
        alone = be.outpaint([j])[0]
        # float sums in another order (batched GEMMs): a level or two on a few pixels
        diff = np.abs(alone.astype(int) - b.astype(int))
        assert diff.max() <= 2 and (diff > 1).mean() < 1e-3, family
    assert np.abs(batched[0].astype(int) - batched[1].astype(int)).mean() > 5  # seeds differ
    again = be.outpaint(jobs[:1])[0]
    assert np.array_equal(again, be.outpaint(jobs[:1])[0])  # deterministic


def test_recipes_come_from_the_cards_and_the_config_wins(tiny_inpaint):
    sdxl, z, klein = (model_cfg(tiny_inpaint[f]) for f in FAMILIES)
    assert (sdxl.steps, sdxl.guidance, sdxl.steps_fast) == (20, 8.0, 7)
    assert (z.steps, z.guidance, z.steps_fast) == (50, 4.0, 17)
    # the tiny klein is step-distilled (model_index.json's is_distilled), as FLUX.2-klein-4B
    assert (klein.steps, klein.guidance, klein.steps_fast) == (4, 1.0, 4)
    own = model_cfg(tiny_inpaint["z-image"], steps=9, guidance=0.0)  # Z-Image-Turbo's
    assert (own.steps, own.guidance, own.steps_fast) == (9, 0.0, 3)


def test_the_grid_is_the_family_s(tiny_inpaint):
    from pipeline.plan.stage import plan_grid

    grids = {}
    for family in FAMILIES:
        cfg = config_mod.from_dict(
            {
                "input": {"manifest": "m"},
                "output": {"uri": "o"},
                "model": {"backend": "diffusers", "path": tiny_inpaint[family]},
            }
        )
        grids[family] = plan_grid(cfg)
    assert grids == {"sdxl": 8, "z-image": 16, "flux2-klein": 16}


def test_klein_canvases_over_1_mp_are_generated_at_its_size(tiny_inpaint, photo):
    """FLUX.2 [klein]'s pipeline scales images over 1 MP down: the backend hands it a canvas
    already at most 1 MP on the grid and scales the result back to the canvas."""
    be = backend(tiny_inpaint["flux2-klein"], prompts=[""])
    j = job(photo, 1600, 900, 200, 300, 100, 100, prompt="", steps=1)
    AW, AH, GW, GH, _, _ = be.shape_key(j)
    assert (AW, AH) == (1600, 912) and GW * GH <= 1024 * 1024
    assert GW % 16 == 0 and GH % 16 == 0 and abs(GW / GH - AW / AH) < 0.02
    args = be.call_args([j], be.shape_key(j))
    assert args["image"][0].shape == (GH, GW, 3) and (args["width"], args["height"]) == (GW, GH)
    # every latent cell a generated pixel touches stays generated
    assert args["mask_image"][0].mean() >= 1 - (200 * 300) / (1600 * 912)
    out = be.outpaint([j])[0]
    assert out.shape == (900, 1600, 3)


@pytest.mark.parametrize(
    "family,reaches", [("sdxl", False), ("z-image", True), ("flux2-klein", True)]
)
def test_what_the_fill_reaches(tiny_inpaint, photo, family, reaches):
    """What the unknown area holds before encoding (docs/backends.md). SDXL's inpainting UNet
    encodes ``image * (mask < 0.5)``: the fill never reaches its output. Z-Image encodes the
    whole canvas and blends the known latents back each step: the encoder's receptive field
    carries the fill into the cells at the reference's edges and from there, by attention,
    everywhere. FLUX.2 [klein] reads the whole canvas back as reference tokens."""
    j = job(photo, 96, 64, 40, 48, 16, 8, prompt="")
    grey = backend(tiny_inpaint[family], prompts=[""], fill="grey").outpaint([j])[0]
    magenta = backend(tiny_inpaint[family], prompts=[""], fill="magenta").outpaint([j])[0]
    diff = np.abs(grey.astype(int) - magenta.astype(int)).max(axis=2)
    generated = np.ones(diff.shape, bool)
    generated[8:48, 16:64] = False
    assert (diff[generated].mean() > 1) == reaches, (family, float(diff[generated].mean()))
    if not reaches:
        assert diff.max() == 0


@pytest.mark.parametrize(
    "family,released_as",
    [
        ("z-image", "ZImagePipeline"),  # Tongyi-MAI/Z-Image's model_index.json
        ("flux2-klein", "Flux2KleinPipeline"),  # black-forest-labs/FLUX.2-klein-4B's
        ("sdxl", "StableDiffusionXLPipeline"),  # a base SDXL checkpoint: its UNet blends
    ],
)
def test_a_checkpoint_saved_as_text_to_image_runs_as_its_inpainting_sibling(
    tiny_inpaint, photo, tmp_path, family, released_as
):
    """Released checkpoints name their text-to-image class; the same weights run in the
    family's inpainting pipeline, as AutoPipelineForInpainting loads them."""
    import json
    import shutil

    path = str(tmp_path / family)
    shutil.copytree(tiny_inpaint[family], path)
    index = json.loads((tmp_path / family / "model_index.json").read_text())
    inpaint_name = index["_class_name"]
    index["_class_name"] = released_as
    (tmp_path / family / "model_index.json").write_text(json.dumps(index))
    as_released = backend(path, prompts=[""])
    assert type(as_released.pipe).__name__ == inpaint_name
    assert model_cfg(path).steps == model_cfg(tiny_inpaint[family]).steps  # the same recipe
    j = job(photo, 96, 64, 40, 48, 16, 8, prompt="")
    a = as_released.outpaint([j])[0]
    b = backend(tiny_inpaint[family], prompts=[""]).outpaint([j])[0]
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_int8_weights_stay_close_and_the_text_encoders_embed_on_the_cpu(tiny_inpaint, photo):
    """``model.quantize: int8`` (torchao, weight-only) on the denoiser's linears, at load."""
    pytest.importorskip("torchao")
    from pipeline.backends import accel
    from pipeline.review.quality import psnr

    path = tiny_inpaint["z-image"]
    plain = backend(path, prompts=[""])
    quant = backend(path, prompts=[""], quantize="int8")
    linears = [m for m in quant.pipe.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert any(type(m.weight).__name__ == "Int8Tensor" for m in linears)
    assert accel.module_bytes(quant.pipe.transformer) < accel.module_bytes(plain.pipe.transformer)
    assert quant.text_device.type == "cpu"
    j = job(photo, 96, 64, 40, 48, 16, 8, prompt="")
    a, b = plain.outpaint([j])[0], quant.outpaint([j])[0]
    assert psnr(b, a) >= 30 and not np.array_equal(a, b)


def test_bench_runs_a_diffusers_checkpoint(tiny_inpaint, tmp_path, capsys):
    import json

    from pipeline.cli import main

    cfg = tmp_path / "b.yaml"
    cfg.write_text(
        f"input: {{manifest: m.parquet}}\noutput: {{uri: {tmp_path}/out}}\n"
        "defaults: {width: 112, height: 80}\n"
        f"model: {{backend: diffusers, path: {tiny_inpaint['sdxl']}, dtype: float32, steps: 2}}\n"
    )
    out = tmp_path / "r.json"
    args = ["bench", str(cfg), "--images", "2", "--json", str(out), "--batch-sizes", "1,2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "StableDiffusionXLInpaintPipeline, dtype float32" in text and "fast / high" in text
    r = json.loads(out.read_text())
    assert r["modes"]["high"]["steps"] == 2 and r["modes"]["fast"]["steps"] == 1  # a third
    assert [x["batch_size"] for x in r["batch_sweep"]["results"]] == [1, 2]
    assert all(m["s_per_image"] > 0 for m in r["modes"].values())
    high = r["modes"]["high"]
    assert high["generated"] == [112, 80]  # on SDXL's x8 grid already
    assert high["seconds_per_step_at_1mp"] == pytest.approx(
        high["s_per_image"] / 2 * 1024 * 1024 / (112 * 80)
    )
    assert "plan.seconds_per_step_at_1mp" in text


def test_z_image_starts_from_the_photo_continued(tiny_inpaint, photo):
    """Z-Image's recipe fills the unknown area with the classical continuation (its blending
    encodes the whole canvas); a flat fill is one setting away; flux-fill refuses it."""
    from pipeline.backends.classical import ClassicalBackend

    be = backend(tiny_inpaint["z-image"], prompts=[""])
    assert be.cfg.fill is None and be.fill == "classical"
    j = job(photo, 101, 77, 45, 61, 17, 9, prompt="")
    args = be.call_args([j], be.shape_key(j))
    canvas = (args["image"][0] * 255 + 0.5).astype(np.uint8)
    continued = ClassicalBackend(be.cfg).outpaint([Job(j.ref, 101, 77, 17, 9, seed=j.seed)])[0]
    assert np.abs(canvas[:77, :101].astype(int) - continued.astype(int)).max() <= 1
    assert np.array_equal(canvas[77:, :101], np.repeat(canvas[76:77, :101], 3, axis=0))  # edge
    assert j.fill_color == "classical"
    flat = backend(tiny_inpaint["z-image"], prompts=[""], fill="grey")
    assert flat.fill == "grey" and backend(tiny_inpaint["sdxl"]).fill == "grey"
    with pytest.raises(config_mod.ConfigError, match="model.fill classical"):
        config_mod.from_dict(
            {
                "input": {"manifest": "m"},
                "output": {"uri": "o"},
                "model": {"backend": "flux-fill", "path": "x", "fill": "classical"},
            }
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_decoding_outside_the_call_is_the_pipeline_s_own_last_step(tiny_inpaint, photo, family):
    """With pipelining the latents leave the call and are decoded outside the GPU lock; the
    pixels are those of the pipeline decoding them itself (model.optimize.pipelining: false)."""
    j = job(photo, 101, 77, 45, 61, 17, 9)
    split = backend(tiny_inpaint[family], prompts=[j.prompt])
    whole = backend(tiny_inpaint[family], prompts=[j.prompt], optimize={"pipelining": False})
    assert split._splits_decode() and not whole._splits_decode()
    a, b = split.outpaint([j])[0], whole.outpaint([j])[0]
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
