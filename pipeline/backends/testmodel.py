"""``outpaint make-test-model DIR``: a tiny, complete FLUX Fill pipeline with random weights.

Real diffusers/transformers classes (FluxTransformer2DModel, AutoencoderKL, CLIP and T5
encoders, their tokenizers built offline from tiny vocabularies, the flow-matching
scheduler) at toy sizes, written with ``save_pretrained``: loaded by exactly the code
that loads real weights. For tests, and for trying the GPU path without the weights.
The transformer keeps FLUX Fill's channel layout (384 in = 64 latent + 64 masked-image
latent + 256 mask, 64 out), so every tensor shape in the actor is the real one.
``latent_channels`` and ``vae_blocks`` make other valid Fill checkpoints (a 4-channel VAE
with 3 blocks: scale 4, grid 8, 96 transformer inputs) that diffusers runs too.
"""

from __future__ import annotations

import json
import os

PROFILE_FILE = "outpaint_profile.json"
_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in _CHARS] + [("▁" + c, -2.5) for c in _CHARS]
    tk = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=512,
    )


def clip_config(tokenizer):
    """A tiny CLIP text encoder's config over ``tokenizer`` (32 wide, 2 layers)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def _text_encoders(tokenizer, tokenizer_2):
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    clip = clip_config(tokenizer)
    t5 = T5Config(
        vocab_size=len(tokenizer_2),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return CLIPTextModel(clip), T5EncoderModel(t5)


def _transformer(c: int, scale: int):
    from diffusers import FluxTransformer2DModel

    # packed 2x2: noisy latents (4c) ++ masked-image latents (4c) ++ mask (4 scale²)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=8 * c + 4 * scale * scale,
        out_channels=4 * c,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )


def _vae(c: int, blocks: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=c,
        block_out_channels=(8,) + (16,) * (blocks - 1),
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=1.5035,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=False,
    )


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def make_test_model(
    out_dir: str,
    seed: int = 0,
    fill: str | None = None,
    latent_channels: int = 16,
    vae_blocks: int = 4,
) -> str:
    """Write the tiny pipeline to ``out_dir`` (a local directory) and return it. The parts
    are made in a fixed order after one seed, so a seed always gives the same weights."""
    import torch
    from diffusers import FluxFillPipeline

    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer()
    tokenizer_2 = _t5_tokenizer()
    text_encoder, text_encoder_2 = _text_encoders(tokenizer, tokenizer_2)
    transformer = _transformer(latent_channels, 2 ** (vae_blocks - 1))
    vae = _vae(latent_channels, vae_blocks)
    pipe = FluxFillPipeline(
        scheduler=_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(out_dir)
    if fill:
        with open(os.path.join(out_dir, PROFILE_FILE), "w") as f:
            json.dump({"fill": fill}, f)
    return out_dir
