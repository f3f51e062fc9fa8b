"""``quality:``: the score's thresholds, the gate (best of N attempts) and holding rows
for a reviewer (docs/review.md)."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class QualityThresholds(Section):
    """Each defect column's threshold: a row whose column is above it fails the gate.
    The seam columns' fitted on the labelled set of tests/quality_set.py (120 windows of 13
    real photos, seeds 0 and 1: true continuations against nine defect kinds at realistic
    strengths): the vector that keeps >= 93 % of true continuations passing while failing
    the most defects. The whole-area columns' (foreign .. detail) set on the fit photos'
    true continuations alone, above nearly all of them. Figures on held-out photos in
    benchmarks/RESULTS.md. Raise one to be more lenient on that defect."""

    seam: float = Field(3.25, gt=0, description="brightness step across the seam, CIELAB L")
    color: float = Field(3.2, gt=0, description="colour cast across the seam, CIELAB a*b* units")
    blur: float = Field(1.8, gt=0, description="fine detail lost outside (-ln of the ratio)")
    noise: float = Field(0.62, gt=0, description="noise gained outside (ln of the sigmas' ratio)")
    flat: float = Field(0.21, gt=0, description="share of exactly flat or masked-grey pixels")
    mirror: float = Field(0.23, gt=0, description="correlation with the mirrored original")
    stretch: float = Field(1.4, gt=0, description="detail across the seam lost (ln ratio)")
    structure: float = Field(0.95, gt=0, description="edges not continuing across the seam")
    repeat: float = Field(
        0.94, gt=0, description="the original repeated outside it, also smaller (0..1)"
    )
    # the whole-area checks: above nearly every true continuation of the fit photos, so
    # their pass rate holds (docs/review.md has the figures)
    foreign: float = Field(
        0.04, gt=0, description="share of the generated area in a block of foreign colour"
    )
    blank: float = Field(0.03, gt=0, description="share of the generated area left blank")
    frame: float = Field(
        50.0, gt=0, description="a straight line or bar along a canvas edge, grey levels"
    )
    detail: float = Field(1.2, gt=0, description="detail lost far from the seam (-ln ratio)")


class QualityConfig(Section):
    """Every generated row is scored (``quality_distance``, per-defect columns,
    ``quality_pass``); ``max_attempts`` > 1 regenerates a failing row with the next
    attempt's seed and keeps the best; a row that still fails is held for a reviewer."""

    thresholds: QualityThresholds = Field(
        default_factory=QualityThresholds, description="per defect column"
    )
    max_attempts: int = Field(
        1,
        ge=1,
        le=8,
        description="attempts per generated row; 1 = no retry (with the hosted API each "
        "attempt is a paid task)",
    )
    hold: bool | None = Field(
        None,
        description="a row that still fails is written under held/, never images/, until "
        "a reviewer approves it; false: published under images/, still marked held; "
        "default: hold when the gate retries (max_attempts > 1), else publish as before",
    )

    @property
    def holds(self) -> bool:
        """Whether a failing row goes under held/ rather than images/."""
        return self.max_attempts > 1 if self.hold is None else self.hold
