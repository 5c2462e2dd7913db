"""The waiting-room store operation: the Lua script and its pure twin answer alike."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from django_stability.store import LocalStore, RedisStore, Store
from django_stability.store.algorithms import wait_in_line
from django_stability.store.redis import client_from_url


@pytest.fixture(params=["redis", "local"])
def any_store(request: pytest.FixtureRequest, settings: Any, key_prefix: str) -> Store:
    if request.param == "local":
        return LocalStore()
    client = client_from_url(
        settings.CACHES["default"]["LOCATION"], socket_timeout=1, connect_timeout=1
    )
    return RedisStore(client, prefix=key_prefix)


def test_admitted_in_arrival_order_as_places_free(any_store: Store) -> None:
    visitors = [f"v{i}" for i in range(6)]
    first = [any_store.wait_in_line("room", v, 2, 60, 60) for v in visitors]
    assert [r.admitted for r in first] == [True, True, False, False, False, False]
    assert [r.place for r in first] == [0, 0, 1, 2, 3, 4]
    assert (first[-1].active, first[-1].waiting) == (2, 4)
    # Polling in reverse order changes nothing: the line is kept by arrival.
    again = {v: any_store.wait_in_line("room", v, 2, 60, 60) for v in reversed(visitors[2:])}
    assert {v: r.place for v, r in again.items()} == {"v5": 4, "v4": 3, "v3": 2, "v2": 1}
    # One place frees: only the head of the line gets it, even if v3 asks first.
    assert any_store.release_lease("room", "v0")
    assert not any_store.wait_in_line("room", "v3", 2, 60, 60).admitted
    assert any_store.wait_in_line("room", "v2", 2, 60, 60).admitted
    assert any_store.wait_in_line("room", "v3", 2, 60, 60).place == 1
    # An admitted visitor keeps the place on each visit; the room counts it as a lease.
    assert any_store.wait_in_line("room", "v1", 2, 60, 60).admitted
    assert any_store.count_leases("room") == 2
    look = any_store.wait_in_line("room", "", 2, 60, 60)
    assert (look.admitted, look.place, look.active, look.waiting) == (False, 0, 2, 3)


def test_places_are_lost_after_the_timeouts(any_store: Store) -> None:
    assert any_store.wait_in_line("r2", "a", 1, 0.3, 0.3).admitted
    assert any_store.wait_in_line("r2", "b", 1, 0.3, 0.3).place == 1
    assert any_store.wait_in_line("r2", "c", 1, 0.3, 10).place == 2
    time.sleep(0.45)
    # a's pass ran out and b did not come back: c, though it arrived last, is next.
    result = any_store.wait_in_line("r2", "c", 1, 0.3, 10)
    assert result.admitted and result.waiting == 0
    # b comes back: it lost its place and joins at the back.
    assert any_store.wait_in_line("r2", "b", 1, 0.3, 10).place == 1


def test_every_key_expires(settings: Any, key_prefix: str) -> None:
    client = client_from_url(
        settings.CACHES["default"]["LOCATION"], socket_timeout=1, connect_timeout=1
    )
    store = RedisStore(client, prefix=key_prefix)
    store.wait_in_line("room", "a", 1, 20, 5)
    store.wait_in_line("room", "b", 1, 20, 5)
    raw = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    keys = list(raw.scan_iter(match=f"{key_prefix}:*"))
    assert len(keys) == 3
    for key in keys:
        assert 0 < raw.pttl(key) <= 20_000, key
    from redis.crc import key_slot

    assert len({key_slot(key) for key in keys}) == 1  # one script, one shard


def test_pure_twin_with_an_injected_clock() -> None:
    active: dict[str, float] = {}
    line: dict[str, tuple[float, float]] = {}
    assert wait_in_line(active, line, "a", 1, 10, 5, now=0.0) == (True, 0)
    assert wait_in_line(active, line, "b", 1, 10, 5, now=1.0) == (False, 1)
    assert wait_in_line(active, line, "c", 1, 10, 5, now=1.0) == (False, 2)
    assert wait_in_line(active, line, "b", 1, 10, 5, now=5.5) == (False, 1)
    # c was last seen at 1.0 and loses its place at 6.0; a's pass ends at 10.
    assert wait_in_line(active, line, "b", 1, 10, 5, now=10.0) == (True, 0)
    assert "c" not in line
    assert wait_in_line(active, line, "c", 1, 10, 5, now=10.0) == (False, 1)


def test_one_round_trip(private_redis: Any) -> None:
    from tests.test_store_redis import CountingConnection, counting_store

    store = counting_store(private_redis.url, "wr")
    store.wait_in_line("room", "a", 1, 10, 10)  # loads the script
    before = CountingConnection.sent
    store.wait_in_line("room", "b", 1, 10, 10)
    assert CountingConnection.sent - before == 1
