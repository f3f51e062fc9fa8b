"""Our FLUX Fill backend against diffusers' own ``FluxFillPipeline.__call__`` on the same
checkpoint, canvas, mask, steps, guidance and initial noise: the generated area agrees
within 2/255, for FLUX.1's 16-channel layout and for a valid 4-channel checkpoint with a
x4 VAE, with and without ``model.mask_grow_px``.

Classes are diffusers' own, unpatched. One instance setting: the VAE's posterior std is
set to 0 for ``__call__``, so the masked image is encoded to its posterior mean as ours
is (deterministic); diffusers' ``__call__`` cannot take ``masked_image_latents`` without
an ``image`` (it preprocesses ``image=None`` and fails), so the mask path is its own.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.backends import Job

from ..conftest import read_png

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_flux_4ch(tmp_path_factory):
    from pipeline.backends.testmodel import make_test_model

    return make_test_model(
        str(tmp_path_factory.mktemp("models") / "tiny-flux-4ch"),
        seed=3,
        latent_channels=4,
        vae_blocks=3,
    )


def _backend(path, grow):
    from pipeline.backends.flux import FluxFillBackend

    cfg = config_mod.from_dict(
        {
            "input": {"manifest": "m"},
            "output": {"uri": "o"},
            "model": {
                "backend": "flux-fill",
                "path": path,
                "dtype": "float32",
                "steps": 3,
                "mask_grow_px": grow,
                "free_text_encoders": False,
                "optimize": {"fuse_qkv": False},
            },
        }
    )
    return FluxFillBackend(cfg.model, prompts=[""])


def _diffusers(be, job: Job, AW: int, AH: int, grow: int) -> np.ndarray:
    """``FluxFillPipeline.__call__`` on the aligned canvas, our noise as ``latents``."""
    pipe = be.pipe
    canvas = np.zeros((AH, AW, 3), np.uint8)  # masked away: its value never matters
    h, w = job.ref.shape[:2]
    canvas[job.y0 : job.y0 + h, job.x0 : job.x0 + w] = job.ref
    mask = np.full((AH, AW), 255, np.uint8)
    mask[job.y0 + grow : job.y0 + h - grow, job.x0 + grow : job.x0 + w - grow] = 0
    s, c = be.vae_scale, be.channels
    latents = be._pack(be.noise(job.seed, AH // s, AW // s)[None], c)
    emb, pooled, _ = be._prompt_cache[""]
    encode = pipe.vae.encode

    def mean_encode(x, return_dict=True):
        out = encode(x, return_dict=return_dict)
        dist = out.latent_dist if return_dict else out[0]
        dist.std = torch.zeros_like(dist.std)  # sample() == mean
        return out

    pipe.vae.encode = mean_encode
    try:
        img = pipe(
            image=Image.fromarray(canvas),
            mask_image=Image.fromarray(mask),
            height=AH,
            width=AW,
            prompt_embeds=emb[None],
            pooled_prompt_embeds=pooled[None],
            latents=latents,
            num_inference_steps=job.steps,
            guidance_scale=be.cfg.guidance,
            output_type="np",
        ).images[0]
    finally:
        del pipe.vae.encode  # the instance attribute: back to the class's method
    return (img * 255).round().astype(np.uint8)


CASES = [  # canvas W x H, reference crop (h, w), placement x0, y0
    ((128, 96), (48, 64), (32, 24)),  # centred
    ((112, 128), (50, 70), (5, 61)),  # off centre, odd reference
    ((101, 77), (45, 61), (17, 9)),  # odd canvas: padded right/bottom, cropped back
]


@pytest.mark.parametrize("grow", [0, 3])
@pytest.mark.parametrize("model", ["tiny_flux", "tiny_flux_4ch"])
def test_high_mode_equals_diffusers_call(request, photos, model, grow):
    be = _backend(request.getfixturevalue(model), grow)
    photo = read_png(photos["astronaut"])
    for (W, H), (rh, rw), (x0, y0) in CASES:
        job = Job(
            ref=np.ascontiguousarray(photo[100 : 100 + rh, 150 : 150 + rw]),
            width=W,
            height=H,
            x0=x0,
            y0=y0,
            seed=11,
            prompt="",
            mode="high",
            steps=3,
        )
        _, AW, AH, _ = be.shape_key(job)
        assert (
            AW % be.grid == 0 and AH % be.grid == 0 and AW - W < 16 and AH - H < 16
        )  # bucket_px: 16
        ours = be.outpaint([job])[0]
        theirs = _diffusers(be, job, AW, AH, grow)[:H, :W]
        assert ours.shape == theirs.shape == (H, W, 3)
        gen = np.ones((H, W), bool)
        gen[y0 + grow : y0 + rh - grow, x0 + grow : x0 + rw - grow] = False
        diff = np.abs(ours.astype(int) - theirs.astype(int))[gen]
        assert diff.max() <= 2, (model, grow, (W, H), int(diff.max()))


def test_checkpoint_geometry_comes_from_its_configs(tiny_flux, tiny_flux_4ch):
    from pipeline.backends.flux_weights import model_grid

    a, b = _backend(tiny_flux, 0), _backend(tiny_flux_4ch, 0)
    assert (a.channels, a.vae_scale, a.grid) == (16, 8, 16)
    assert (b.channels, b.vae_scale, b.grid) == (4, 4, 8)
    assert model_grid(tiny_flux) == 16 and model_grid(tiny_flux_4ch) == 8
    assert type(b.pipe.scheduler).__name__ == b.scheduler_cls.__name__


def test_fast_mode_conditions_only_what_is_known(tiny_flux):
    """Latent cells that straddle the reference's edge (or lie in the grown margin) are
    mask 1 and hold the fill latent, never reference pixels."""
    be = _backend(tiny_flux, 0)
    ref = np.random.default_rng(0).integers(
        0, 255, (70, 75, 3), dtype=np.uint8
    )  # 70, 75: not multiples of 8
    job = Job(
        ref=ref,
        width=160,
        height=128,
        x0=16,
        y0=24,
        seed=1,
        prompt="",
        mode="fast",
        steps=1,
        pad_left=0,
        pad_top=0,
    )
    cond, mask = be._fast([job], 160, 128)
    m = mask[0, 0]
    fill = be._fill_latent(job.fill_color)
    known = m == 0
    # known cells: rows 3..(24+70)//8=11, cols 2..(16+75)//8=11
    assert known.nonzero()[:, 0].min() == 3 and known.nonzero()[:, 0].max() == 10
    assert known.nonzero()[:, 1].min() == 2 and known.nonzero()[:, 1].max() == 10
    unknown = cond[0][:, ~known]
    assert torch.allclose(unknown, fill[:, None].expand_as(unknown))
    assert not torch.allclose(cond[0][:, known], fill[:, None].expand(-1, int(known.sum())))
    # the 4-channel-free path: a grown margin moves the known box inward by whole cells
    be.cfg.mask_grow_px = 8
    _, mask8 = be._fast([job], 160, 128)
    assert int((mask8[0, 0] == 0).sum()) == (10 - 3 - 1) * (10 - 2 - 1)


def test_planner_aligns_fast_rows_to_the_checkpoints_grid(tmp_path, tiny_flux, tiny_flux_4ch):
    """The plan's fast-mode padding comes from the same config as the backend's grid:
    8 px for the x4 VAE, FLUX.1's 16 otherwise (and for CPU backends)."""
    from pipeline.io import manifest
    from pipeline.plan.stage import PlanStage

    from ..conftest import write_manifest

    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {
                "id": "a",
                "image": "x.png",
                "image_width": 100,
                "image_height": 90,
                "width": 300,
                "height": 200,
                "reference_offset_x": 37,
                "reference_offset_y": 5,
                "mode": "fast",
            }
        ],
    )
    pads = {}
    for name, model in (
        ("4ch", {"backend": "flux-fill", "path": tiny_flux_4ch}),
        ("16ch", {"backend": "flux-fill", "path": tiny_flux}),
        ("cpu", {}),
    ):
        cfg = config_mod.from_dict(
            {"input": {"manifest": m}, "output": {"uri": str(tmp_path / "o")}, "model": model}
        )
        row = PlanStage(cfg)(manifest.read(cfg)).to_pylist()[0]
        pads[name] = (row["pad_left"], row["pad_top"], row["aligned_width"], row["aligned_height"])
    assert pads["4ch"] == (3, 3, 304, 208)
    assert pads["16ch"] == pads["cpu"] == (11, 11, 320, 224)
