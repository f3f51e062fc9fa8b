"""Product-photo columns of a manifest (docs/product-photos.md): the product's box
(``subject_x0`` .. ``subject_y1``, source pixels after EXIF rotation) that ``anchor:
subject`` places, and what ``outpaint manifest --analyze`` found of the backdrop
(``backdrop_kind``, ``backdrop_color``, ``backdrop_sides``), from which planning routes a
row to the backdrop fill or to the model without decoding it. Vectorised, like rows.py;
the user's own detector may fill them: they are validated, not trusted."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.backdrop import KINDS, SIDE_LETTERS
from .cells import Problems, column, enum_column, int_column, is_present, str_column

SUBJECT_COLUMNS = ("subject_x0", "subject_y0", "subject_x1", "subject_y1")
BACKDROP_COLUMNS = ("backdrop_kind", "backdrop_color", "backdrop_sides")
ROUTES = ("backdrop", "model")
_BITS = np.array([1, 2, 4, 8], dtype=np.int8)  # left, top, right, bottom


def sides_bits(left, top, right, bottom) -> np.ndarray:
    """Sides as a 4-bit mask per row (the order of ``box.Sides``)."""
    return (
        left.astype(np.int8) * _BITS[0]
        + top.astype(np.int8) * _BITS[1]
        + right.astype(np.int8) * _BITS[2]
        + bottom.astype(np.int8) * _BITS[3]
    ).astype(np.int8)


def subject_fields(table: pa.Table, p: Problems) -> dict:
    """The product's box: all four columns or none, integers, non-empty, not negative.
    That it lies inside the source is checked once the source's size is known."""
    n = table.num_rows
    values, given, bad = [], np.zeros(n, bool), np.zeros(n, bool)
    for name in SUBJECT_COLUMNS:
        v, has, b = int_column(table, name)
        p.add(b, f"{name} must be an integer (source pixels, after EXIF rotation)")
        values.append(v)
        given |= has
        bad |= b
    every = np.ones(n, bool)
    for name in SUBJECT_COLUMNS:
        every &= is_present(column(table, name), n)
    p.add(
        given & ~every,
        "subject_x0, subject_y0, subject_x1 and subject_y1 go together: give all four or none",
    )
    x0, y0, x1, y1 = values
    empty = every & ~bad & ((x0 < 0) | (y0 < 0) | (x0 >= x1) | (y0 >= y1))

    def message(i):
        return (
            f"subject box ({x0[i]}, {y0[i]}, {x1[i]}, {y1[i]}) is empty or negative: need "
            "0 <= subject_x0 < subject_x1 and 0 <= subject_y0 < subject_y1 (source pixels)"
        )

    p.add(empty, message)
    return {
        "has_subject": every & ~bad & ~empty,
        "subject_x0": x0,
        "subject_y0": y0,
        "subject_x1": x1,
        "subject_y1": y1,
    }


def backdrop_fields(table: pa.Table, p: Problems) -> dict:
    """What an analysis found: the kind, its colour, which sides are plain (bit mask; -1
    where the manifest does not say, so every side counts as its kind says)."""
    n = table.num_rows
    kind, kind_bad = str_column(table, "backdrop_kind", None)
    known = is_present(kind, n)
    kind_idx = enum_column(kind.fill_null(""), KINDS) if known.any() else np.full(n, -1)
    p.add(
        kind_bad | (known & (kind_idx < 0)),
        lambda i: f"backdrop_kind {kind[i].as_py()!r} is not one of {', '.join(KINDS)}",
    )
    color, color_bad = str_column(table, "backdrop_color", None)
    hex_ok = pc.fill_null(pc.match_substring_regex(color, r"^#[0-9a-fA-F]{6}$"), True)
    p.add(
        color_bad | ~np.asarray(hex_ok, bool),
        lambda i: f"backdrop_color {color[i].as_py()!r} is not a #rrggbb colour",
    )
    sides, sides_bad = str_column(table, "backdrop_sides", None)
    has_sides = is_present(sides, n)
    letters_ok = pc.fill_null(pc.match_substring_regex(sides, f"^[{SIDE_LETTERS}]*$"), True)
    p.add(
        sides_bad | ~np.asarray(letters_ok, bool),
        lambda i: f"backdrop_sides {sides[i].as_py()!r} holds letters other than l, t, r, b",
    )
    bits = np.full(n, -1, dtype=np.int8)
    if has_sides.any():
        lowered = pc.utf8_lower(sides.fill_null(""))
        found = [
            np.asarray(pc.match_substring(lowered, c).to_numpy(zero_copy_only=False), bool)
            for c in SIDE_LETTERS
        ]
        bits = np.where(has_sides, sides_bits(*found), bits).astype(np.int8)
    canon = pa.array(KINDS, pa.string()).take(pa.array(np.maximum(kind_idx, 0)))
    return {
        "backdrop_kind": pc.if_else(pa.array(kind_idx >= 0), canon, pa.scalar(None, pa.string())),
        "backdrop_color": pc.utf8_lower(color),
        "plain_sides": bits,
    }


def plan_routes(
    route: str,
    generated: np.ndarray,
    ok: np.ndarray,
    kind: pa.Array,
    plain: np.ndarray,
    needs: np.ndarray,
) -> pa.Array:
    """Each row's route, where planning can tell: ``model.route`` when forced; under auto,
    the manifest's analysis: a plain backdrop on every side the row generates -> backdrop, a
    scene there -> model, no analysis -> null (the load stage decides, after decoding).
    ``needs``: the sides each row generates (bit mask)."""
    n = len(generated)
    todo = generated & ok
    if route != "auto":
        return pa.array(np.where(todo, route, None), pa.string())
    kinds = np.asarray(kind.fill_null("").to_numpy(zero_copy_only=False), dtype=object)
    plain_kind = (kinds == "flat") | (kinds == "gradient")
    covered = np.where(plain < 0, plain_kind, (needs & ~plain) == 0)  # -1: the kind's word for all
    out = np.full(n, None, dtype=object)
    out[todo & plain_kind & covered] = "backdrop"
    out[todo & (kinds != "") & ~(plain_kind & covered)] = "model"
    return pa.array(out, pa.string())
