"""Row outcome codes (a contract: scripts match on these strings).

Codes are small integers inside the vectorised planner (index into ``CODES``) and
strings everywhere a person or a script sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OK, REJECTED, FAILED = "ok", "rejected", "failed"

# Index 0 = no error. Order within a group is not precedence: the planner applies
# checks in docs/contracts.md's order and keeps the first failure.
CODES: tuple[str | None, ...] = (
    None,
    # request and geometry -> rejected
    "invalid_request",
    "prompt_too_long",
    "cell_too_large",
    "row_too_large",
    "invalid_id",
    "duplicate_id",
    "canvas_too_small",
    "canvas_too_large",
    "out_of_bounds",
    "no_overlap",
    "reference_too_small",
    "reference_aspect",
    "aligned_canvas_too_large",
    "preset_too_small",
    # image -> failed
    "image_not_found",
    "image_unreadable",
    "image_too_large",
    "unsupported_image",
    "image_access_denied",
    "image_metadata_too_large",
    "backdrop_not_plain",
    "preset_not_met",
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
        "image_metadata_too_large",
        "backdrop_not_plain",
        "preset_not_met",
    }
)
# a request's own problems (the first of them is the row's code, before ids and images)
REQUEST_CODES = ("invalid_request", "prompt_too_long", "cell_too_large", "row_too_large")
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
    "preset_too_small",
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


@dataclass
class Counts:
    """Rows per status and per code: the one counter of the run, its metadata, the plan
    and the review page. Columnar (Arrow's ``value_counts``), never a loop per row."""

    by_status: dict[str, int] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)
    by_review: dict[str, int] = field(default_factory=dict)  # generated ok rows: passed, held...

    @classmethod
    def of(cls, table) -> Counts:
        return cls().add(table)

    def add(self, table) -> Counts:
        """Add a table's rows (its ``status`` and ``error_code`` columns)."""
        for total, name in (
            (self.by_status, "status"),
            (self.by_code, "error_code"),
            (self.by_review, "review_status"),
        ):
            if name not in table.column_names:
                continue
            column = table.column(name).drop_null()
            for d in pc.value_counts(column).to_pylist():
                total[d["values"]] = total.get(d["values"], 0) + d["counts"]
        return self

    def statuses(self) -> dict[str, int]:
        """Every status, zero included, in the contract's order."""
        return {k: self.by_status.get(k, 0) for k in (OK, REJECTED, FAILED)}

    def codes_by_count(self) -> dict[str, int]:
        """The codes, most frequent first (a summary's order)."""
        return dict(sorted(self.by_code.items(), key=lambda kv: (-kv[1], kv[0])))
