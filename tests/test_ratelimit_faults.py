"""Rate limits while the store's Redis is refused, hung or slowed, and after it is back.

Each test runs a redis-server of its own and breaks it; requests go through the
real middleware stack with Django's test client.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec
from django_stability.store import FailsafeStore, get_store
from tests.redis_servers import PrivateRedis

pytestmark = pytest.mark.slow

TIMEOUT = 0.2
# The promise is "no request waits longer than the store's timeout"; the margin
# is for a shared, noisy 2-core machine (and still 25x under redis-py's 5 s).
MARGIN = 0.3


@pytest.fixture
def on_private_redis(settings: Any, private_redis: PrivateRedis) -> PrivateRedis:
    settings.STABILITY = {
        **settings.STABILITY,
        "STORE_URL": private_redis.url,
        "STORE_SOCKET_TIMEOUT": TIMEOUT,
        "STORE_CONNECT_TIMEOUT": TIMEOUT,
        "STORE_BREAKER_THRESHOLD": 3,
        "STORE_BREAKER_COOLDOWN": 0.5,
    }
    registry.register(RateLimitSpec(name="open", path_prefixes=("/rl/plain/",), rate="4/h"))
    registry.register(
        RateLimitSpec(
            name="closed",
            path_prefixes=("/rl/other/",),
            rate="100/h",
            on_store_failure="closed",
        )
    )
    return private_redis


def timed_get(client: Any, path: str) -> tuple[int, float]:
    start = time.monotonic()
    status = client.get(path, HTTP_ACCEPT="application/json").status_code
    return status, time.monotonic() - start


@pytest.mark.parametrize("fault", ["refused", "hung", "slowed"])
def test_fail_open_and_closed_bounded_waits_per_process_limits_and_recovery(
    client: Any, on_private_redis: PrivateRedis, fault: str
) -> None:
    server = on_private_redis
    assert timed_get(client, "/rl/plain/")[0] == 200  # healthy: one of 4 spent in Redis
    assert timed_get(client, "/rl/other/")[0] == 200
    if fault == "refused":
        server.stop()
    elif fault == "hung":
        server.hang()
    else:
        server.slow(2.5)

    closed = [timed_get(client, "/rl/other/") for _ in range(4)]
    opened = [timed_get(client, "/rl/plain/") for _ in range(6)]
    waits = [took for _, took in closed + opened]
    assert max(waits) < TIMEOUT + MARGIN, waits
    assert {status for status, _ in closed} == {503}  # fail closed: refused, not a 500
    # Fail open: this process's own store enforces the limit meanwhile (4 per hour here).
    assert [status for status, _ in opened] == [200] * 4 + [429] * 2
    store = get_store()
    assert isinstance(store, FailsafeStore) and store.degraded

    if fault == "refused":
        server.restart()
    elif fault == "hung":
        server.resume()
    deadline = time.monotonic() + 10
    while store.degraded and time.monotonic() < deadline:
        client.get("/rl/other/")
        time.sleep(0.05)
    assert not store.degraded, "the store must return to Redis by itself"
    # The shared limit resumes: counted in Redis again, where 1 of 4 was spent before
    # (or none, if the restart lost the data).
    statuses = [client.get("/rl/plain/").status_code for _ in range(5)]
    assert statuses in ([200] * 3 + [429] * 2, [200] * 4 + [429])
    keys = {key.decode() for key in server.client().keys("*open:*")}
    assert any(key.endswith("open:127.0.0.1") for key in keys), keys
