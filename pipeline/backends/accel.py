"""Making the FLUX transformer fast on a GPU: applied once per actor, before warm-up.

What each setting buys at 1024², 28 steps (published FLUX.1-dev figures, one H100):
plain bf16 ≈6.6 s/image, torch.compile ≈4.2 s, + FP8 + fused QKV ≈3.0 s. The work is
compute bound (≈74 TFLOP a step), so batching beyond a few rows adds little: the
levers are fewer, fused, lower-precision GEMMs and no Python between kernels.

- fused QKV: one projection GEMM per attention instead of three (numerically the same);
- SDPA (``native``) by default, or another installed attention backend;
- channels-last VAE (convolutions in NHWC are cuDNN's fast path);
- torchao dynamic float8 with row-wise scales for the transformer's linear layers
  (H100/H200: twice the bf16 tensor-core rate), opt-in since it changes outputs;
- ``torch.compile`` of the repeated blocks (regional: one compilation serves all 57
  blocks, seconds instead of minutes), optionally with CUDA graphs;
- a bounded number of compiled shapes: canvases round up to ``bucket_px`` and torch's
  recompile limit is ``max_shapes``; past it torch generalises to dynamic shapes.
"""

from __future__ import annotations

import logging

log = logging.getLogger("outpaint")


class OptimizeError(RuntimeError):
    """A requested optimisation cannot run here (says which key to change)."""


def resolve(opt, device) -> dict:
    """The settings that apply on ``device`` (``auto`` resolved)."""
    cuda = device.type == "cuda"
    compile_ = opt.compile if opt.compile != "auto" else ("blocks" if cuda else "none")
    mode = opt.compile_mode
    if opt.cuda_graphs and compile_ != "none":
        mode = (
            "reduce-overhead"
            if mode == "default"
            else ("max-autotune" if mode.startswith("max") else mode)
        )
    return {
        "compile": compile_,
        "compile_mode": mode,
        "fuse_qkv": opt.fuse_qkv,
        "channels_last_vae": opt.channels_last_vae == "on"
        or (opt.channels_last_vae == "auto" and cuda),
        "attention": opt.attention,
        "fp8": opt.fp8,
        "bucket_px": opt.bucket_px,
        "max_shapes": opt.max_shapes,
    }


def devices(torch, model_cfg):
    """(model device, text-encoder device) of ``model.device`` / ``model.text_encoder_device``:
    the text encoders embed on the CPU when the GPU is small (quantized), then are dropped."""
    want = model_cfg.device
    on_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if on_cuda else "cpu")
    where = model_cfg.text_encoder_device
    on_cpu = where == "cpu" or (where == "auto" and model_cfg.quantize != "none")
    return device, torch.device("cpu") if on_cpu else device


class SideStreams:
    """Each thread's own CUDA stream for preparing and decoding beside the denoising loop
    (``model.optimize.pipelining``); None off CUDA or with pipelining off: the current one."""

    def __init__(self, torch, device, enabled: bool):
        import threading

        self.torch, self.device = torch, device
        self.enabled = enabled and device.type == "cuda"
        self._local = threading.local()

    def get(self):
        if not self.enabled:
            return None
        s = getattr(self._local, "stream", None)
        if s is None:
            s = self._local.stream = self.torch.cuda.Stream(self.device)
        return s


def check_fp8(torch, device) -> None:
    if device.type != "cuda":
        raise OptimizeError(
            "model.optimize.fp8 needs a CUDA GPU; this actor runs on "
            f"{device.type}: set model.optimize.fp8: false"
        )
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 9):
        raise OptimizeError(
            f"model.optimize.fp8 needs compute capability >= 8.9 (Ada, Hopper or newer); "
            f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: set model.optimize.fp8: false"
        )
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise OptimizeError(
            "model.optimize.fp8 needs torchao: pip install 'outpaint[fp8]'"
        ) from None


def _fp8_linear(module, fqn: str) -> bool:
    """Quantise only linears whose GEMMs the float8 kernels take (dims multiple of 16)
    and that carry per-token work; the tiny per-sample embedders stay bf16. The same
    layers are the ones ``model.quantize`` stores in 8 bits (~99 % of FLUX's weights)."""
    import torch

    return (
        isinstance(module, torch.nn.Linear)
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
        and "embed" not in fqn
        and not fqn.startswith("norm_out")
    )


# ---------------------------------------------------------------- weight storage (model.quantize)


def check_quantize(torch, device, mode: str) -> None:
    """Before any weight is read: the setting can run here, else which key to change."""
    if mode == "none":
        return
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise OptimizeError(
            f"model.quantize: {mode} needs torchao: pip install 'outpaint[quantize]'"
        ) from None
    if mode == "float8" and device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        if cap < (8, 9):
            raise OptimizeError(
                f"model.quantize: float8 needs compute capability >= 8.9; "
                f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: set model.quantize: int8"
            )


def quantize(transformer, mode: str) -> None:
    """Weight-only 8-bit storage of the transformer's linear layers (torchao), in place,
    where the weights are (on the CPU at load: the full-precision ones never reach the GPU)."""
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    quantize_(
        transformer,
        Int8WeightOnlyConfig() if mode == "int8" else Float8WeightOnlyConfig(),
        filter_fn=_fp8_linear,
    )


def tensor_bytes(t) -> int:
    """Bytes a parameter holds, torchao's quantized tensors included (their inner tensors)."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t).__name__ not in ("Parameter", "Tensor"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def module_bytes(module) -> int:
    return sum(tensor_bytes(p) for p in module.parameters()) + sum(
        tensor_bytes(b) for b in module.buffers()
    )


def storage_bytes(transformer, mode: str) -> int:
    """What the transformer's weights take under ``mode``, counted from its layers (works
    on the meta device: sizes hardware before the weights exist)."""
    import torch

    total = 0
    for fqn, m in transformer.named_modules():
        own = list(m.parameters(recurse=False))
        if not own:
            continue
        if mode != "none" and _fp8_linear(m, fqn):
            w = m.weight
            # 1 byte a weight, plus one scale per output row in the model's dtype
            total += w.numel() + w.shape[0] * w.element_size()
            total += sum(
                p.numel() * p.element_size()
                for n, p in m.named_parameters(recurse=False)
                if n != "weight"
            )
        else:
            total += sum(p.numel() * p.element_size() for p in own)
    return total + sum(
        b.numel() * b.element_size() for b in transformer.buffers() if isinstance(b, torch.Tensor)
    )


def check_fits(torch, device, weights: int, headroom: int, key: str = "model.quantize") -> None:
    """Refuse, before moving any weight, a setting whose weights cannot fit this GPU."""
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    if weights + headroom > free:
        raise OptimizeError(
            f"the model needs ~{(weights + headroom) / 2**30:.1f} GiB on {torch.cuda.get_device_name(device)} "
            f"({weights / 2**30:.1f} GiB of weights), which has {free / 2**30:.1f} GiB free of "
            f"{total / 2**30:.1f}: set {key}: int8 (or float8 on compute capability >= 8.9), "
            "or a smaller runtime.batch_size"
        )


UNFUSED = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")


def fuse_qkv(transformer) -> None:
    """Fuse each attention's Q, K, V projections into one GEMM and drop the unfused
    layers: diffusers keeps them (to allow unfusing), which for FLUX.1 holds 4.0 GiB of
    bf16 weights that no forward pass reads."""
    import torch

    transformer.fuse_qkv_projections()
    for m in transformer.modules():
        if getattr(m, "fused_projections", False):
            for name in UNFUSED:
                if isinstance(getattr(m, name, None), torch.nn.Module):
                    setattr(m, name, None)
    transformer._outpaint_fused = True


def apply(pipe, opt, device) -> dict:
    """Apply ``opt`` to ``pipe`` in place; returns the resolved settings."""
    import torch

    s = resolve(opt, device)
    tr = pipe.transformer
    if s["fuse_qkv"] and not getattr(tr, "_outpaint_fused", False):  # quantized models fuse before
        fuse_qkv(tr)
    if s["attention"] != "native":
        tr.set_attention_backend(s["attention"])
    if s["channels_last_vae"]:
        pipe.vae.to(memory_format=torch.channels_last)
    if s["fp8"]:
        check_fp8(torch, device)
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )

        quantize_(
            tr,
            Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
            filter_fn=_fp8_linear,
        )
    if s["compile"] != "none":
        import torch._dynamo

        cfg = torch._dynamo.config
        # bounded compilation: past this many shapes torch stops specialising
        name = (
            "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
        )  # torch < 2.6
        setattr(cfg, name, max(getattr(cfg, name), s["max_shapes"]))
        kwargs = {"mode": None if s["compile_mode"] == "default" else s["compile_mode"]}
        if s["compile"] == "blocks":
            tr.compile_repeated_blocks(fullgraph=True, **kwargs)
        else:
            pipe.transformer = torch.compile(tr, **kwargs)
            pipe._outpaint_eager_transformer = tr
    log.info("outpaint: model optimisations %s", s)
    return s


def is_compile_error(e: BaseException) -> bool:
    """Raised by torch.compile's machinery (dynamo, inductor), anywhere in the chain."""
    while e is not None:
        if type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            return True
        e = e.__cause__ or e.__context__
    return False


def uncompile(pipe, settings: dict, error: BaseException) -> None:
    """Back to eager after a compilation failure (no compiler, an inductor bug): the
    job runs, slower, instead of failing every row. Fused QKV and FP8 stay."""
    if settings["compile"] == "full":
        pipe.transformer = pipe._outpaint_eager_transformer
    else:
        for m in pipe.transformer.modules():
            if getattr(m, "_compiled_call_impl", None) is not None:
                m._compiled_call_impl = None
    log.warning(
        "outpaint: torch.compile failed, running eager instead (model.optimize.compile: none "
        "silences this): %s: %s",
        type(error).__name__,
        str(error).splitlines()[0] if str(error) else "",
    )
    settings["compile"] = f"none (compile failed: {type(error).__name__})"


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process (to show compilation stays bounded)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
