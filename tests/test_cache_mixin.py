"""The same protection on other Django backends, through the mixin and the backend's ``add``."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from django.core.cache import caches

from django_stability.cache import CacheSpec, StampedeProtectionMixin
from django_stability.cache.backend_home import BackendHome
from django_stability.policies import registry
from django_stability.test import override_policy

ALIASES = ["protected-locmem", "protected-django-redis"]


@pytest.fixture(params=ALIASES)
def cache(request: pytest.FixtureRequest) -> Any:
    backend = caches[request.param]
    assert isinstance(backend, StampedeProtectionMixin)
    return backend


@pytest.fixture
def key() -> str:
    return f"mixin:{uuid.uuid4().hex[:10]}"


def in_threads(n: int, call: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def counting(seconds: float, value: str) -> tuple[list[int], Any]:
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        time.sleep(seconds)
        return value

    return calls, compute


def test_absent_key_computed_once(cache: Any, key: str) -> None:
    calls, compute = counting(0.3, "v")
    assert in_threads(16, lambda i: cache.get_or_set(key, compute, 60)) == ["v"] * 16
    assert len(calls) == 1


def test_stale_key_one_recompute_the_others_get_stale(cache: Any, key: str) -> None:
    with override_policy(CacheSpec(name="default", jitter=0.0)):
        cache.get_or_set(key, "stale", 0.1)
        time.sleep(0.15)
        calls, compute = counting(0.5, "new")
        results = in_threads(16, lambda i: cache.get_or_set(key, compute, 60))
    assert len(calls) == 1
    assert sorted(results) == ["new"] + ["stale"] * 15


def test_envelopes_are_invisible_and_expire_on_time(cache: Any, key: str) -> None:
    cache.get_or_set(key, {"a": 1}, 0.2)
    assert cache.get(key) == {"a": 1}
    assert cache.has_key(key)
    assert cache.get_many([key, key + "x"]) == {key: {"a": 1}}
    time.sleep(0.25)
    assert cache.get(key, "gone") == "gone"
    assert not cache.has_key(key)
    assert cache.get_many([key]) == {}
    cache.set(key + "plain", [1], 60)  # plain values stay plain
    assert cache.get(key + "plain") == [1]


def test_policy_named_keys_protect_get_then_set(cache: Any, key: str) -> None:
    registry.register(CacheSpec(name="legacy", key_prefixes=(f"{key}:",), wait=5))
    calls, compute = counting(0.3, "v")

    def view(i: int) -> Any:
        value = cache.get(f"{key}:1")
        if value is None:
            value = compute()
            cache.set(f"{key}:1", value, 60)
        return value

    assert in_threads(8, view) == ["v"] * 8
    assert len(calls) == 1


def test_leases_are_whole_seconds_on_backends_that_keep_seconds(cache: Any, key: str) -> None:
    home = cache.protector.home.primary
    assert isinstance(home, BackendHome)
    keys = cache.protector.keys(key, None)
    assert home.read(keys, token="a", lease=0.2, lock=True, xfetch=0, stale_if_error=0).locked
    time.sleep(0.3)  # longer than the lease asked for, shorter than a second
    assert not home.read(keys, token="b", lease=0.2, lock=True, xfetch=0, stale_if_error=0).locked
    assert home.renew(keys, token="a", lease=1)
    home.release(keys, token="a", backoff=None)
    assert home.read(keys, token="b", lease=1, lock=True, xfetch=0, stale_if_error=0).locked


def test_a_value_that_lands_between_the_read_and_the_lock_is_not_computed_again(
    cache: Any, key: str
) -> None:
    # The read and the lock are two steps on these backends. A holder that
    # lands its value and gives the lock back between them (a thread paused
    # on a busy machine) must not leave the lock to a second compute.
    home = cache.protector.home.primary
    assert isinstance(home, BackendHome)
    keys = cache.protector.keys(key, None)
    assert home.read(keys, token="holder", lease=5, lock=True, xfetch=0, stale_if_error=0).locked

    class LandsBeforeTheLock:
        def __init__(self, raw: Any) -> None:
            self.raw = raw

        def __getattr__(self, name: str) -> Any:
            return getattr(self.raw, name)

        def raw_add(self, *args: Any) -> bool:
            home.cache = self.raw  # once
            home.land(
                keys, token="holder", value="v", soft=60, hard=120, compute_time=0.1, started=None
            )
            return bool(self.raw.raw_add(*args))

    home.cache = LandsBeforeTheLock(home.cache)
    try:
        late = home.read(keys, token="late", lease=5, lock=True, xfetch=0, stale_if_error=0)
    finally:
        home.cache = getattr(home.cache, "raw", home.cache)
    assert late.state == "fresh" and late.value == "v" and not late.locked
    # The lock it took for a moment is given back.
    assert home.cache.raw_get(home.lock_key(keys), None, keys.version) is None
    assert cache.get_or_set(key, lambda: "computed again", 60) == "v"


async def test_aget_or_set(cache: Any, key: str) -> None:
    import asyncio

    calls = []

    async def compute() -> str:
        calls.append(1)
        await asyncio.sleep(0.1)
        return "a"

    assert (
        await asyncio.gather(*(cache.aget_or_set(key, compute, 60) for _ in range(8))) == ["a"] * 8
    )
    assert len(calls) == 1
