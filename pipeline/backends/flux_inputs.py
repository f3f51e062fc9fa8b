"""How a batch of rows becomes FLUX Fill's conditioning: the canvas (``high``) or the
reference alone (``fast``) VAE-encoded, the fill the unknown area holds, the mask, all
packed 2 x 2 into the transformer's tokens. A part of ``FluxFillBackend`` (a mixin over
its loaded pipeline and devices), kept apart because it is the checkpoint's maths, not
where or when it runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import Job
from .canvas import FILL_COLORS, contrast_fill


class FluxInputs:
    """Needs the backend's loaded pipeline (``vae``), devices, dtype, fill and settings."""

    def _fill_name(self, job: Job) -> str:
        return contrast_fill(job.ref) if self.fill == "contrast" else self.fill

    @staticmethod
    def _to_unit(rgb: np.ndarray):
        """uint8 H x W x 3 -> float [-1, 1], 3 x H x W (the VAE's input range)."""
        return rgb.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0

    def _fill_value(self, name: str) -> np.ndarray:
        # grey is FLUX.1-Fill-dev's masked pixel exactly: 0 in [-1, 1]
        if name == "grey":
            return np.zeros(3, np.float32)
        return np.asarray(FILL_COLORS[name], np.float32) / 127.5 - 1.0

    def _upload(self, array):
        """Host (NumPy or CPU tensor) -> device; from pinned memory, asynchronously, on CUDA."""
        t = (
            array
            if isinstance(array, self.torch.Tensor)
            else self.torch.from_numpy(np.ascontiguousarray(array))
        )
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, self.dtype, non_blocking=True)

    def _encode(self, images: np.ndarray):
        """B x 3 x H x W in [-1, 1] -> normalised latents (distribution mode: deterministic)."""
        x = self._upload(images)
        if self.optimizations["channels_last_vae"]:
            x = x.contiguous(memory_format=self.torch.channels_last)
        lat = self.vae.encode(x).latent_dist.mode()
        return (lat - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def _fill_latent(self, name: str):
        """The fill colour's latent vector, once per actor (a flat patch of 8 x 8 cells, a centre cell)."""
        if name not in self._fill_latents:
            side = 8 * self.vae_scale
            patch = np.broadcast_to(self._fill_value(name)[:, None, None], (3, side, side))[
                None
            ].copy()
            lat = self._encode(patch)[0, :, 4, 4].clone()
            self._stream_done()  # other threads' streams will read it: finish it first
            self._fill_latents[name] = lat
        return self._fill_latents[name]

    def _pack(self, t, channels: int):
        b, _, h, w = t.shape
        t = t.view(b, channels, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return t.reshape(b, (h // 2) * (w // 2), channels * 4)

    def _unpack(self, t, h: int, w: int):
        b, _, c = t.shape
        t = t.view(b, h // 2, w // 2, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return t.reshape(b, c // 4, h, w)

    def _mask_channels(self, mask_px):
        """Pixel mask B x H x W (1 = generate) -> FLUX Fill's scale² channels per latent cell."""
        b, H, W = mask_px.shape
        s = self.vae_scale
        m = mask_px.view(b, H // s, s, W // s, s).permute(0, 2, 4, 1, 3)
        return m.reshape(b, s * s, H // s, W // s)

    # -------------------------------------------------------------- conditioning
    def _high(self, jobs: Sequence[Job], AW: int, AH: int):
        """Whole aligned canvas (padding right/bottom), fill wherever the mask is 1 (the
        unknown area and the grown margin: FLUX Fill was trained on ``image * (1 - mask)``),
        encoded."""
        imgs, masks = [], []
        g = self.cfg.mask_grow_px
        for job in jobs:
            name = self._fill_name(job)
            job.fill_color = name
            canvas = np.empty((3, AH, AW), np.float32)
            canvas[:] = self._fill_value(name)[:, None, None]
            h, w = job.ref.shape[:2]
            mask = np.ones((AH, AW), np.float32)
            if h > 2 * g and w > 2 * g:  # what stays known: the reference less the grown margin
                canvas[:, job.y0 + g : job.y0 + h - g, job.x0 + g : job.x0 + w - g] = self._to_unit(
                    job.ref[g : h - g, g : w - g]
                )
                mask[job.y0 + g : job.y0 + h - g, job.x0 + g : job.x0 + w - g] = 0.0
            imgs.append(canvas)
            masks.append(mask)
        cond = self._encode(np.stack(imgs))
        mask = self._mask_channels(self._upload(np.stack(masks)))
        return cond, mask

    def _fast(self, jobs: Sequence[Job], AW: int, AH: int):
        """Reference-only encoding, placed on constant fill latents; mask at latent
        resolution. What is conditioned is what is known: a latent cell is the reference's
        only where the mask keeps it (wholly inside the reference, less the grown margin);
        every other cell, the straddling ones at the reference's edges too, is fill."""
        torch = self.torch
        s, grid = self.vae_scale, self.grid
        h, w = AH // s, AW // s
        refs = []
        for job in jobs:
            job.fill_color = self._fill_name(job)
            if (job.x0 + job.pad_left) % s or (job.y0 + job.pad_top) % s:
                raise ValueError(
                    f"the reference at ({job.x0 + job.pad_left}, {job.y0 + job.pad_top}) is not on "
                    f"this checkpoint's {s}-px latent grid: plan with its alignment grid ({grid})"
                )
            rh, rw = job.ref.shape[:2]
            ref = np.empty((3, -(-rh // grid) * grid, -(-rw // grid) * grid), np.float32)
            ref[:] = self._fill_value(job.fill_color)[:, None, None]
            ref[:, :rh, :rw] = self._to_unit(job.ref)
            refs.append(ref)
        # only the references are encoded: one VAE call per padded reference size
        by_shape: dict[tuple, list[int]] = {}
        for i, ref in enumerate(refs):
            by_shape.setdefault(ref.shape, []).append(i)
        ref_lats: list = [None] * len(jobs)
        for idx in by_shape.values():
            for i, lat in zip(idx, self._encode(np.stack([refs[i] for i in idx]))):
                ref_lats[i] = lat
        conds, masks = [], []
        g = self.cfg.mask_grow_px
        for job, ref_lat in zip(jobs, ref_lats):
            rh, rw = job.ref.shape[:2]
            cond = self._fill_latent(job.fill_color)[:, None, None].expand(-1, h, w).clone()
            ly, lx = (job.y0 + job.pad_top) // s, (job.x0 + job.pad_left) // s
            # known = latent cells wholly inside the reference (less the grown margin)
            ky0, kx0 = -(-(job.y0 + job.pad_top + g) // s), -(-(job.x0 + job.pad_left + g) // s)
            ky1 = min((job.y0 + job.pad_top + rh - g) // s, h)
            kx1 = min((job.x0 + job.pad_left + rw - g) // s, w)
            m = torch.ones((h, w), device=self.device, dtype=self.dtype)
            if ky1 > ky0 and kx1 > kx0:
                m[ky0:ky1, kx0:kx1] = 0.0
                cond[:, ky0:ky1, kx0:kx1] = ref_lat[:, ky0 - ly : ky1 - ly, kx0 - lx : kx1 - lx]
            conds.append(cond)
            masks.append(m[None].expand(s * s, -1, -1))
        return torch.stack(conds), torch.stack(masks)

    # -------------------------------------------------------------- denoising
