"""The contract every shared-state store keeps, and the values it answers with.

Two homes implement it: ``RedisStore`` (shared by every process, one Lua script
per decision) and ``LocalStore`` (in-process, the embedded default and the
fallback). ``FailsafeStore`` puts the second behind the first.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """One rate to decide: at most ``limit`` units per ``period`` seconds.

    ``burst`` is how many units may be spent at once from an idle start; the
    GCRA admits no more than ``burst`` plus the rate in any window, so there is
    no burst at window edges. ``enforce=False`` counts without refusing
    (shadow mode): its refusal never blocks the other limits. ``track`` names a
    bounded, expiring set that records this key while it is refused (what the
    admin shows as "limited now"); None records nothing.
    """

    key: str
    limit: int
    period: float
    burst: int
    cost: int = 1
    enforce: bool = True
    track: str | None = None

    @property
    def interval(self) -> float:
        """Seconds between two units at the steady rate (the emission interval)."""
        return self.period / self.limit


@dataclass(frozen=True)
class LimitResult:
    """What one limit said. Times are in seconds."""

    limit: Limit
    allowed: bool
    remaining: int
    retry_after: float
    reset_after: float


@dataclass(frozen=True)
class RateDecision:
    """The verdict on all the limits of one request, decided together.

    ``allowed`` is False when any enforced limit refused; then nothing was
    charged to any limit. ``degraded`` is True when the shared store could not
    be reached and the answer comes from this process alone.
    """

    allowed: bool
    results: tuple[LimitResult, ...]
    degraded: bool = False

    @property
    def retry_after(self) -> float:
        """The longest wait among the enforced limits that refused (0 when allowed)."""
        waits = [r.retry_after for r in self.results if not r.allowed and r.limit.enforce]
        return max(waits, default=0.0)


@dataclass(frozen=True)
class LeaseResult:
    """The answer to a request for one of ``limit`` slots under a key.

    ``retry_after`` is when the earliest current holder's lease runs out, a
    hint for ``Retry-After`` when the slot was refused.
    """

    acquired: bool
    holders: int
    retry_after: float
    degraded: bool = False


@dataclass(frozen=True)
class QueueResult:
    """A visitor's turn in a waiting room.

    ``place`` is the 1-based place in line (0 when admitted); ``active`` and
    ``waiting`` count the admitted visitors and those in line after this call.
    """

    admitted: bool
    place: int
    active: int
    waiting: int
    degraded: bool = False


class Store(abc.ABC):
    """Shared state: rate counters, leases, and small values, each with a TTL.

    Every method is one round trip at most. Keys are plain strings chosen by
    the caller; the store adds its own prefix. Every key written expires.
    """

    #: "redis" or "local"; "failsafe" for the guard around both.
    kind: str = ""
    #: The most keys one "limited now" set keeps (the soonest to expire go first).
    tracked_keys: int = 1000

    @abc.abstractmethod
    def rate_limit(self, limits: Sequence[Limit]) -> RateDecision:
        """Decide every limit together; charge them only if no enforced one refuses."""

    @abc.abstractmethod
    def limited_keys(self, track: str, count: int = 100) -> list[tuple[str, float]]:
        """Keys recorded in the set ``track`` that may not retry yet: (key, seconds left)."""

    @abc.abstractmethod
    def reset_limits(self, keys: Sequence[str], track: str | None = None) -> int:
        """Forget the counters of ``keys`` and their "limited now" entries; how many existed."""

    @abc.abstractmethod
    def acquire_lease(self, key: str, holder: str, limit: int, ttl: float) -> LeaseResult:
        """Take (or renew) one of ``limit`` slots under ``key`` for ``ttl`` seconds."""

    @abc.abstractmethod
    def renew_lease(self, key: str, holder: str, ttl: float) -> bool:
        """Extend a held lease; False when it is no longer held (expired or released)."""

    @abc.abstractmethod
    def release_lease(self, key: str, holder: str) -> bool:
        """Give back a slot; False when this holder did not hold it any more."""

    @abc.abstractmethod
    def count_leases(self, key: str) -> int:
        """How many unexpired leases ``key`` has now."""

    @abc.abstractmethod
    def wait_in_line(
        self, key: str, ticket: str, limit: int, active_ttl: float, queue_ttl: float
    ) -> QueueResult:
        """Admit ``ticket`` to one of ``limit`` places under ``key``, in arrival order.

        An admitted ticket holds its place (a lease under ``key``, so
        ``count_leases`` and ``release_lease`` apply) for ``active_ttl`` seconds
        after its last call; a waiting one keeps its place in line for
        ``queue_ttl`` seconds after its last call. An empty ticket only looks.
        """

    @abc.abstractmethod
    def get(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""

    @abc.abstractmethod
    def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        """Store ``value`` for ``ttl`` seconds; with ``only_if_absent``, only if none is there."""

    @abc.abstractmethod
    def compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        """Store ``value`` only if the current value is ``expected`` (None: absent)."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""

    @abc.abstractmethod
    def incr(self, key: str, amount: int = 1, ttl: float = 60.0) -> int:
        """Add ``amount`` to a counter; a new counter expires after ``ttl`` seconds."""

    @abc.abstractmethod
    def ping(self) -> float:
        """One round trip; the seconds it took."""
