"""Manifest cells -> typed NumPy/Arrow columns, and the first problem of each row.

A value that is missing or ill-typed marks its row (``bad``), never raises; per-value
parsing only runs for columns stored with an unexpected type (numbers written as
strings), and messages are only formatted for the rows that have a problem.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..common.codes import CODE


class Problems:
    """The first problem per row, as a message and its code; formatted only for rows that
    have one."""

    def __init__(self, n: int):
        self.msg = np.full(n, None, dtype=object)
        self.code = np.zeros(n, dtype=np.int16)
        self.any = np.zeros(n, dtype=bool)

    def add(self, bad: np.ndarray, text, code: str = "invalid_request") -> None:
        hit = bad & ~self.any
        if not hit.any():
            return
        self.any |= hit
        self.code[hit] = CODE[code]
        for i in np.flatnonzero(hit):
            self.msg[i] = text(i) if callable(text) else text


def column(table: pa.Table, name: str):
    if name not in table.column_names:
        return None
    col = table.column(name)
    if isinstance(col, pa.ChunkedArray):
        # one chunk (the usual block) is taken as it is: combining would copy it, and a
        # string column is read by several checks
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return None if pa.types.is_null(col.type) else col


def is_present(col, n: int) -> np.ndarray:
    if col is None:
        return np.zeros(n, bool)
    return np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def int_column(table: pa.Table, name: str):
    """-> (values int64, present bool, bad bool). Integral floats and numeric strings pass."""
    n = table.num_rows
    col = column(table, name)
    present = is_present(col, n)
    if col is None:
        return np.zeros(n, np.int64), present, np.zeros(n, bool)
    t = col.type
    if pa.types.is_integer(t):
        return col.fill_null(0).to_numpy().astype(np.int64), present, np.zeros(n, bool)
    if pa.types.is_floating(t):
        v = col.fill_null(0).to_numpy().astype(np.float64)
        ok = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 2**62)
        return np.where(ok, v, 0).astype(np.int64), present, present & ~ok
    vals = np.zeros(n, np.int64)
    bad = np.zeros(n, bool)
    for i, v in enumerate(col.to_pylist()):  # unexpected storage type: slow path
        if v is None:
            continue
        try:
            if isinstance(v, bool):
                raise ValueError
            f = v if isinstance(v, int) else float(v)
            if f != int(f):
                raise ValueError
            vals[i] = int(f)
        except (ValueError, TypeError, OverflowError):
            bad[i] = True
    return vals, present, bad


def bool_column(table: pa.Table, name: str, default: bool):
    n = table.num_rows
    col = column(table, name)
    if col is None:
        return np.full(n, default), np.zeros(n, bool)
    if pa.types.is_boolean(col.type):
        return np.asarray(
            col.fill_null(default).to_numpy(zero_copy_only=False), dtype=bool
        ), np.zeros(n, bool)
    vals, bad = np.full(n, default), np.zeros(n, bool)
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    for i, v in enumerate(col.to_pylist()):
        if v is None:
            continue
        w = words.get(str(v).strip().lower())
        if w is None:
            bad[i] = True
        else:
            vals[i] = w
    return vals, bad


def str_column(table: pa.Table, name: str, default: str | None, numbers_ok: bool = False):
    """-> (pa.StringArray with nulls replaced by ``default``, bad bool).

    Non-string storage is ill-typed (``bad``) unless ``numbers_ok`` (ids may be ints).
    """
    n = table.num_rows
    col = column(table, name)
    if col is None:
        return pa.array([default] * n, pa.string()) if default is not None else pa.nulls(
            n, pa.string()
        ), np.zeros(n, bool)
    bad = np.zeros(n, bool)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
    elif not pa.types.is_string(col.type):
        is_num = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        if not (numbers_ok and is_num):
            bad = is_present(col, n)
        try:
            col = col.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            col = pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
    if default is not None:
        col = col.fill_null(default)
    return col, bad


def enum_column(arr: pa.Array, allowed: tuple[str, ...], aliases: dict | None = None):
    """Strings -> index into ``allowed`` (-1 = unknown), case- and space-insensitive.

    Parses each distinct value once (a catalogue has a handful).
    """
    lut = {a: i for i, a in enumerate(allowed)}
    for k, v in (aliases or {}).items():
        lut[k] = lut[v]
    enc = pc.utf8_lower(pc.utf8_trim_whitespace(arr)).dictionary_encode()
    codes = np.array([lut.get(u, -1) for u in enc.dictionary.to_pylist()] or [-1], dtype=np.int64)
    return (
        codes[enc.indices.fill_null(0).to_numpy(zero_copy_only=False)]
        if len(arr)
        else np.zeros(0, np.int64)
    )
