"""Chunked thread parallelism for column kernels (NumPy and Arrow release the GIL)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def map_chunks(
    fn: Callable[[int, int], T], n: int, chunk: int, threads: int | None = None
) -> list[T]:
    """``fn(start, stop)`` for consecutive chunks of ``range(n)``, results in order."""
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)] or [(0, 0)]
    threads = min(threads or os.cpu_count() or 1, len(bounds))
    if threads <= 1:
        return [fn(s, e) for s, e in bounds]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda b: fn(*b), bounds))
