"""The store when its Redis is refused, hung or slow: bounded waits, then no I/O, then recovery.

Each test runs its own redis-server and breaks it; the shared one is never touched.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import override_settings

from django_stability import signals
from django_stability.store import FailsafeStore, Limit, RedisStore, get_store
from tests.redis_servers import PrivateRedis, count_connects
from tests.timing import timed

TIMEOUT = 0.2
# Generous: the promise is "no longer than the socket timeout"; the margin is for
# a shared, noisy 2-core machine, and it is still 25x below redis-py's default 5 s.
MARGIN = 0.3

pytestmark = pytest.mark.slow


def store_on(server: PrivateRedis, **extra: Any) -> FailsafeStore:
    with override_settings(
        STABILITY={
            "STORE_URL": server.url,
            "STORE_SOCKET_TIMEOUT": TIMEOUT,
            "STORE_CONNECT_TIMEOUT": TIMEOUT,
            "STORE_BREAKER_THRESHOLD": 3,
            "STORE_BREAKER_COOLDOWN": extra.pop("cooldown", 1.0),
            "STORE_KEY_PREFIX": "faults",
        }
    ):
        store = get_store()
    assert isinstance(store, FailsafeStore)
    return store


def count_store_connects(store: FailsafeStore) -> list[int]:
    assert isinstance(store.primary, RedisStore)
    return count_connects(store.primary.client.connection_pool)


@pytest.mark.parametrize("fault", ["refused", "hung", "slowed"])
def test_no_call_waits_longer_than_the_timeout_then_no_io(
    private_redis: PrivateRedis, fault: str
) -> None:
    store = store_on(private_redis)
    limit = Limit("login", limit=3, period=3600, burst=3)
    assert store.rate_limit([limit]).allowed  # healthy: scripts loaded, connection open
    if fault == "refused":
        private_redis.stop()
    elif fault == "hung":
        private_redis.hang()
    else:
        private_redis.slow(3.0)
    durations = []
    degraded = []
    for _ in range(6):
        decision, took = timed(lambda: store.rate_limit([limit]))
        durations.append(took)
        degraded.append(decision.degraded)
    assert max(durations) < TIMEOUT + MARGIN, durations
    assert all(degraded)
    assert store.breaker.state == "open"
    # Open: decisions do no network I/O at all.
    connects = count_store_connects(store)
    for _ in range(50):
        store.rate_limit([limit])
        store.acquire_lease("slots", "me", 1, 5)
        store.get("x")
    assert connects[0] == 0
    # The local store enforces the limit meanwhile (3 per hour; 2 spent above, 1 here).
    assert not store.rate_limit([limit]).allowed
    if fault == "hung":
        private_redis.resume()


def test_returns_to_redis_by_itself_within_one_cooldown(private_redis: PrivateRedis) -> None:
    transitions: list[str] = []

    def record(state: str, **kwargs: Any) -> None:
        transitions.append(state)

    signals.store_state_changed.connect(record)
    try:
        store = store_on(private_redis, cooldown=0.5)
        assert store.set("k", "before", 60)
        private_redis.hang()
        for _ in range(3):
            store.get("k")
        assert store.breaker.state == "open"
        private_redis.resume()
        time.sleep(0.6)
        assert store.get("k") == "before"  # the probe went to Redis and found its value
        assert store.breaker.state == "closed"
        assert not store.degraded
    finally:
        signals.store_state_changed.disconnect(record)
    assert transitions == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_again(private_redis: PrivateRedis) -> None:
    store = store_on(private_redis, cooldown=0.3)
    private_redis.stop()
    for _ in range(3):
        store.get("k")
    assert store.breaker.state == "open"
    time.sleep(0.35)
    _, took = timed(lambda: store.get("k"))
    assert took < TIMEOUT + MARGIN
    assert store.breaker.state == "open"
    private_redis.restart()
    time.sleep(0.35)
    store.get("k")
    assert store.breaker.state == "closed"


def test_killed_and_restarted_redis(private_redis: PrivateRedis) -> None:
    store = store_on(private_redis, cooldown=0.3)
    limit = Limit("k", 100, 60, 100)
    assert not store.rate_limit([limit]).degraded
    private_redis.kill()
    assert store.rate_limit([limit]).degraded
    private_redis.restart()
    deadline = time.monotonic() + 5
    while store.rate_limit([limit]).degraded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.rate_limit([limit]).degraded


def test_a_command_error_answers_locally_without_opening_the_breaker(
    private_redis: PrivateRedis,
) -> None:
    store = store_on(private_redis)
    # A key of another type makes Redis refuse the command (WRONGTYPE): that is
    # no outage, so the breaker must stay closed however often it happens.
    private_redis.client().lpush(store.primary.key("typed"), "x")  # type: ignore[attr-defined]
    for _ in range(10):
        assert store.incr("typed", 1, ttl=10) >= 1
    assert store.breaker.state == "closed"
    assert store.get("other") is None
