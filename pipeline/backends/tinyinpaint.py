"""``outpaint make-test-model DIR --family sdxl|z-image|flux2-klein``: tiny inpainting
checkpoints with random weights for ``model.backend: diffusers``.

Real diffusers/transformers classes at toy sizes, tokenizers built offline (a CLIP one from
a tiny vocabulary; a Qwen-style byte-level BPE with its chat template for Z-Image's Qwen3
and FLUX.2 [klein]'s Qwen3 causal LM), written with ``save_pretrained`` and a model card:
loaded by exactly the code that loads real weights. Three families, three architectures:
an SDXL inpainting UNet (9 input channels, x8 grid), Z-Image's flow-matching DiT (latent
blending, x16 grid) and FLUX.2 [klein] (reference tokens, x16 grid, step-distilled)."""

from __future__ import annotations

import os

from .testmodel import _clip_tokenizer, clip_config

FAMILIES = ("sdxl", "z-image", "flux2-klein")
# Qwen's chat template, reduced to what the pipelines ask of it (a user turn, the
# assistant's start, the empty think block when thinking is off)
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}"
)
LICENSES = {"sdxl": "openrail++", "z-image": "apache-2.0", "flux2-klein": "apache-2.0"}


def qwen_tokenizer():
    """A byte-level BPE over the 256 byte symbols (no merges) with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tok = Qwen2TokenizerFast(
        tokenizer_object=tk,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=512,
    )
    tok.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]}
    )
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def _qwen3(tok, layers: int, causal: bool):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
    )
    return (Qwen3ForCausalLM if causal else Qwen3Model)(cfg)


def _small_vae(cls, **kw):
    return cls(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        mid_block_add_attention=False,
        **kw,
    )


def sdxl():
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok, tok2 = _clip_tokenizer(), _clip_tokenizer()
    clip = clip_config(tok)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=9,  # noisy latents 4 + mask 1 + masked-image latents 4: an inpainting UNet
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 x 8 time ids + 32 pooled
        cross_attention_dim=64,  # both encoders' 32 concatenated
        norm_num_groups=8,
    )
    return StableDiffusionXLInpaintPipeline(
        vae=_small_vae(AutoencoderKL, sample_size=128, scaling_factor=0.13025),
        text_encoder=CLIPTextModel(clip),
        text_encoder_2=CLIPTextModelWithProjection(clip),
        tokenizer=tok,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
    )


def z_image():
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImageInpaintPipeline,
        ZImageTransformer2DModel,
    )

    tok = qwen_tokenizer()
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=4,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=16,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 64, 64],
    )
    return ZImageInpaintPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=_small_vae(
            AutoencoderKL,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ),
        text_encoder=_qwen3(tok, layers=2, causal=False),
        tokenizer=tok,
        transformer=transformer,
    )


def flux2_klein():
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinInpaintPipeline,
        Flux2Transformer2DModel,
    )

    tok = qwen_tokenizer()
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2 x 2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,  # the three hidden layers (9, 18, 27) of 16 concatenated
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    return Flux2KleinInpaintPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True
        ),
        vae=_small_vae(
            AutoencoderKLFlux2, sample_size=64, use_quant_conv=False, use_post_quant_conv=False
        ),
        text_encoder=_qwen3(tok, layers=28, causal=True),  # hidden states 9, 18, 27 exist
        tokenizer=tok,
        transformer=transformer,
        is_distilled=True,  # as FLUX.2-klein-4B: 4 steps, no CFG
    )


def make_tiny_inpaint(out_dir: str, family: str, seed: int = 0, license: str | None = "") -> str:
    """Write the tiny ``family`` pipeline to ``out_dir`` with a model card whose front matter
    carries ``license`` (default: the family's real licence; None: no card)."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    pipe = {"sdxl": sdxl, "z-image": z_image, "flux2-klein": flux2_klein}[family]()
    pipe.save_pretrained(out_dir)
    if license is not None:
        with open(os.path.join(out_dir, "README.md"), "w") as f:
            f.write(
                f"---\nlicense: {license or LICENSES[family]}\nlibrary_name: diffusers\n---\n\n"
                f"# tiny {family} inpainting (random weights, outpaint tests)\n"
            )
    return out_dir
