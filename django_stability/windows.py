"""Sliding windows of call outcomes: the last N calls, or the calls of the last N seconds.

Plain data structures with no clock and no lock of their own: the caller
passes the time and serialises access. The circuit breaker measures failure
and slow-call rates over one; the retry budget counts calls and retries over
another. Each keeps running totals, so reading them is O(1), and recording is
O(1) amortised (a time window clears at most its own size of stale buckets).
"""

from __future__ import annotations

import math
from typing import Protocol

#: Outcome flags of one call. 0 is a success that was not slow.
FAILED = 1
SLOW = 2


class Window(Protocol):
    """What the breaker needs from a window."""

    calls: int
    failed: int
    slow: int

    def add(self, outcome: int, now: float, count: int = 1) -> None:
        """Record ``count`` calls with the same ``outcome`` (FAILED/SLOW flags) at ``now``."""

    def expire(self, now: float) -> None:
        """Forget what is older than the window at ``now``."""

    def clear(self) -> None:
        """Forget everything."""


class CountWindow:
    """The outcomes of the last ``size`` calls, in a ring."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a count window holds at least one call")
        self.size = size
        self._ring = bytearray(size)
        self._next = 0
        self.calls = 0
        self.failed = 0
        self.slow = 0

    def add(self, outcome: int, now: float = 0.0, count: int = 1) -> None:
        if count <= 0:
            return
        if count >= self.size and outcome == 0:
            # A run of successes at least as long as the window replaces all of it.
            self.clear()
            self.calls = self.size
            return
        ring, size = self._ring, self.size
        for _ in range(min(count, size)):
            index = self._next
            if self.calls == size:
                old = ring[index]
                self.failed -= old & FAILED
                self.slow -= (old & SLOW) >> 1
            else:
                self.calls += 1
            ring[index] = outcome
            self.failed += outcome & FAILED
            self.slow += (outcome & SLOW) >> 1
            self._next = (index + 1) % size

    def expire(self, now: float) -> None:
        """Count windows do not age."""

    def clear(self) -> None:
        self._ring = bytearray(self.size)
        self._next = 0
        self.calls = self.failed = self.slow = 0


class TimeWindow:
    """The outcomes of the calls of the last ``size`` seconds, in one-second buckets.

    ``now`` is any clock in seconds (the breaker passes ``time.monotonic()``);
    bucket ``k`` holds the calls made during second ``floor(now) == k``.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a time window spans at least one second")
        self.size = size
        self._seconds = [-1] * size
        self._calls = [0] * size
        self._failed = [0] * size
        self._slow = [0] * size
        self._latest: int | None = None
        self.calls = 0
        self.failed = 0
        self.slow = 0

    def expire(self, now: float) -> None:
        second = math.floor(now)
        latest = self._latest
        if latest is not None and second <= latest:
            return
        if latest is None or second - latest >= self.size:
            self.clear()
        else:
            for s in range(latest + 1, second + 1):
                index = s % self.size
                self.calls -= self._calls[index]
                self.failed -= self._failed[index]
                self.slow -= self._slow[index]
                self._seconds[index] = s
                self._calls[index] = self._failed[index] = self._slow[index] = 0
        self._latest = second

    def add(self, outcome: int, now: float, count: int = 1) -> None:
        if count <= 0:
            return
        self.expire(now)
        second = math.floor(now)
        assert self._latest is not None
        if second < self._latest - self.size + 1:
            return  # older than the window: it has already slid past
        index = second % self.size
        if self._seconds[index] != second:
            # Only possible for a time within the window not seen yet (now < latest).
            self.calls -= self._calls[index]
            self.failed -= self._failed[index]
            self.slow -= self._slow[index]
            self._seconds[index] = second
            self._calls[index] = self._failed[index] = self._slow[index] = 0
        failed = count if outcome & FAILED else 0
        slow = count if outcome & SLOW else 0
        self._calls[index] += count
        self._failed[index] += failed
        self._slow[index] += slow
        self.calls += count
        self.failed += failed
        self.slow += slow

    def clear(self) -> None:
        self._seconds = [-1] * self.size
        self._calls = [0] * self.size
        self._failed = [0] * self.size
        self._slow = [0] * self.size
        self._latest = None
        self.calls = self.failed = self.slow = 0


def rate(part: int, whole: int) -> float:
    """``part`` as a percentage of ``whole`` (0 when ``whole`` is 0)."""
    return 100.0 * part / whole if whole else 0.0
