"""What the FLUX transformer costs: FLOP per forward, from its config.

Used by ``outpaint bench`` (MFU) and ``outpaint plan`` (GPU-time estimates that grow
with attention's quadratic share on big canvases). Works elementwise on NumPy arrays.
"""

from __future__ import annotations

# FLUX.1 [dev] / Fill [dev] transformer (the Fill variant takes 384 input channels)
FLUX1_CONFIG = dict(
    num_attention_heads=24,
    attention_head_dim=128,
    num_layers=19,
    num_single_layers=38,
    patch_size=1,
    in_channels=384,
    out_channels=64,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
)


def transformer_flops(tcfg, img_tokens, txt_tokens, batch=1):
    """FLOP of one FLUX transformer forward (multiply-add = 2): every linear layer on its
    tokens, plus the joint attention's QK^T and AV. FLUX.1 at 1024² (4096 + 512 tokens):
    ≈74.4 TFLOP, the figure the issue quotes; tests check it against torch's counter."""
    D = tcfg["num_attention_heads"] * tcfg["attention_head_dim"]
    n_double, n_single = tcfg["num_layers"], tcfg["num_single_layers"]
    p = tcfg.get("patch_size", 1)
    N = img_tokens + txt_tokens
    per_token = (
        2 * n_double * 12 * D * D * N  # double blocks: QKV + out + 4x MLP, both streams
        + 2
        * n_single
        * (3 * D * D + 4 * D * D + 5 * D * D)
        * N  # single: QKV, MLP in, fused out (5D -> D)
        + 4 * (n_double + n_single) * N * N * D  # attention scores + weighted sum
        + 2 * img_tokens * tcfg["in_channels"] * D  # x_embedder
        + 2 * txt_tokens * tcfg["joint_attention_dim"] * D  # context_embedder
        + 2 * img_tokens * D * p * p * tcfg["out_channels"]  # proj_out
    )
    # per-sample modulation (AdaLN) and embedders: small, counted for exactness
    per_sample = 2 * D * (n_double * 2 * 6 * D + n_single * 3 * D + 2 * D)
    per_sample += 2 * (256 * D + D * D) * (2 if tcfg.get("guidance_embeds") else 1)
    per_sample += 2 * (tcfg["pooled_projection_dim"] * D + D * D)
    return batch * (per_token + per_sample)
