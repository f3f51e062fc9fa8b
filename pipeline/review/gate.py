"""The quality gate's judgement of one attempt, and the seeds of further attempts.

A generated row that fails the score is regenerated with the next attempt's seed, up to
``quality.max_attempts``, and the best attempt by ``quality_distance`` kept (the retry
loop lives with the model stage: ``run.generate``). Attempt seeds derive from the row's
seed and the attempt number alone, so a rerun, or ``outpaint run --redo`` of a rejected
row, reproduces them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common.box import Box
from ..config import QualityConfig, QualityThresholds
from .compose import effective_feather, feathered_paste, paste_back
from .score import distance, score

M63 = (1 << 63) - 1
GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / phi: attempt seeds far from variant seeds (seed + k)


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of attempt ``attempt`` (0: the row's own) of a row whose seed is ``seed``."""
    if attempt == 0:
        return int(seed)
    x = (int(seed) + attempt * GOLDEN) & ((1 << 64) - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (x ^ (x >> 31)) & M63


@dataclass(frozen=True)
class Gate:
    """What the model stage needs to judge its attempts: the thresholds, how many
    attempts, and the paste-back the write stage will do (so it judges the same pixels)."""

    thresholds: QualityThresholds
    max_attempts: int = 1
    feather_px: int = 8
    blend: bool = True  # False: the backend keeps the reference exactly (no feather band)

    @classmethod
    def of(cls, quality: QualityConfig, feather_px: int, keeps_reference: bool) -> Gate:
        return cls(quality.thresholds, quality.max_attempts, feather_px, not keeps_reference)

    def distance(self, generated: np.ndarray, ref: np.ndarray, box: Box) -> float:
        """``quality_distance`` of a generated canvas once the reference is pasted back
        (both sRGB, as the model sees them); 0 where nothing was generated."""
        H, W = generated.shape[:2]
        sides = box.sides(W, H)
        feather = effective_feather(self.feather_px, box.height, box.width)
        if self.blend:
            final = feathered_paste(generated, ref, box, sides, self.feather_px)
        else:
            final = paste_back(generated, ref, box)
        cols = score(final, box, max(feather, 1))
        return 0.0 if cols is None else distance(cols, self.thresholds)
