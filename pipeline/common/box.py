"""The visible reference's box on its canvas, as one small type: what paste-back, the
quality metrics, the canvas and the stages pass around instead of four loose ints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple


class Sides(NamedTuple):
    """Which sides of the box border generated pixels (a side on the canvas edge does not)."""

    left: bool
    top: bool
    right: bool
    bottom: bool


NO_SIDES = Sides(False, False, False, False)


@dataclass(frozen=True)
class Box:
    """``[x0, x1) × [y0, y1)`` in canvas pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def placed(cls, x0: int, y0: int, width: int, height: int) -> Box:
        return cls(x0, y0, x0 + width, y0 + height)

    @classmethod
    def visible(cls, row: Mapping) -> Box:
        """A plan or metadata row's visible box (``visible_x0`` .. ``visible_y1``)."""
        return cls(row["visible_x0"], row["visible_y0"], row["visible_x1"], row["visible_y1"])

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def region(self) -> tuple[slice, slice]:
        """``array[box.region]``: the box's pixels of a canvas array."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def sides(self, canvas_width: int, canvas_height: int) -> Sides:
        return Sides(self.x0 > 0, self.y0 > 0, self.x1 < canvas_width, self.y1 < canvas_height)

    def shifted(self, dx: int, dy: int) -> Box:
        """The same box in coordinates whose origin is at (-dx, -dy): e.g. the visible box
        in the scaled reference's own coordinates is ``visible.shifted(-offset_x, -offset_y)``."""
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)
