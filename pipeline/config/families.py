"""``model.backend: diffusers``: which checkpoints it accepts and the outpainting recipe of
each family (docs/backends.md says why each value).

A checkpoint is accepted when its ``model_index.json`` names an inpainting pipeline (one of
diffusers' ``AutoPipelineForInpainting`` mapping, or one it does not map: FLUX.2 [klein]'s,
Z-Image's ControlNet one...) or a pipeline whose inpainting sibling that mapping (or
``UNMAPPED_SIBLINGS``) names: released checkpoints name their text-to-image class
(``ZImagePipeline``, ``QwenImagePipeline``, ``Flux2KleinPipeline``), and the same weights
load into the inpainting class, as ``AutoPipelineForInpainting.from_pretrained`` does. The recipe of its family gives the default
steps and guidance (from the model cards), what ``fast`` means, the size grid, the negative
prompt and how prompts are embedded once; ``model.steps`` / ``model.guidance`` /
``model.pipeline_kwargs`` override them. A class without a recipe runs with its pipeline's own
defaults."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

from .checkpoints import Checkpoint, CheckpointUnreadable, describe

# What outpaint passes itself: a key of model.pipeline_kwargs may not set these.
OWN_ARGUMENTS = frozenset(
    {
        "prompt",
        "prompt_2",
        "prompt_embeds",
        "pooled_prompt_embeds",
        "negative_prompt_embeds",
        "negative_pooled_prompt_embeds",
        "prompt_embeds_mask",
        "negative_prompt_embeds_mask",
        "image",
        "mask_image",
        "masked_image_latents",
        "image_reference",
        "height",
        "width",
        "num_inference_steps",
        "guidance_scale",
        "true_cfg_scale",
        "generator",
        "latents",
        "output_type",
        "return_dict",
        "num_images_per_prompt",
        "padding_mask_crop",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
        "negative_prompt",
    }
)

# Inpainting pipelines diffusers' AutoPipelineForInpainting does not map (it maps by
# checkpoint family, one class each).
UNMAPPED_INPAINT = (
    "Flux2KleinInpaintPipeline",
    "FluxKontextInpaintPipeline",
    "ZImageControlNetInpaintPipeline",
    "QwenImageControlNetInpaintPipeline",
    "ChromaInpaintPipeline",
    "StableDiffusionXLControlNetUnionInpaintPipeline",
)


# text-to-image classes whose inpainting sibling AutoPipelineForInpainting does not map
UNMAPPED_SIBLINGS = {
    "Flux2KleinPipeline": "Flux2KleinInpaintPipeline",
    "FluxKontextPipeline": "FluxKontextInpaintPipeline",
    "ChromaPipeline": "ChromaInpaintPipeline",
}


@dataclass(frozen=True)
class Recipe:
    """How one family outpaints. ``patch``: latent cells per token side (2 for the DiTs that
    pack 2 x 2, 1 for UNets), so the size grid is the VAE's scale times it."""

    family: str
    steps: int
    guidance: float
    patch: int
    source: str  # where the defaults come from
    fast_steps: int | None = None  # None: a third of steps
    guidance_arg: str = "guidance_scale"  # Qwen-Image's true CFG scale is another argument
    negative_prompt: str | None = None  # where the card uses one with CFG
    embed: str | None = None  # prompts embedded once per distinct prompt: how (None: strings)
    max_pixels: int | None = None  # the pipeline resizes larger images: generate at most this
    fill: str = "grey"  # what the unknown area holds before encoding (docs/backends.md)
    # the pipeline's last step (latents -> pixels), redone outside the GPU lock so the next
    # call's loop overlaps it: how its latents are denormalised (None: left in the call)
    decode: str | None = None
    extra: dict = field(default_factory=dict)  # fixed arguments of the recipe


RECIPES: dict[str, Recipe] = {
    "StableDiffusionXLInpaintPipeline": Recipe(
        "sdxl-inpainting",
        steps=20,
        guidance=8.0,
        patch=1,
        source="diffusers/stable-diffusion-xl-1.0-inpainting-0.1 model card (20 steps, guidance 8)",
        embed="sdxl",
        decode="sdxl",
    ),
    "StableDiffusionInpaintPipeline": Recipe(
        "sd-inpainting",
        steps=50,
        guidance=7.5,
        patch=1,
        source="the pipeline's own defaults (50 steps, guidance 7.5)",
    ),
    "StableDiffusion3InpaintPipeline": Recipe(
        "sd3",
        steps=28,
        guidance=3.5,
        patch=2,
        source="stabilityai/stable-diffusion-3.5-large model card (28 steps, guidance 3.5)",
    ),
    "ZImageInpaintPipeline": Recipe(
        "z-image",
        steps=50,
        guidance=4.0,
        patch=2,
        source="Tongyi-MAI/Z-Image model card (50 steps, guidance 4, no CFG normalisation); "
        "Z-Image-Turbo: model.steps 9, model.guidance 0",
        embed="z-image",
        # it encodes the whole canvas and blends the known latents back: a continued photo
        # keeps the reference's edge cells closest to their true surroundings
        fill="classical",
        decode="z-image",
        extra={"cfg_normalization": False},
    ),
    "QwenImageInpaintPipeline": Recipe(
        "qwen-image",
        steps=50,
        guidance=4.0,
        patch=2,
        source="Qwen/Qwen-Image model card (50 steps, true CFG 4 with a blank negative prompt)",
        guidance_arg="true_cfg_scale",
        negative_prompt=" ",
    ),
    "QwenImageEditInpaintPipeline": Recipe(
        "qwen-image-edit",
        steps=50,
        guidance=4.0,
        patch=2,
        source="Qwen/Qwen-Image-Edit model card (50 steps, true CFG 4 with a blank negative prompt)",
        guidance_arg="true_cfg_scale",
        negative_prompt=" ",
    ),
    "Flux2KleinInpaintPipeline": Recipe(
        "flux2-klein",
        steps=50,
        guidance=4.0,
        patch=2,
        source="black-forest-labs/FLUX.2-klein-base-4B model card (50 steps, guidance 4); the "
        "step-distilled FLUX.2-klein-4B: 4 steps, guidance 1",
        embed="flux2",
        max_pixels=1024 * 1024,  # the pipeline scales larger images down to 1 MP
        decode="flux2",
    ),
}

# FLUX.2 [klein] 4B as released: step-distilled (model_index.json's is_distilled), 4 steps
KLEIN_DISTILLED = Recipe(
    "flux2-klein (step-distilled)",
    steps=4,
    guidance=1.0,
    patch=2,
    source="black-forest-labs/FLUX.2-klein-4B model card (4 steps, guidance 1: distilled, no CFG)",
    fast_steps=4,  # already the fewest steps it was distilled for: fast = high
    embed="flux2",
    max_pixels=1024 * 1024,
    decode="flux2",
)


def accepted_classes() -> tuple[str, ...]:
    """The inpainting pipelines ``model.backend: diffusers`` loads."""
    from diffusers.pipelines.auto_pipeline import AUTO_INPAINT_PIPELINES_MAPPING

    mapped = [c.__name__ for c in AUTO_INPAINT_PIPELINES_MAPPING.values()]
    return tuple(dict.fromkeys(mapped + list(UNMAPPED_INPAINT)))


@functools.cache
def pipeline_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def inpaint_class(name: str) -> str | None:
    """The inpainting pipeline that runs a checkpoint whose model_index.json names ``name``:
    itself, its AutoPipelineForInpainting sibling, or an unmapped sibling; None: none."""
    if name in accepted_classes():
        return name
    if name in UNMAPPED_SIBLINGS:
        return UNMAPPED_SIBLINGS[name]
    from diffusers.pipelines import auto_pipeline as auto

    for mapping in (
        auto.AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
        auto.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
    ):
        for family, cls in mapping.items():
            if cls.__name__ == name and family in auto.AUTO_INPAINT_PIPELINES_MAPPING:
                return auto.AUTO_INPAINT_PIPELINES_MAPPING[family].__name__
    return None


def runs_as(ckpt: Checkpoint) -> str:
    """The inpainting class that runs ``ckpt`` (it was checked when the config was read)."""
    name = inpaint_class(ckpt.class_name)
    if name is None:
        raise ValueError(f"{ckpt.class_name} has no inpainting pipeline")
    return name


def recipe(ckpt: Checkpoint) -> Recipe:
    """The checkpoint's recipe; a class without one: its pipeline's own defaults."""
    name = runs_as(ckpt)
    if name == "Flux2KleinInpaintPipeline" and ckpt.config.get("is_distilled"):
        return KLEIN_DISTILLED
    if name in RECIPES:
        return RECIPES[name]
    params = inspect.signature(pipeline_class(name).__call__).parameters

    def default(name, fallback):
        p = params.get(name)
        return p.default if p is not None and p.default is not inspect.Parameter.empty else fallback

    return Recipe(
        ckpt.class_name,
        steps=int(default("num_inference_steps", 50)),
        guidance=float(default("guidance_scale", 7.5)),
        patch=2 if "transformer" in ckpt.components else 1,
        source=f"{name}'s own defaults (outpaint has no recipe for this family)",
    )


def grid(ckpt: Checkpoint) -> int:
    """The pixel grid a canvas is padded to: the VAE's scale times the token patch."""
    return ckpt.vae_scale * recipe(ckpt).patch


def check_class(ckpt: Checkpoint, path: str) -> None:
    if inpaint_class(ckpt.class_name) is not None:
        return
    hint = (
        " (FLUX.1 Fill: model.backend flux-fill)" if ckpt.class_name == "FluxFillPipeline" else ""
    )
    raise ValueError(
        f"model.path {path!r} holds a {ckpt.class_name or 'pipeline without _class_name'}, "
        f"not an inpainting pipeline nor one with an inpainting sibling{hint}; model.backend "
        f"diffusers accepts: {', '.join(accepted_classes())}, and the text-to-image pipelines "
        "of those families"
    )


def checkpoint_defaults(path: str, storage_options: dict | None) -> dict:
    """``model.*`` defaults from the checkpoint's recipe (the config's own values win).
    Raises ValueError naming ``model.path`` for a checkpoint that cannot be used."""
    try:
        ckpt = describe(path, storage_options)
    except CheckpointUnreadable as e:
        raise ValueError(f"model.path: {e}") from None
    check_class(ckpt, path)
    r = recipe(ckpt)
    out = {"steps": r.steps, "guidance": r.guidance}
    if r.fast_steps is not None:
        out["fast_steps"] = r.fast_steps
    return out


def check_pipeline_kwargs(class_name: str, kwargs: dict) -> None:
    """Every key of ``model.pipeline_kwargs`` must be an argument of the pipeline's
    ``__call__`` that outpaint does not set itself."""
    params = inspect.signature(pipeline_class(class_name).__call__).parameters
    takes = [p for p in params if p != "self" and p not in OWN_ARGUMENTS]
    for key in kwargs:
        if key in OWN_ARGUMENTS:
            raise ValueError(
                f"model.pipeline_kwargs.{key}: set by outpaint itself (model.steps, model.guidance, "
                "model.negative_prompt and the rows decide it)"
            )
        if key not in params:
            raise ValueError(
                f"model.pipeline_kwargs.{key}: not an argument of {class_name}; it takes: "
                + ", ".join(takes)
            )
