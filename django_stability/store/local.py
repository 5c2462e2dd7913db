"""The in-process store: thread-safe, bounded, no I/O.

It is the embedded default when no Redis is configured, and what
``FailsafeStore`` answers from while Redis cannot be reached. Its memory is
bounded by ``max_keys``: past it, the least recently used keys are dropped, so
a flood of distinct client keys cannot grow it without limit. Dropping a rate
counter forgets a client's history (it may then spend one more burst); that is
the price of the bound and it is documented.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from . import algorithms
from .base import LeaseResult, Limit, QueueResult, RateDecision, Store


class LocalStore(Store):
    """A ``Store`` that lives in this process only."""

    kind = "local"

    def __init__(
        self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.clock = clock
        # key -> (expires_at, value); value is a float TAT, a str, an int, or
        # a dict of lease holder -> expiry.
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    # Helpers below are called with the lock held.

    def _read(self, key: str, now: float) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry[1]

    def _write(self, key: str, value: Any, expires_at: float) -> None:
        self._data[key] = (expires_at, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_keys:
            self._data.popitem(last=False)

    def rate_limit(self, limits: Sequence[Limit]) -> RateDecision:
        with self._lock:
            now = self.clock()
            tats = [self._read(limit.key, now) for limit in limits]
            allowed, results, new_tats = algorithms.decide(limits, tats, now)
            for limit, new_tat in zip(limits, new_tats, strict=True):
                if new_tat is not None:
                    self._write(limit.key, new_tat, new_tat)
            for result in results:
                if not result.allowed and result.limit.track:
                    self._record_limited(result.limit, now + result.retry_after, now)
        return RateDecision(allowed, tuple(results))

    @staticmethod
    def _track_key(track: str) -> str:
        return f"track:{track}"

    def _record_limited(self, limit: Limit, until: float, now: float) -> None:
        assert limit.track is not None
        name = self._track_key(limit.track)
        members: dict[str, float] = self._read(name, now) or {}
        algorithms.record_limited(members, limit.key, until, now, self.tracked_keys)
        self._write(name, members, max(members.values()))

    def limited_keys(self, track: str, count: int = 100) -> list[tuple[str, float]]:
        with self._lock:
            now = self.clock()
            members: dict[str, float] = self._read(self._track_key(track), now) or {}
            live = sorted((until, key) for key, until in members.items() if until > now)
            return [(key, until - now) for until, key in live[:count]]

    def reset_limits(self, keys: Sequence[str], track: str | None = None) -> int:
        with self._lock:
            now = self.clock()
            found = 0
            members: dict[str, float] | None = (
                self._read(self._track_key(track), now) if track else None
            )
            for key in keys:
                if self._read(key, now) is not None:
                    found += 1
                self._data.pop(key, None)
                if members is not None:
                    members.pop(key, None)
            return found

    def acquire_lease(self, key: str, holder: str, limit: int, ttl: float) -> LeaseResult:
        with self._lock:
            now = self.clock()
            holders: dict[str, float] = self._read(key, now) or {}
            granted, wait = algorithms.acquire(holders, holder, limit, ttl, now)
            if holders:
                self._write(key, holders, max(holders.values()))
            return LeaseResult(granted, len(holders), wait)

    def renew_lease(self, key: str, holder: str, ttl: float) -> bool:
        with self._lock:
            now = self.clock()
            holders: dict[str, float] | None = self._read(key, now)
            if not holders or holders.get(holder, 0.0) <= now:
                return False
            holders[holder] = now + ttl
            self._write(key, holders, max(holders.values()))
            return True

    def release_lease(self, key: str, holder: str) -> bool:
        with self._lock:
            now = self.clock()
            holders: dict[str, float] | None = self._read(key, now)
            if not holders or holders.pop(holder, 0.0) <= now:
                return False
            if holders:
                self._write(key, holders, max(holders.values()))
            else:
                del self._data[key]
            return True

    def count_leases(self, key: str) -> int:
        with self._lock:
            now = self.clock()
            holders: dict[str, float] | None = self._read(key, now)
            return sum(1 for expiry in (holders or {}).values() if expiry > now)

    def wait_in_line(
        self, key: str, ticket: str, limit: int, active_ttl: float, queue_ttl: float
    ) -> QueueResult:
        line_key = f"{key}:line"
        with self._lock:
            now = self.clock()
            active: dict[str, float] = self._read(key, now) or {}
            line: dict[str, tuple[float, float]] = self._read(line_key, now) or {}
            admitted, place = algorithms.wait_in_line(
                active, line, ticket, limit, active_ttl, queue_ttl, now
            )
            for name, value, expires_at in (
                (key, active, max(active.values(), default=now)),
                (line_key, line, max((d for _, d in line.values()), default=now)),
            ):
                if value:
                    self._write(name, value, expires_at)
                else:
                    self._data.pop(name, None)
            return QueueResult(admitted, place, len(active), len(line))

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._read(key, self.clock())
        return None if value is None else str(value)

    def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        with self._lock:
            now = self.clock()
            if only_if_absent and self._read(key, now) is not None:
                return False
            self._write(key, value, now + ttl)
            return True

    def compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        with self._lock:
            now = self.clock()
            current = self._read(key, now)
            if (None if current is None else str(current)) != expected:
                return False
            self._write(key, value, now + ttl)
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            now = self.clock()
            present = self._read(key, now) is not None
            self._data.pop(key, None)
            return present

    def incr(self, key: str, amount: int = 1, ttl: float = 60.0) -> int:
        with self._lock:
            now = self.clock()
            entry = self._data.get(key)
            if entry is None or entry[0] <= now:
                expires_at, value = now + ttl, 0
            else:
                expires_at, value = entry[0], int(entry[1])
            value += amount
            self._write(key, value, expires_at)
            return value

    def ping(self) -> float:
        return 0.0

    def clear(self) -> None:
        """Forget everything (tests, and a child process after fork)."""
        with self._lock:
            self._data.clear()
