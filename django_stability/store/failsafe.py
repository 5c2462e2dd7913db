"""The guard around the Redis store: its own circuit breaker, and a local fallback.

The store is an integration point like any other. A hung or refused Redis must
not hold a request longer than the store's socket timeout, and after a few
failures in a row it must not be called at all for a cooldown: calls are then
answered by the in-process store at no network cost. After the cooldown one
call probes Redis; when it answers, the store returns to it by itself.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import signals
from .base import LeaseResult, Limit, QueueResult, RateDecision, Store

logger = logging.getLogger("django_stability.store")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

#: What makes a call fall back to the local store: any Redis error, and socket errors.
FAILURES = (RedisError, OSError)
#: What counts toward opening the store's breaker: Redis unreachable, hung or
#: loading. An error in the command itself (a wrong type, a script error) is
#: answered from the local store and logged, but says nothing about Redis being
#: down, so it does not move the breaker.
OUTAGES = (RedisConnectionError, RedisTimeoutError, OSError)

T = TypeVar("T")


class StoreBreaker:
    """Opens after ``threshold`` failures in a row; lets one probe through after ``cooldown``.

    A pure state machine over an injected clock: it does no I/O itself.
    """

    def __init__(
        self,
        threshold: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str, BaseException | None], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.failures = 0
        self.open_until = 0.0
        self._probe_out = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May this call go to Redis? Cheap when closed: no lock is taken."""
        if self.state == CLOSED:
            return True
        with self._lock:
            if self.state == OPEN and self.clock() >= self.open_until:
                self._move(HALF_OPEN, None)
            if self.state == HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return True
            return self.state == CLOSED

    def record_success(self) -> None:
        if self.state == CLOSED and self.failures == 0:
            return
        with self._lock:
            self.failures = 0
            self._probe_out = False
            if self.state != CLOSED:
                self._move(CLOSED, None)

    def record_failure(self, error: BaseException | None = None) -> None:
        with self._lock:
            self.failures += 1
            self._probe_out = False
            if self.state == HALF_OPEN or (
                self.state == CLOSED and self.failures >= self.threshold
            ):
                self.open_until = self.clock() + self.cooldown
                self._move(OPEN, error)

    def time_left_open(self) -> float:
        """Seconds until the next probe (0 unless open)."""
        return max(0.0, self.open_until - self.clock()) if self.state == OPEN else 0.0

    def _move(self, state: str, error: BaseException | None) -> None:
        previous, self.state = self.state, state
        if self.on_change is not None:
            self.on_change(state, previous, error)


def _announce(state: str, previous: str, error: BaseException | None) -> None:
    if state == OPEN:
        logger.warning(
            "Shared-state store unreachable (%s: %s); answering from the local store.",
            type(error).__name__ if error else "error",
            error,
        )
    elif state == CLOSED:
        logger.warning("Shared-state store reachable again; back on Redis.")
    signals.store_state_changed.send(
        sender=FailsafeStore, state=state, previous=previous, error=error
    )


class FailsafeStore(Store):
    """Calls ``primary`` while it answers; ``fallback`` while it does not."""

    kind = "failsafe"

    def __init__(
        self, primary: Store, fallback: Store, breaker: StoreBreaker | None = None
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker or StoreBreaker()
        if self.breaker.on_change is None:
            self.breaker.on_change = _announce
        self._answer = threading.local()

    @property
    def degraded(self) -> bool:
        """True while calls are being answered by the fallback."""
        return self.breaker.state != CLOSED

    @property
    def answered_locally(self) -> bool:
        """Whether this thread's last call was answered by the local store, not by Redis.

        For callers whose answer means nothing unless it is shared (a cluster
        verdict): asking the store and then this costs no round trip, and while
        Redis is unreachable the breaker keeps the asking free of I/O.
        """
        return bool(getattr(self._answer, "local", False))

    def _run(self, call: Callable[[Store], T], fallback: Callable[[Store], T] | None = None) -> T:
        """``call`` on Redis while the breaker lets it; else on the local store."""
        self._answer.local = False
        if self.breaker.allow():
            try:
                result = call(self.primary)
            except OUTAGES as exc:
                self.breaker.record_failure(exc)
            except FAILURES as exc:
                logger.error("Shared-state store command failed (%s); answered locally.", exc)
            else:
                self.breaker.record_success()
                return result
        self._answer.local = True
        return (fallback or call)(self.fallback)

    def rate_limit(self, limits: Sequence[Limit]) -> RateDecision:
        return self._run(
            lambda s: s.rate_limit(limits),
            lambda s: dataclasses.replace(s.rate_limit(limits), degraded=True),
        )

    def limited_keys(self, track: str, count: int = 100) -> list[tuple[str, float]]:
        # Keys limited during an outage live in this process's fallback only.
        local = self.fallback.limited_keys(track, count)
        shared = self._run(lambda s: s.limited_keys(track, count), lambda s: [])
        merged = dict(local)
        merged.update(shared)
        return sorted(merged.items(), key=lambda item: item[1])[:count]

    def reset_limits(self, keys: Sequence[str], track: str | None = None) -> int:
        # Reset in both homes: the fallback may hold counters from an outage.
        local = self.fallback.reset_limits(keys, track)
        return max(self._run(lambda s: s.reset_limits(keys, track), lambda s: local), local)

    def acquire_lease(self, key: str, holder: str, limit: int, ttl: float) -> LeaseResult:
        return self._run(
            lambda s: s.acquire_lease(key, holder, limit, ttl),
            lambda s: dataclasses.replace(s.acquire_lease(key, holder, limit, ttl), degraded=True),
        )

    def renew_lease(self, key: str, holder: str, ttl: float) -> bool:
        return self._run(lambda s: s.renew_lease(key, holder, ttl))

    def release_lease(self, key: str, holder: str) -> bool:
        # Released in both homes: a lease taken from the fallback during an
        # outage must not linger there once Redis is back.
        local = self.fallback.release_lease(key, holder)
        return self._run(lambda s: s.release_lease(key, holder), lambda s: local) or local

    def count_leases(self, key: str) -> int:
        return self._run(lambda s: s.count_leases(key))

    def wait_in_line(
        self, key: str, ticket: str, limit: int, active_ttl: float, queue_ttl: float
    ) -> QueueResult:
        return self._run(
            lambda s: s.wait_in_line(key, ticket, limit, active_ttl, queue_ttl),
            lambda s: dataclasses.replace(
                s.wait_in_line(key, ticket, limit, active_ttl, queue_ttl), degraded=True
            ),
        )

    def get(self, key: str) -> str | None:
        return self._run(lambda s: s.get(key))

    def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        return self._run(lambda s: s.set(key, value, ttl, only_if_absent=only_if_absent))

    def compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        return self._run(lambda s: s.compare_and_set(key, expected, value, ttl))

    def delete(self, key: str) -> bool:
        local = self.fallback.delete(key)
        return self._run(lambda s: s.delete(key), lambda s: local) or local

    def incr(self, key: str, amount: int = 1, ttl: float = 60.0) -> int:
        return self._run(lambda s: s.incr(key, amount, ttl))

    def ping(self) -> float:
        """A real round trip to the primary, bypassing the breaker; raises when it fails."""
        return self.primary.ping()
