"""The protected cache when its Redis is stopped, hung or slow: never raises, never waits long.

Each test runs a redis-server of its own and breaks it; the shared one is never touched.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from django_stability.cache import CacheSpec, StampedeProtectedRedisCache
from django_stability.policies import registry
from tests.redis_servers import PrivateRedis, count_connects
from tests.timing import timed

pytestmark = pytest.mark.slow

TIMEOUT = 0.2
# Generous: the promise is "no longer than the socket timeout" (plus the compute,
# instant here); the margin is for a shared, noisy 2-core machine.
MARGIN = 0.3


@pytest.fixture
def faulty(settings: Any, private_redis: PrivateRedis) -> StampedeProtectedRedisCache:
    settings.STABILITY = {
        **settings.STABILITY,
        "CACHE_SOCKET_TIMEOUT": TIMEOUT,
        "CACHE_CONNECT_TIMEOUT": TIMEOUT,
        "CACHE_BREAKER_THRESHOLD": 3,
        "CACHE_BREAKER_COOLDOWN": 0.5,
    }
    return StampedeProtectedRedisCache(private_redis.url, {"KEY_PREFIX": uuid.uuid4().hex[:6]})


def count_cache_connects(cache: StampedeProtectedRedisCache) -> list[int]:
    """Count the socket connects the cache's pool makes from now on."""
    return count_connects(cache.client.get_client(write=True).connection_pool)


def test_the_connection_has_short_timeouts_and_no_retries(
    faulty: StampedeProtectedRedisCache,
) -> None:
    kwargs = faulty.client.get_client(write=True).connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == TIMEOUT
    assert kwargs["socket_connect_timeout"] == TIMEOUT
    assert kwargs["retry"].get_retries() == 0


@pytest.mark.parametrize("fault", ["stopped", "hung", "slowed"])
def test_get_or_set_returns_the_computed_value_and_no_call_waits_longer_than_the_timeout(
    faulty: StampedeProtectedRedisCache, private_redis: PrivateRedis, fault: str
) -> None:
    assert faulty.get_or_set("warm", lambda: "w", 60) == "w"  # healthy, scripts loaded
    if fault == "stopped":
        private_redis.stop()
    elif fault == "hung":
        private_redis.hang()
    else:
        private_redis.slow(3.0)
    durations = []
    for i in range(6):
        value, took = timed(lambda i=i: faulty.get_or_set(f"k{i}", lambda i=i: f"v{i}", 60))
        assert value == f"v{i}"
        durations.append(took)
    assert max(durations) < TIMEOUT + MARGIN, durations
    home = faulty.protector.home
    assert home.breaker.state == "open"
    # Open: protected calls do no network I/O, and values computed meanwhile are
    # served from this process.
    connects = count_cache_connects(faulty)
    calls = []
    for _ in range(20):
        assert faulty.get_or_set("k0", lambda: calls.append(1) or "again", 60) == "v0"
    assert connects[0] == 0
    assert calls == []
    if fault == "hung":
        private_redis.resume()


def test_an_outage_is_not_a_thundering_herd(
    faulty: StampedeProtectedRedisCache, private_redis: PrivateRedis
) -> None:
    private_redis.stop()
    for i in range(3):  # trip the breaker
        faulty.get_or_set(f"trip{i}", "x", 60)
    assert faulty.protector.home.breaker.state == "open"
    computes = []
    lock = threading.Lock()

    def compute() -> str:
        with lock:
            computes.append(1)
        time.sleep(0.2)
        return "from the database"

    barrier = threading.Barrier(16)
    answers = []

    def caller() -> None:
        barrier.wait()
        answers.append(faulty.get_or_set("popular", compute, 60))

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # One compute in this process, not one per request.
    assert len(computes) == 1
    assert answers == ["from the database"] * 16


def test_policy_named_keys_never_raise_while_redis_is_down(
    faulty: StampedeProtectedRedisCache, private_redis: PrivateRedis
) -> None:
    registry.register(CacheSpec(name="legacy", key_prefixes=("legacy:",)))
    private_redis.stop()
    value, took = timed(lambda: faulty.get("legacy:1", "default"))
    assert value == "default"
    assert took < TIMEOUT + MARGIN
    assert faulty.set("legacy:1", "kept locally", 60)
    assert faulty.get("legacy:1") == "kept locally"


def test_back_on_redis_by_itself(
    faulty: StampedeProtectedRedisCache, private_redis: PrivateRedis
) -> None:
    private_redis.hang()
    for i in range(3):
        faulty.get_or_set(f"trip{i}", "x", 60)
    assert faulty.protector.home.breaker.state == "open"
    private_redis.resume()
    time.sleep(0.6)  # the cooldown
    assert faulty.get_or_set("after", lambda: "on redis", 60) == "on redis"
    assert faulty.protector.home.breaker.state == "closed"
    assert private_redis.client().exists(faulty.make_key("after"))
