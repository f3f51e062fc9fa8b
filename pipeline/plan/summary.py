"""What ``outpaint plan`` says of a plan: counts per status and code, output
megapixels, rows mostly generated, and for GPU backends the generated shapes and an
estimate of GPU time (FLUX.1's FLOP count per canvas); for the hosted API its tasks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..backends import BACKENDS
from ..common import codes
from ..config import Config
from ..config.licenses import License, license_of
from .flops import FLUX1_CONFIG, transformer_flops


def summarise(plan: pa.Table, cfg: Config) -> dict:
    """Counts per status and code, output megapixels, and an estimate of GPU cost."""
    counted = codes.Counts.of(plan)
    ok = plan.column("status").to_numpy(zero_copy_only=False) == codes.OK
    W = plan.column("canvas_width").fill_null(0).to_numpy()
    H = plan.column("canvas_height").fill_null(0).to_numpy()
    AW = plan.column("aligned_width").fill_null(0).to_numpy()
    AH = plan.column("aligned_height").fill_null(0).to_numpy()
    gen = plan.column("generated").to_numpy(zero_copy_only=False) & ok
    steps = plan.column("steps").to_numpy()
    fast = plan.column("mode").to_numpy(zero_copy_only=False) == "fast"
    # What the model generates: the aligned canvas rounded up to model.optimize.bucket_px,
    # priced per step relative to a 1024x1024 canvas by FLUX.1's FLOP count (attention's
    # quadratic share makes a 4 MP canvas cost 5.6x a 1 MP one, not 4x).
    b = cfg.model.optimize.bucket_px
    BW, BH = -(-AW // b) * b, -(-AH // b) * b
    txt = cfg.model.max_sequence_length
    rel = transformer_flops(FLUX1_CONFIG, (BW * BH / 256.0), txt) / transformer_flops(
        FLUX1_CONFIG, 4096, txt
    )
    per_row_s = rel * cfg.plan.seconds_per_step_at_1mp
    gpu_s = float((steps * per_row_s)[gen].sum())
    route = plan.column("route").fill_null("").to_numpy(zero_copy_only=False)
    filled = gen & (route == "backdrop")
    model_steps = np.where(fast, cfg.model.steps_fast, cfg.model.steps)
    variants = plan.column("num_variants").fill_null(1).to_numpy()
    placed = plan.column("placement_note").is_null().to_numpy(zero_copy_only=False)
    subject = plan.column("anchor").to_numpy(zero_copy_only=False) == "subject"
    uniq, counts = np.unique(
        np.stack([BW[gen], BH[gen], fast[gen].astype(np.int64)], axis=1), axis=0, return_counts=True
    )
    shapes = {f"{w}x{h} {'fast' if f else 'high'}": int(c) for (w, h, f), c in zip(uniq, counts)}
    # rows whose canvas is mostly invented: the reference is small for it
    vis = (
        plan.column("visible_x1").fill_null(0).to_numpy()
        - plan.column("visible_x0").fill_null(0).to_numpy()
    ) * (
        plan.column("visible_y1").fill_null(0).to_numpy()
        - plan.column("visible_y0").fill_null(0).to_numpy()
    )
    share = 1.0 - vis / np.maximum(W * H, 1)
    mostly = gen & (share > cfg.plan.warn_generated_share)
    lic = license_of(cfg.model)
    return {
        "rows": int(plan.num_rows),
        "backend": cfg.model.backend,
        "license": lic.as_dict() if lic is not None else None,
        "route": cfg.model.route,
        "mostly_generated": int(mostly.sum()),
        "warn_generated_share": cfg.plan.warn_generated_share,
        "max_generated_share": round(float(share[gen].max()), 4) if gen.any() else 0.0,
        "by_status": counted.statuses(),
        "by_code": counted.codes_by_count(),
        "output_megapixels": round(float((W * H)[ok].sum()) / 1e6, 3),
        "generated": {"high": int((gen & ~fast).sum()), "fast": int((gen & fast).sum())},
        "passthrough_ok": int((ok & ~gen).sum()),
        # the hosted API: one task per generated row and variant, none for backdrop fills
        "api_tasks": int(variants[gen & ~filled].sum()),
        "routes": {
            "backdrop": int(filled.sum()),
            "model": int((gen & (route == "model")).sum()),
            "at_load": int((gen & (route == "")).sum()),  # judged once decoded
        },
        "saved_api_tasks": int(variants[filled].sum()),
        "saved_gpu_seconds": round(float((model_steps * per_row_s)[filled].sum()), 1),
        "subject": {
            "by_box": int((ok & subject & placed).sum()),
            "centred": int((ok & subject & ~placed).sum()),
        },
        "generated_shapes": len(shapes),
        "top_generated_shapes": dict(sorted(shapes.items(), key=lambda kv: (-kv[1], kv[0]))[:5]),
        "max_shapes": cfg.model.optimize.max_shapes,
        "estimated_gpu_seconds": round(gpu_s, 1),
        "estimate_basis": f"{cfg.plan.seconds_per_step_at_1mp} s per step at 1024x1024 (plan.seconds_per_step_at_1mp)",
    }


def format_summary(s: dict) -> str:
    lines = [f"rows: {s['rows']:,}"]
    if s.get("license"):
        lines.append(License(**s["license"]).line())
    for k, v in s["by_status"].items():
        lines.append(f"  {k:<10} {v:>10,}")
    if s["by_code"]:
        lines.append("by code:")
        for k, v in s["by_code"].items():
            lines.append(f"  {k:<26} {v:>10,}")
    g = s["generated"]
    lines.append(
        f"output: {s['output_megapixels']:,} MP; to generate: {g['high']:,} high + {g['fast']:,} fast; "
        f"{s['passthrough_ok']:,} need no generation"
    )
    r = s["routes"]
    if r["backdrop"] or r["at_load"]:
        lines.append(
            f"routes: {r['backdrop']:,} to the backdrop fill (no model), {r['model']:,} to the "
            f"model, {r['at_load']:,} judged when loaded (outpaint manifest --analyze decides them now)"
        )
    sub = s["subject"]
    if sub["by_box"] or sub["centred"]:
        lines.append(
            f"anchor subject: {sub['by_box']:,} placed by the product's box, {sub['centred']:,} "
            "centred for want of subject columns (outpaint manifest --analyze)"
        )
    if s["mostly_generated"]:
        lines.append(
            f"warning: {s['mostly_generated']:,} rows would be more than {s['warn_generated_share']:.0%} "
            f"generated (up to {s['max_generated_share']:.0%}): their reference is small for the canvas. "
            "To fill the canvas with the photo instead, set sizing.fit: contain and sizing.allow_upscale: "
            "true (the reference is scaled to sizing.fill_fraction of each side), or ask for a smaller "
            "canvas; plan.warn_generated_share sets this threshold"
        )
    spec = BACKENDS[s["backend"]]
    if spec.hosted:
        lines.append(
            f"API tasks: {s['api_tasks']:,} (one per generated row and variant; rows needing no generation "
            f"cost none), {s['output_megapixels']:,} MP out; the API reports each task's cost in credits"
        )
        if s["saved_api_tasks"]:
            lines.append(f"API tasks saved by the backdrop fill: {s['saved_api_tasks']:,}")
    if not spec.gpu:  # compiled shapes and GPU time are a GPU model's
        return "\n".join(lines)
    if s["generated_shapes"]:
        top = ", ".join(f"{k} ({v:,})" for k, v in s["top_generated_shapes"].items())
        lines.append(f"generated shapes: {s['generated_shapes']:,} (most rows: {top})")
        if s["generated_shapes"] > s["max_shapes"]:
            lines.append(
                f"  more shapes than model.optimize.max_shapes ({s['max_shapes']}): compiled models "
                "fall back to dynamic shapes; a larger model.optimize.bucket_px (64, 128) groups them"
            )
    hours = s["estimated_gpu_seconds"] / 3600
    lines.append(
        f"estimated GPU time: {s['estimated_gpu_seconds']:,} s ({hours:,.2f} GPU-hours) at {s['estimate_basis']}"
    )
    if s["backend"] == "diffusers":
        lines.append(
            "  (canvases priced by FLUX.1's FLOP curve: measure this checkpoint with `outpaint bench` "
            "and set plan.seconds_per_step_at_1mp to what it reports)"
        )
    if s["saved_gpu_seconds"]:
        saved = s["saved_gpu_seconds"]
        lines.append(
            f"saved by the backdrop fill: {saved:,} s ({saved / 3600:,.2f} GPU-hours) of rows planned "
            "for it"
        )
    return "\n".join(lines)
