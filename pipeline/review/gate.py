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
from ..config import OutputConfig, QualityConfig, QualityThresholds
from .compose import composite, effective_feather
from .score import judge

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
    attempts, and how the write stage will make the canvas it writes (``composite``), so
    the gate judges those very pixels and its kept attempt's score is the row's."""

    thresholds: QualityThresholds
    max_attempts: int = 1
    feather_px: int = 8
    keeps_reference: bool = False  # the backend keeps the reference exactly: no feather
    color_match: bool = False  # output.color_match

    @classmethod
    def of(cls, quality: QualityConfig, output: OutputConfig, keeps_reference: bool) -> Gate:
        return cls(
            quality.thresholds,
            quality.max_attempts,
            output.feather_px,
            keeps_reference,
            output.color_match,
        )

    def judge(self, generated: np.ndarray, ref, box: Box, filled: bool = False) -> dict:
        """The metadata's quality columns (``score.judge``) of a generated canvas as the
        write stage will write it. ``ref``: the row's reference (``run.load.Reference``);
        ``filled``: made by the routing stage (a backdrop or scene fill: no colour match)."""
        final = composite(
            generated, ref, box, self.feather_px, self.color_match, self.keeps_reference, filled
        )
        feather = effective_feather(self.feather_px, box.height, box.width)
        return judge(final, box, self.thresholds, max(feather, 1))


def distance_of(judged: dict | None) -> float:
    """How far over its thresholds a judged attempt is (``quality_distance``): above 1 it
    fails; 0 where nothing was generated or no score could be made (None)."""
    return (judged or {}).get("quality_distance") or 0.0
