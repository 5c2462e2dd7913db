"""The Redis store against a real Redis: same answers as the local store, one round trip each."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from django_stability.store import (
    FailsafeStore,
    Limit,
    LocalStore,
    RedisStore,
    Store,
    get_store,
)
from django_stability.store.redis import client_from_url
from tests.redis_servers import PrivateRedis


class CountingConnection(redis.Connection):
    """Counts the commands sent and the connections opened (one round trip each)."""

    sent = 0
    connects = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)

    def connect(self) -> None:
        CountingConnection.connects += 1
        super().connect()


def counting_store(url: str, prefix: str) -> RedisStore:
    pool = redis.ConnectionPool.from_url(
        url, connection_class=CountingConnection, socket_timeout=1, socket_connect_timeout=1
    )
    return RedisStore(redis.Redis(connection_pool=pool), prefix=prefix)


@pytest.fixture
def redis_store(settings: Any, key_prefix: str) -> RedisStore:
    client = client_from_url(
        settings.CACHES["default"]["LOCATION"], socket_timeout=1, connect_timeout=1
    )
    return RedisStore(client, prefix=key_prefix)


@pytest.fixture(params=["redis", "local"])
def any_store(request: pytest.FixtureRequest, redis_store: RedisStore) -> Store:
    return redis_store if request.param == "redis" else LocalStore()


def test_get_store_uses_the_django_redis_cache_with_its_own_timeouts() -> None:
    store = get_store()
    assert isinstance(store, FailsafeStore)
    assert isinstance(store.primary, RedisStore)
    kwargs = store.primary.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.2
    assert kwargs["socket_connect_timeout"] == 0.2
    assert kwargs["retry"].get_retries() == 0


def test_rate_limit_answers_alike_in_both_homes(any_store: Store) -> None:
    limit = Limit("parity", limit=5, period=3600, burst=5)
    decisions = [any_store.rate_limit([limit]) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.results[0].remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    assert decisions[-1].retry_after == pytest.approx(720, abs=0.5)
    assert decisions[-1].results[0].reset_after == pytest.approx(3600, abs=0.5)


def test_several_limits_all_or_nothing_in_both_homes(any_store: Store) -> None:
    tight = Limit("tight", limit=1, period=60, burst=1)
    loose = Limit("loose", limit=50, period=60, burst=50)
    shadow = Limit("shadow", limit=1, period=60, burst=1, enforce=False)
    assert any_store.rate_limit([tight, loose, shadow]).allowed
    refused = any_store.rate_limit([tight, loose, shadow])
    assert not refused.allowed
    assert refused.results[1].allowed  # loose alone would admit...
    assert any_store.rate_limit([loose]).results[0].remaining == 48  # ...but was not charged


def test_leases_in_both_homes(any_store: Store) -> None:
    assert any_store.acquire_lease("slots", "a", 2, ttl=30).acquired
    assert any_store.acquire_lease("slots", "b", 2, ttl=30).acquired
    refused = any_store.acquire_lease("slots", "c", 2, ttl=30)
    assert not refused.acquired and refused.holders == 2
    assert 0 < refused.retry_after <= 30
    assert any_store.count_leases("slots") == 2
    assert any_store.renew_lease("slots", "a", 30)
    assert any_store.release_lease("slots", "a")
    assert not any_store.release_lease("slots", "a")
    assert not any_store.renew_lease("slots", "a", 30)
    assert any_store.acquire_lease("slots", "c", 2, ttl=30).acquired


def test_values_in_both_homes(any_store: Store) -> None:
    assert any_store.get("v") is None
    assert any_store.set("v", "one", ttl=30)
    assert not any_store.set("v", "two", ttl=30, only_if_absent=True)
    assert any_store.compare_and_set("v", "one", "three", ttl=30)
    assert not any_store.compare_and_set("v", "one", "four", ttl=30)
    assert not any_store.compare_and_set("v", None, "five", ttl=30)
    assert any_store.get("v") == "three"
    assert any_store.incr("n", 5, ttl=30) == 5
    assert any_store.incr("n", -2, ttl=30) == 3
    assert any_store.delete("v")
    assert any_store.get("v") is None


def test_leases_expire_on_the_server_clock(redis_store: RedisStore) -> None:
    import time

    assert redis_store.acquire_lease("short", "a", 1, ttl=0.2).acquired
    assert not redis_store.acquire_lease("short", "b", 1, ttl=0.2).acquired
    time.sleep(0.3)
    assert redis_store.acquire_lease("short", "b", 1, ttl=0.2).acquired


def test_every_key_written_expires(redis_store: RedisStore, shared_redis: redis.Redis) -> None:
    redis_store.rate_limit([Limit("a", 5, 60, 5), Limit("b", 1, 3600, 1)])
    redis_store.acquire_lease("lease", "h", 3, ttl=20)
    redis_store.set("value", "x", ttl=10)
    redis_store.compare_and_set("cas", None, "y", ttl=10)
    redis_store.incr("counter", 1, ttl=10)
    keys = list(shared_redis.scan_iter(match=f"{redis_store.prefix}:*"))
    assert len(keys) == 6
    for key in keys:
        assert shared_redis.pttl(key) > 0, key


def test_keys_carry_hash_tags_for_cluster(redis_store: RedisStore) -> None:
    from redis.crc import key_slot

    rate_keys = [redis_store.rate_key(name).encode() for name in ("ip:1", "user:2", "global")]
    assert len({key_slot(key) for key in rate_keys}) == 1
    single = [redis_store.key(name).encode() for name in ("lease:a", "lease:b", "lease:c", "x")]
    assert len({key_slot(key) for key in single}) > 1


def test_one_round_trip_per_decision(private_redis: PrivateRedis) -> None:
    store = counting_store(private_redis.url, "rt")
    limits = [Limit(f"k{i}", 10, 60, 10) for i in range(3)]
    store.rate_limit(limits)  # first use loads the scripts (NOSCRIPT, then LOAD)
    store.acquire_lease("l", "h", 2, 10)
    operations = [
        lambda: store.rate_limit(limits),
        lambda: store.acquire_lease("l", "h", 2, 10),
        lambda: store.renew_lease("l", "h", 10),
        lambda: store.release_lease("l", "h"),
        lambda: store.count_leases("l"),
        lambda: store.get("v"),
        lambda: store.set("v", "1", 10),
        lambda: store.compare_and_set("v", "1", "2", 10),
        lambda: store.incr("n", 1, 10),
        lambda: store.delete("v"),
    ]
    for operation in operations:
        # each script is loaded once; measure the second call
        operation()
        before = CountingConnection.sent
        operation()
        assert CountingConnection.sent - before == 1


def test_scripts_are_reloaded_after_script_flush(private_redis: PrivateRedis) -> None:
    store = counting_store(private_redis.url, "flush")
    limit = Limit("k", 10, 60, 10)
    assert store.rate_limit([limit]).allowed
    private_redis.client().script_flush()
    assert store.rate_limit([limit]).results[0].remaining == 8


def test_limited_keys_are_recorded_bounded_and_reset_in_both_homes(any_store: Store) -> None:
    any_store.tracked_keys = 3
    limits = [Limit(f"pol:k{i}", 1, 3600, 1, track="pol") for i in range(5)]
    for limit in limits:
        assert any_store.rate_limit([limit]).allowed
    assert any_store.limited_keys("pol") == []
    for i, limit in enumerate(limits):
        assert not any_store.rate_limit([limit]).allowed
        assert len(any_store.limited_keys("pol")) == min(i + 1, 3)  # bounded
    limited = any_store.limited_keys("pol")
    assert [key for key, _ in limited] == ["pol:k2", "pol:k3", "pol:k4"]
    # Redis keeps the retry time in whole milliseconds, rounded up (never
    # earlier than the truth): within a millisecond of the first call, 1 ms more.
    assert all(3590 < left <= 3600.001 for _, left in limited), limited
    assert any_store.reset_limits(["pol:k3", "pol:nothing"], "pol") == 1
    assert [key for key, _ in any_store.limited_keys("pol")] == ["pol:k2", "pol:k4"]
    assert any_store.rate_limit([limits[3]]).allowed  # its counter is gone


def test_limited_keys_expire_with_their_retry_time(redis_store: RedisStore) -> None:
    import time

    limit = Limit("pol:fast", 10, 1, 1, track="fast")
    redis_store.rate_limit([limit])
    assert not redis_store.rate_limit([limit]).allowed
    assert [key for key, _ in redis_store.limited_keys("fast")] == ["pol:fast"]
    time.sleep(0.15)
    assert redis_store.limited_keys("fast") == []
