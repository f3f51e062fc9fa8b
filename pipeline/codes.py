"""Row outcome codes (a contract: scripts match on these strings).

Codes are small integers inside the vectorised planner (index into ``CODES``) and
strings everywhere a person or a script sees them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

OK, REJECTED, FAILED = "ok", "rejected", "failed"

# Index 0 = no error. Order within a group is not precedence: the planner applies
# checks in docs/contracts.md's order and keeps the first failure.
CODES: tuple[str | None, ...] = (
    None,
    # request and geometry -> rejected
    "invalid_request",
    "invalid_id",
    "duplicate_id",
    "canvas_too_small",
    "canvas_too_large",
    "out_of_bounds",
    "no_overlap",
    "reference_too_small",
    "reference_aspect",
    "aligned_canvas_too_large",
    # image -> failed
    "image_not_found",
    "image_unreadable",
    "image_too_large",
    "unsupported_image",
    "image_access_denied",
    # runtime -> failed
    "generation_failed",
    "moderated",
    "insufficient_credits",
    "budget_exhausted",
)
CODE = {name: i for i, name in enumerate(CODES) if name}
IMAGE_CODES = frozenset(
    {
        "image_not_found",
        "image_unreadable",
        "image_too_large",
        "unsupported_image",
        "image_access_denied",
    }
)
FAILED_CODES = IMAGE_CODES | {
    "generation_failed",
    "moderated",
    "insufficient_credits",
    "budget_exhausted",
}
GEOMETRY_CODES = (
    "canvas_too_small",
    "canvas_too_large",
    "out_of_bounds",
    "no_overlap",
    "reference_too_small",
    "reference_aspect",
    "aligned_canvas_too_large",
)


def status_of(code: str | None) -> str:
    if not code:
        return OK
    return FAILED if code in FAILED_CODES else REJECTED


def status_array(code_idx: np.ndarray) -> pa.Array:
    """Code indices -> Arrow status strings, by a dictionary lookup (no per-row Python)."""
    return pa.array([status_of(c) for c in CODES], pa.string()).take(
        pa.array(code_idx.astype(np.int32))
    )


def code_array(code_idx: np.ndarray) -> pa.Array:
    return pa.array(list(CODES), pa.string()).take(pa.array(code_idx.astype(np.int32)))


def tally(column) -> dict[str, int]:
    """How many rows hold each value of a status or code column (nulls not counted)."""
    import pyarrow.compute as pc

    return {d["values"]: d["counts"] for d in pc.value_counts(column.drop_null()).to_pylist()}


def add_counts(by_status: dict[str, int], by_code: dict[str, int], table) -> None:
    """Add a table's counts per ``status`` and per ``error_code`` to running totals."""
    for total, col in ((by_status, "status"), (by_code, "error_code")):
        for k, v in tally(table.column(col)).items():
            total[k] = total.get(k, 0) + v
