"""How many decimals each computed float of the metadata keeps, and how a stored value is
compared with another: within one unit of its last stored digit.

A float computed from pixels in float32 (a score, a fit's residual) differs in its last bits
from one CPU to another: OpenCV and BLAS pick other kernels, NumPy sums in another order.
Stored with fewer digits than it has, such a value still moves by one unit of the last
stored digit whenever it sits next to a rounding boundary, however tiny the difference
underneath; it never moves by more (tests/run/test_golden.py perturbs the computation and
shows it). Floats that are not listed here come from exact arithmetic (one division of
integers: ``scale``) and compare exactly.
"""

from __future__ import annotations

import math

# column -> decimals kept; quality_<defect> columns are matched by the prefix
STORED_DECIMALS = {
    # the score's per-defect columns and quality_distance: they move by up to 6e-6 when
    # every float kernel's output moves by 8 units of its last place (the colour cast
    # most; tests/run/test_golden.py): four decimals, a margin of ten over that
    "quality_": 4,
    "seam_score": 6,
    "texture_score": 6,
    "backdrop_residual": 3,
    "backdrop_noise": 3,
    "border_variation": 3,
    "border_lines": 3,
    "scene_distance": 4,  # a quality_distance: the same precision
}


def decimals(column: str) -> int | None:
    """The decimals ``column`` is stored with; None: not rounded for storage."""
    if column.startswith("quality_"):
        return STORED_DECIMALS["quality_"]
    return STORED_DECIMALS.get(column)


def stored(column: str, value: float | None) -> float | None:
    """``value`` as the metadata keeps it."""
    if value is None:
        return None
    places = decimals(column)
    return float(value) if places is None else round(float(value), places)


def same_stored(column: str, got: float, want: float) -> bool:
    """Whether two stored values of ``column`` agree: within one unit of the last stored
    digit for a rounded column (and the float's own representation error of that unit),
    exactly otherwise; NaN matches NaN."""
    if math.isnan(got) or math.isnan(want):
        return math.isnan(got) and math.isnan(want)
    places = decimals(column)
    if places is None:
        return got == want
    unit = 10.0**-places
    return abs(got - want) <= unit * (1 + 1e-9)
