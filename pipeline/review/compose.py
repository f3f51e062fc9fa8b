"""Paste-back: the reference back into what a backend generated, exactly, apart
from a feathered seam band; alpha and optional colour matching. Pure array
functions, no I/O.

The reference (already scaled and cropped to the visible box V) fills ``box`` on a
``W x H`` canvas. Whatever a backend returns, the reference pixels are pasted back
exactly.
"""

from __future__ import annotations

import numpy as np

from ..common.box import Box, Sides


def paste_back(out: np.ndarray, ref: np.ndarray, box: Box) -> np.ndarray:
    """Put the exact reference pixels back (the contract: the original is untouched)."""
    out = np.array(out, dtype=np.uint8, copy=True)
    out[box.region] = ref
    return out


def extend_alpha(alpha: np.ndarray | None, W: int, H: int, box: Box) -> np.ndarray | None:
    """Source alpha on the canvas: the reference's own, generated area opaque."""
    if alpha is None:
        return None
    out = np.full((H, W), 255, dtype=np.uint8)
    out[box.region] = alpha
    return out


def flatten_alpha(pixels: np.ndarray, alpha: np.ndarray, background=(255, 255, 255)) -> np.ndarray:
    """Composite onto ``background`` (RGB; its mean for one-channel grey pixels)."""
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    bg = np.asarray(background, dtype=np.float32)
    if pixels.shape[2] == 1:
        bg = bg.mean(keepdims=True)
    return (pixels.astype(np.float32) * a + bg * (1.0 - a) + 0.5).astype(np.uint8)


def feather_alpha(vh: int, vw: int, sides: Sides, px: int) -> np.ndarray | None:
    """Weight of the reference inside V: ramps 0 -> 1 over ``px`` pixels from each generated
    side; 1 elsewhere. None when there is no band (so the paste is exact everywhere)."""
    if px <= 0 or not any(sides):
        return None
    left, top, right, bottom = sides
    ys = np.arange(vh, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(vw, dtype=np.float32)[None, :] + 0.5
    d = np.full((vh, vw), np.inf, dtype=np.float32)
    # d = pixel index from the nearest generated side + 0.5; index i < px gets (i+1)/(px+1)
    if left:
        d = np.minimum(d, xs)
    if right:
        d = np.minimum(d, vw - xs)
    if top:
        d = np.minimum(d, ys)
    if bottom:
        d = np.minimum(d, vh - ys)
    return np.clip((d + 0.5) / (px + 1.0), 0.0, 1.0)


def feathered_paste(
    out: np.ndarray, ref: np.ndarray, box: Box, sides: Sides, px: int
) -> np.ndarray:
    """Paste the reference back; within ``px`` of a generated side blend it with the
    generated pixels so no hard seam shows. Outside that band the pixels are exact."""
    alpha = feather_alpha(
        box.height, box.width, sides, effective_feather(px, box.height, box.width)
    )
    result = paste_back(out, ref, box)
    if alpha is None:
        return result
    band = alpha < 1.0  # blend only the band's pixels, not the whole reference
    a = alpha[band][:, None]
    gen = out[box.region][band].astype(np.float32)
    region = result[box.region]
    region[band] = (a * ref[band].astype(np.float32) + (1.0 - a) * gen + 0.5).astype(np.uint8)
    return result


def composite(
    generated: np.ndarray,
    ref,
    box: Box,
    feather_px: int,
    color_match: bool = False,
    keeps_reference: bool = False,
    filled: bool = False,
) -> np.ndarray:
    """The canvas as it is written: a generated canvas (sRGB, as the model sees it) with
    its colours matched (``color_match``; not for a backdrop fill, ``filled``: already
    the backdrop's own), in the output's colour space, the reference pasted back
    (feathered unless the backend keeps it exactly). ``ref``: the row's reference
    (``run.load.Reference``: ``model``, ``out``, ``color``). One function, so the quality
    gate judges the very pixels the write stage encodes."""
    H, W = generated.shape[:2]
    sides = box.sides(W, H)
    if color_match and not filled:
        generated = match_colors(generated, ref.model, box, sides)
    generated = ref.color.output.from_model(generated)
    if keeps_reference:  # blending V with itself: skip the work
        return paste_back(generated, ref.out, box)
    return feathered_paste(generated, ref.out, box, sides, feather_px)


def effective_feather(px: int, vh: int, vw: int) -> int:
    return int(min(px, vh // 4, vw // 4))


def match_colors(
    out: np.ndarray, ref: np.ndarray, box: Box, sides: Sides, band: int = 16
) -> np.ndarray:
    """Optional (``output.color_match``): shift and scale each channel of the generated
    area so the band just outside the reference matches the band just inside it."""
    vx0, vy0, h, w = box.x0, box.y0, box.height, box.width
    H, W = out.shape[:2]
    left, top, right, bottom = sides
    outside, inside = [], []
    if left:
        outside.append(out[vy0 : vy0 + h, max(0, vx0 - band) : vx0].reshape(-1, 3))
        inside.append(ref[:, :band].reshape(-1, 3))
    if right:
        outside.append(out[vy0 : vy0 + h, vx0 + w : min(W, vx0 + w + band)].reshape(-1, 3))
        inside.append(ref[:, -band:].reshape(-1, 3))
    if top:
        outside.append(out[max(0, vy0 - band) : vy0, vx0 : vx0 + w].reshape(-1, 3))
        inside.append(ref[:band].reshape(-1, 3))
    if bottom:
        outside.append(out[vy0 + h : min(H, vy0 + h + band), vx0 : vx0 + w].reshape(-1, 3))
        inside.append(ref[-band:].reshape(-1, 3))
    if not outside:
        return out
    o = np.concatenate(outside).astype(np.float32)
    i = np.concatenate(inside).astype(np.float32)
    scale = (i.std(0) + 1.0) / (o.std(0) + 1.0)
    adjusted = (out.astype(np.float32) - o.mean(0)) * np.clip(scale, 0.5, 2.0) + i.mean(0)
    mask = np.ones((H, W), dtype=bool)
    mask[box.region] = False
    result = out.copy()
    result[mask] = np.clip(adjusted[mask] + 0.5, 0, 255).astype(np.uint8)
    return result
