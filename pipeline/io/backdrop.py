"""Studio backdrops: is the border of a product photo a plain backdrop that can simply be
continued, and where is the product on it. Pure NumPy over arrays, no I/O: the load
stage routes rows with it, the model stage fills backdrop rows with it, and
``outpaint manifest --analyze`` writes its findings into a manifest.

A side of the reference that borders generated pixels is judged on a band of pixels
along it:

- its noise: a robust spread of the pixels around their 3x3 local mean;
- the band averaged over small blocks (noise divided down), fitted by a constant
  (``flat``) or by a quadratic surface in (x, y) (``gradient``: a light fall-off, a
  sweep, a vignette), each judged by the RMS distance of the block means from the fit;
- any pixel far from the fit (beyond what its noise explains) marks an object: a product
  cut off by the frame, a prop, a scene. More than a few of them makes the side ``scene``.

The fill continues the fitted field outwards (each canvas pixel takes the field's value
at the nearest point of the reference's border, so nothing is extrapolated beyond what
was seen) and adds grain of the reference's own noise level, seeded per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common.box import Box, Sides
from ..config.model import BackdropConfig

FLAT, GRADIENT, SCENE = "flat", "gradient", "scene"
KINDS = (FLAT, GRADIENT, SCENE)


# the numbers live in one place: the config's documented defaults
_DEFAULT = BackdropConfig()


@dataclass(frozen=True)
class Tolerances:
    """When a band is a backdrop (levels of 0..255); ``model.backdrop`` in the config."""

    flat: float = _DEFAULT.flat_tolerance  # RMS of the block means around a constant
    gradient: float = _DEFAULT.gradient_tolerance  # RMS around a quadratic surface
    outliers: float = _DEFAULT.outlier_share  # share of band pixels far from the fit: a scene
    band: int = _DEFAULT.band_px  # px of each side judged (fewer on a small reference)
    noise: float = _DEFAULT.max_noise  # the band's noise beyond which it is texture
    block: int = 4  # px of the blocks averaged before fitting

    @classmethod
    def of(cls, section) -> Tolerances:
        """From the config's ``model.backdrop`` section."""
        return cls(
            section.flat_tolerance,
            section.gradient_tolerance,
            section.outlier_share,
            section.band_px,
            section.max_noise,
        )


@dataclass
class Backdrop:
    """What a reference's border is, and the fitted field to continue."""

    kind: str  # flat | gradient | scene
    color: tuple[int, int, int]  # the fit's mean over the band, sRGB
    residual: float  # RMS of the band's block means around the chosen fit, levels
    noise: float  # the band's noise (per-pixel sigma), levels
    coef: np.ndarray | None = None  # (3, 6): the quadratic per channel (flat: constant terms only)
    size: tuple[int, int] = (0, 0)  # the reference's (width, height): the field's coordinates
    low: tuple[float, ...] = ()  # per channel, the fitted field's least and greatest value on
    high: tuple[float, ...] = ()  # the band: how far the backdrop strays from one colour

    def distance(self, color: tuple[int, int, int]) -> float:
        """The most any channel of the fitted backdrop (on the band) is from ``color``."""
        if not self.low:
            return float("inf")
        c = np.resize(np.asarray(color, dtype=np.float64), len(self.low))
        return float(
            max(np.max(np.abs(np.asarray(self.low) - c)), np.max(np.abs(np.asarray(self.high) - c)))
        )

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)

    @property
    def plain(self) -> bool:
        return self.kind in (FLAT, GRADIENT)

    def field(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The fitted colour at reference coordinates (float, N x 3)."""
        return _design(xs, ys, self.size) @ self.coef.T


def _design(xs: np.ndarray, ys: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Quadratic terms of coordinates normalised to [-1, 1] over the reference."""
    w, h = size
    x = (2.0 * xs / max(w - 1, 1)) - 1.0
    y = (2.0 * ys / max(h - 1, 1)) - 1.0
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)


def _strips(ref: np.ndarray, sides: Sides, band: int) -> list[tuple[np.ndarray, int, int]]:
    """(pixels, x0, y0) of the band along each side in ``sides``: views, nothing copied.
    Corners are in two strips: they count twice, which no fit minds."""
    h, w = ref.shape[:2]
    out = []
    if sides.left:
        out.append((ref[:, :band], 0, 0))
    if sides.right:
        out.append((ref[:, w - band :], w - band, 0))
    if sides.top:
        out.append((ref[:band, :], 0, 0))
    if sides.bottom:
        out.append((ref[h - band :, :], 0, h - band))
    return out


def _grid_field(
    coef: np.ndarray, x0: int, y0: int, h: int, w: int, size, step: int = 1
) -> np.ndarray:
    """The fitted field (``coef``: 6 x C) over an h x w rectangle at (x0, y0), float32 h x w x C
    (every ``step``-th pixel each way).
    The quadratic is separable: ``[1, y, y²] @ M @ [1, x, x²]ᵀ`` per channel, two tiny
    matrix products instead of an N x 6 design matrix."""
    sw, sh = size
    x = (2.0 * (x0 + np.arange(0, w, step)) / max(sw - 1, 1)) - 1.0
    y = (2.0 * (y0 + np.arange(0, h, step)) / max(sh - 1, 1)) - 1.0
    tx = np.stack([np.ones_like(x), x, x * x])  # 3 x w
    ty = np.stack([np.ones_like(y), y, y * y], axis=1)  # h x 3
    c0, c1, c2, c3, c4, c5 = coef
    zero = np.zeros_like(c0)
    m = np.stack([np.stack([c0, c1, c3]), np.stack([c2, c4, zero]), np.stack([c5, zero, zero])])
    # m: 3 (y power) x 3 (x power) x C; two plain products (einsum's path search costs
    # more than the product on a band)
    rows = np.tensordot(ty, m, axes=(1, 0))  # h x 3 x C
    return np.tensordot(rows, tx, axes=(1, 0)).transpose(0, 2, 1).astype(np.float32)


def _blocks(strips, block: int):
    """Block means of the strips (noise averaged down): centres (xs, ys) and values."""
    out_x, out_y, out_v = [], [], []
    for pixels, x0, y0 in strips:
        rh, rw, c = pixels.shape
        bh, bw = rh // block, rw // block
        if not bh or not bw:
            continue
        region = pixels[: bh * block, : bw * block].astype(np.float32)
        sums = region.reshape(bh, block, bw * block, c).sum(axis=1)
        means = sums.reshape(bh, bw, block, c).sum(axis=2) / (block * block)
        cx = x0 + np.arange(bw) * block + (block - 1) / 2
        cy = y0 + np.arange(bh) * block + (block - 1) / 2
        out_x.append(np.tile(cx, bh))
        out_y.append(np.repeat(cy, bw))
        out_v.append(means.reshape(-1, c))
    if not out_v:
        return np.zeros(0), np.zeros(0), np.zeros((0, strips[0][0].shape[-1]))
    return np.concatenate(out_x), np.concatenate(out_y), np.concatenate(out_v).astype(np.float64)


# second differences along x of white noise of sigma have sigma * sqrt(1.5); a gradient
# has none: the noise estimate ignores the backdrop's light fall-off
_SECOND_DIFF = float(np.sqrt(1.5))
_NOISE_SAMPLES = 16_384  # a strided sample of the differences: stable to a few %
# the mean of the smallest 80 % of |N(0, 1)| (a trimmed mean: an object's edges are not
# noise, and a mean, unlike a median, is not stuck on the half-levels of 8-bit data)
_KEEP = 0.8
_TRIMMED_MEAN = 0.5586


def noise_sigma(strips) -> float:
    """The band's per-pixel noise, from the second differences along each row."""
    diffs = []
    for pixels, _, _ in strips:
        if pixels.shape[1] < 3:
            continue
        p = pixels.astype(np.float32)
        diffs.append((p[:, 1:-1] - 0.5 * (p[:, :-2] + p[:, 2:])).ravel())
    if not diffs:
        return 0.0
    diff = np.abs(np.concatenate(diffs))
    diff = diff[:: max(1, len(diff) // _NOISE_SAMPLES)]
    keep = max(1, int(_KEEP * len(diff)))
    trimmed = np.partition(diff, keep - 1)[:keep]
    return float(trimmed.mean() / _TRIMMED_MEAN / _SECOND_DIFF)


def _residuals(strips, coef: np.ndarray, size, threshold: float) -> tuple[float, float]:
    """The strips' pixels against the fit: the share farther than ``threshold`` (any
    channel: an object), and the spread of the rest, per pixel (the grain to give the fill:
    what a JPEG left of the sensor's noise, correlated or not, as the eye sees it)."""
    far = total = 0
    spread = []
    for pixels, x0, y0 in strips:
        # every other pixel of every other line: a share and a spread, stable to a few %
        h, w = pixels.shape[:2]
        field = _grid_field(coef, x0, y0, h, w, size, step=2)
        diff = np.abs(pixels[::2, ::2].astype(np.float32) - field)
        # the largest channel: pairwise maxima (a reduction over an axis of 3 is slow)
        worst = diff[..., 0]
        for k in range(1, diff.shape[2]):
            worst = np.maximum(worst, diff[..., k])
        far += int(np.count_nonzero(worst > threshold))
        total += worst.size
        spread.append(diff.ravel())
    values = np.concatenate(spread)
    values = values[values <= threshold]  # the object's pixels are not grain
    sigma = float(np.sqrt(np.mean(values * values))) if len(values) else 0.0
    return far / max(total, 1), sigma


def analyse(ref: np.ndarray, sides: Sides, tol: Tolerances = Tolerances()) -> Backdrop:
    """Judge the reference's border on ``sides`` (the ones that border generated pixels)."""
    if ref.ndim == 2:
        ref = ref[:, :, None]
    h, w = ref.shape[:2]
    channels = ref.shape[2]
    size = (w, h)
    band = int(max(2, min(tol.band, h // 4, w // 4)))
    block = int(max(1, min(tol.block, band)))
    if not any(sides) or h < 8 or w < 8:
        return Backdrop(SCENE, (0, 0, 0), float("inf"), 0.0, None, size)
    strips = _strips(ref, sides, band)
    noise = noise_sigma(strips)
    bx, by, bv = _blocks(strips, block)
    if len(bv) < 6:
        return Backdrop(SCENE, (0, 0, 0), float("inf"), noise, None, size)
    # the flat fit: a robust constant; the gradient fit (least squares over the block means)
    # only where the constant does not already decide
    constant = np.median(bv, axis=0)
    flat_rms = float(np.sqrt(np.mean((bv - constant) ** 2)))
    # the block means still hold noise / block: only what exceeds it is structure
    floor = noise / block
    design = None
    coef = np.zeros((6, channels))
    coef[0] = constant
    if noise > tol.noise:  # texture (sand, fabric, foliage, noise): no studio backdrop
        kind, residual = SCENE, flat_rms
    elif max(0.0, flat_rms - floor) <= tol.flat:
        kind, residual = FLAT, flat_rms
    else:
        design = _design(bx, by, size)
        coef, *_ = np.linalg.lstsq(design, bv, rcond=None)
        smooth_rms = float(np.sqrt(np.mean((bv - design @ coef) ** 2)))
        kind = GRADIENT if max(0.0, smooth_rms - floor) <= tol.gradient else SCENE
        residual = smooth_rms
    if kind != SCENE:
        outliers, spread = _residuals(strips, coef, size, far_level(noise))
        # something standing in the band (a product cut by the frame, a prop): a scene
        kind = SCENE if outliers > tol.outliers else kind
        noise = spread if kind != SCENE else noise
    if kind == SCENE:
        fitted = bv
    else:
        fitted = design @ coef if design is not None else np.broadcast_to(constant, bv.shape)
    mean = np.resize(fitted.mean(axis=0), 3)
    color = tuple(np.clip(np.round(mean), 0, 255).astype(int).tolist())
    low, high = tuple(fitted.min(axis=0).tolist()), tuple(fitted.max(axis=0).tolist())
    return Backdrop(kind, color, residual, noise, coef.T.reshape(channels, 6), size, low, high)


def far_level(noise: float) -> float:
    """How far from the fitted backdrop a pixel must be to be something else: beyond
    what its noise explains (6 sigma), and never less than 12 levels."""
    return max(6.0 * noise, 12.0)


def fill(
    ref: np.ndarray,
    backdrop: Backdrop,
    width: int,
    height: int,
    box: Box,
    seed: int,
    color: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """The canvas (height x width x 3 uint8): the fitted backdrop continued across it with
    the reference's own grain (or ``color``, flat and clean: a shop's pure white), the
    reference itself inside ``box``."""
    if color is not None:
        out = np.empty((height, width, 3), np.uint8)
        out[:] = np.asarray(color, np.uint8)
    else:
        # each canvas pixel takes the field at its nearest point of the reference: the
        # backdrop is continued, never extrapolated beyond what the photo showed
        rx = np.clip(np.arange(width) - box.x0, 0, box.width - 1)
        ry = np.clip(np.arange(height) - box.y0, 0, box.height - 1)
        field = _grid_field(backdrop.coef.T, 0, 0, box.height, box.width, backdrop.size)
        canvas = field[ry][:, rx]
        if canvas.shape[2] == 1:
            canvas = np.repeat(canvas, 3, axis=2)
        rng = np.random.default_rng(seed)
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(backdrop.noise)
        out = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    out[box.region] = ref if ref.ndim == 3 else ref[:, :, None]
    return out


def subject_box(
    image: np.ndarray, backdrop: Backdrop, tol: Tolerances = Tolerances()
) -> Box | None:
    """The product's bounding box on a plain backdrop: the pixels that differ from the
    fitted field by more than the backdrop's noise explains (a shadow counts when it is
    darker than that). None on a scene or when nothing differs."""
    if not backdrop.plain:
        return None
    if image.ndim == 2:
        image = image[:, :, None]
    h, w = image.shape[:2]
    field = _grid_field(backdrop.coef.T, 0, 0, h, w, backdrop.size)
    diff = np.abs(image.astype(np.float32) - field).max(axis=2)
    # a 3 x 3 mean first: one noisy pixel is not a product
    pad = np.pad(diff, 1, mode="edge")
    smooth = sum(pad[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
    # ... and a pixel near the product is not the product unless it differs itself
    hit = (smooth > far_level(backdrop.noise / 3.0)) & (diff > far_level(backdrop.noise))
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    if not len(rows):
        return None
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


SIDE_LETTERS = "ltrb"  # Sides' order: left, top, right, bottom


def letters(sides: Sides) -> str:
    return "".join(c for c, on in zip(SIDE_LETTERS, sides) if on)


def from_letters(text: str) -> Sides:
    return Sides(*(c in text for c in SIDE_LETTERS))


def describe(image: np.ndarray, tol: Tolerances = Tolerances()) -> dict:
    """What ``outpaint manifest --analyze`` writes for a source: which of its sides are a
    plain backdrop (``backdrop_sides``, each judged alone, then together), the backdrop's
    kind and colour over them, and the product's box (``subject_x0`` .. ``subject_y1``,
    source pixels) when the backdrop is plain on all four sides."""
    plain = Sides(*(analyse(image, one, tol).plain for one in _single_sides()))
    joint = analyse(image, plain, tol) if any(plain) else None
    if joint is None or not joint.plain:
        plain, joint = Sides(False, False, False, False), None
    out = {
        "backdrop_kind": joint.kind if joint else SCENE,
        "backdrop_color": joint.hex if joint else None,
        "backdrop_sides": letters(plain),
    }
    # the box needs the backdrop across the whole photo: a flat one, or a fit seen on at least
    # three sides (a product standing on the frame's bottom edge still has its box)
    known = joint is not None and (joint.kind == FLAT or sum(plain) >= 3)
    box = subject_box(image, joint, tol) if known else None
    corners = (box.x0, box.y0, box.x1, box.y1) if box else (None,) * 4
    out.update(zip(("subject_x0", "subject_y0", "subject_x1", "subject_y1"), corners))
    return out


def _single_sides() -> list[Sides]:
    return [Sides(*(i == j for j in range(4))) for i in range(4)]
