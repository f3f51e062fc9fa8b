"""The one way anything here retries: capped exponential backoff with jitter, the
server's ``Retry-After`` honoured, bounded by a number of attempts or by the seconds
waited in all. Storage calls, http(s) sources, the hosted API and the cluster's job
server all go through ``call``; each says, attempt by attempt, what is worth retrying.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
# "Retry-After: 0" over and over must still add up to the bounded wait
RETRY_AFTER_MIN_S = 0.1


class RetryLater(Exception):
    """Raised by an attempt to ask for another one, after ``wait`` seconds (None: the
    policy's backoff). When the retries are spent, ``error`` is raised instead."""

    def __init__(self, error: BaseException, wait: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.wait = wait


@dataclass(frozen=True)
class Policy:
    """How long to wait before attempt n + 1, and when to give up."""

    base: float = 0.2
    cap: float = 5.0
    attempts: int | None = None  # the most attempts, or
    max_wait_s: float | None = None  # the most seconds waited in all
    # many workers retrying one bucket spread over the whole interval; a single client
    # (an API conversation, a job server) waits at least half of it
    full_jitter: bool = False

    def delay(self, attempt: int) -> float:
        top = min(self.cap, self.base * 2**attempt)
        return random.uniform(0.0 if self.full_jitter else top / 2, top)

    def spent(self, attempt: int, waited: float) -> bool:
        """Whether attempt ``attempt`` (0, 1, ...) was the last, having waited ``waited`` s
        (the wait about to come included)."""
        if self.attempts is not None and attempt + 1 >= self.attempts:
            return True
        return self.max_wait_s is not None and waited > self.max_wait_s


def call(
    attempt: Callable[[int], T],
    policy: Policy,
    on_wait: Callable[[int, float, BaseException], None] | None = None,
) -> T:
    """``attempt(n)`` for n = 0, 1, ... until it returns; an attempt that raises
    ``RetryLater`` is tried again after its wait, unless the policy is spent, when its
    ``error`` is raised (with its own cause and traceback). ``on_wait(n, seconds, error)``
    hears of every wait (a note in a log)."""
    waited = 0.0
    for n in range(1 << 30):
        try:
            return attempt(n)
        except RetryLater as r:
            retry = r
        wait = retry.wait if retry.wait is not None else policy.delay(n)
        if policy.spent(n, waited + wait):
            raise retry.error
        if on_wait is not None:
            on_wait(n, wait, retry.error)
        time.sleep(wait)
        waited += wait
    raise AssertionError("unreachable")


def retry_after(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` header: seconds, or a date (at least ``RETRY_AFTER_MIN_S``);
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return max(RETRY_AFTER_MIN_S, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(RETRY_AFTER_MIN_S, when.timestamp() - time.time())


def header(headers, name: str) -> str | None:
    """A header's value, whatever the case of its name."""
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)
