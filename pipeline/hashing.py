"""``request_hash``: what decides a row's output, hashed, so reruns can skip rows
whose output already exists for exactly this request (docs/contracts.md, Outputs)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa

from .config import Config

# Bump when an algorithm's output changes, so resumed runs redo its rows.
BACKEND_VERSIONS = {"solid": "1", "classical": "3", "flux-fill": "2"}


def model_identity(cfg: Config) -> dict:
    m = cfg.model
    ident = {"backend": m.backend, "version": BACKEND_VERSIONS[m.backend]}
    if m.backend == "solid":
        ident.update(mode=m.solid_mode, color=list(m.solid_color), blur=m.solid_blur)
    elif m.backend == "classical":
        ident.update(grain=m.classical_grain)
    else:
        ident.update(path=m.path, fill=m.fill, guidance=m.guidance, dtype=m.dtype)
        # the optimisations that change pixels (compile and fused QKV do not, to ~1e-3)
        if m.optimize.fp8:
            ident.update(fp8=True)
        if m.optimize.bucket_px != 16:
            ident.update(bucket_px=m.optimize.bucket_px)
        if m.quantize != "none":
            ident.update(quantize=m.quantize)
    return ident


def model_name(cfg: Config) -> str:
    return cfg.model.backend if cfg.model.backend != "flux-fill" else f"flux-fill:{cfg.model.path}"


def run_constant(cfg: Config) -> str:
    """Everything outside the row that changes its output bytes."""
    o = cfg.output
    return json.dumps({"model": model_identity(cfg), "encoding": o.encoding.model_dump(mode="json"),
                       "alpha": o.alpha, "background": list(o.background), "feather_px": o.feather_px,
                       "color_match": o.color_match}, sort_keys=True)


_ROW_FIELDS = ("id", "canvas_width", "canvas_height", "scale", "offset_x", "offset_y", "visible_x0", "visible_y0",
               "visible_x1", "visible_y1", "mode", "steps", "seed", "num_variants", "prompt", "output_format")


def request_hashes(plan: pa.Table, identity: np.ndarray, cfg: Config) -> pa.Array:
    """sha256 (hex, 32 chars) per row of (id, source identity, geometry, mode, steps,
    seed, prompt, format, model and encoding); null where the source has no identity.

    The id is part of it, so a hash alone names one row's request: the resume check
    compares 128-bit fingerprints (``fingerprints``), not strings. Only rows with an
    identity (the ones that passed planning) are hashed: one sha256 each.
    """
    const = run_constant(cfg)
    has = np.flatnonzero(np.asarray(identity, dtype=object) != None)  # noqa: E711 - elementwise
    out = np.full(len(identity), None, dtype=object)
    if len(has):
        sub = plan.select(list(_ROW_FIELDS)).take(pa.array(has))
        cols = [sub.column(c).to_pylist() for c in _ROW_FIELDS]
        for j, i in enumerate(has):
            key = json.dumps([const, identity[i], *[c[j] for c in cols]], separators=(",", ":"))
            out[i] = hashlib.sha256(key.encode()).hexdigest()[:32]
    return pa.array(out, pa.string())


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def fingerprints(hashes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Request-hash strings -> (hi, lo) uint64 halves of their 128 bits and a validity
    mask, vectorised over the Arrow buffers (no Python per row)."""
    arr = hashes.combine_chunks() if isinstance(hashes, pa.ChunkedArray) else hashes
    arr = arr.cast(pa.string())
    n = len(arr)
    hi, lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    if n == 0:
        return hi, lo, np.zeros(0, bool)
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool) & (np.diff(offsets) == 32)
    idx = np.flatnonzero(valid)
    if len(idx):
        nib = _HEX[data[offsets[idx][:, None] + np.arange(32)]].astype(np.uint64)  # (k, 32) nibbles
        valid[idx] &= (nib != 255).all(axis=1)
        shifts = np.arange(60, -1, -4, dtype=np.uint64)
        hi[idx] = (nib[:, :16] << shifts).sum(axis=1, dtype=np.uint64)
        lo[idx] = (nib[:, 16:] << shifts).sum(axis=1, dtype=np.uint64)
    return hi, lo, valid


class DoneSet:
    """Fingerprints of the requests whose outputs exist: 16 bytes a done row, sorted,
    looked up with ``searchsorted`` (no hash table rebuilt per block)."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray):
        order = np.lexsort((lo, hi))
        self.hi, self.lo = hi[order], lo[order]

    def __len__(self) -> int:
        return len(self.hi)

    def contains(self, hashes) -> np.ndarray:
        hi, lo, valid = fingerprints(hashes)
        found = np.zeros(len(hi), bool)
        if not len(self.hi):
            return found
        left = np.searchsorted(self.hi, hi, "left")
        right = np.searchsorted(self.hi, hi, "right")
        for k in range(int((right - left).max(initial=0))):  # almost always one pass
            at = np.minimum(left + k, len(self.lo) - 1)
            found |= (left + k < right) & (self.lo[at] == lo)
        return found & valid
