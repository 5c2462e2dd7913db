"""Stampede protection on the real Redis, callers in threads of this process.

The must-hold properties across OS processes are in test_cache_multiproc.py; the
Redis faults in test_cache_faults.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import caches

from django_stability import CacheWaitTimeout, cached
from django_stability.cache import CacheSpec, counters, shared_counters
from django_stability.cache.home import Keys
from django_stability.cache.redis_home import RedisHome
from django_stability.policies import registry
from django_stability.test import override_policy


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    counters.reset()


@pytest.fixture
def cache() -> Any:
    return caches["protected"]


@pytest.fixture
def key() -> str:
    return f"prot:{uuid.uuid4().hex[:10]}"


class Compute:
    """A compute that counts its calls, tracks how many run at once, and may sleep or fail."""

    def __init__(self, seconds: float = 0.0, fail: bool = False, value: Any = None) -> None:
        self.seconds = seconds
        self.fail = fail
        self.value = value
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self) -> Any:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            n = self.calls
        try:
            time.sleep(self.seconds)
            if self.fail:
                raise RuntimeError(f"compute {n} failed")
            return self.value if self.value is not None else f"v{n}"
        finally:
            with self.lock:
                self.running -= 1


def wait_until_computing(compute: Compute, timeout: float = 10.0) -> None:
    """Until ``compute`` runs, so its caller holds the lock (a thread may be slow to start)."""
    deadline = time.monotonic() + timeout
    while compute.calls == 0:
        assert time.monotonic() < deadline, "the holder never started computing"
        time.sleep(0.005)


def in_threads(n: int, call: Callable[[int], Any]) -> list[Any]:
    """Run ``call(i)`` in ``n`` threads started together; results (or exceptions) in order."""
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def policy(**fields: Any) -> CacheSpec:
    return CacheSpec(name="default", jitter=0.0, **fields)


def test_absent_key_one_compute_everyone_gets_its_value(cache: Any, key: str) -> None:
    compute = Compute(seconds=0.3)
    results = in_threads(32, lambda i: cache.get_or_set(key, compute, 60))
    assert compute.calls == 1
    assert results == ["v1"] * 32
    assert counters.snapshot()["default"]["recomputes"] == 1


def test_stale_key_one_recompute_nobody_else_waits(cache: Any, key: str) -> None:
    with override_policy(policy(grace=60)):
        compute = Compute(seconds=1.0)
        cache.get_or_set(key, lambda: "stale", 0.2)
        time.sleep(0.25)
        counters.reset()
        done_at: list[float] = [0.0] * 32

        def call(i: int) -> Any:
            value = cache.get_or_set(key, compute, 60)
            done_at[i] = time.monotonic()
            return value

        started = time.monotonic()
        results = in_threads(32, call)
    assert compute.calls == 1
    assert sorted(results) == ["stale"] * 31 + ["v1"]
    # Everyone but the recomputing caller had its answer before the 1 s compute ended
    # (a generous bound: each needs one round trip, a few milliseconds in all).
    stale_done = [t for t, r in zip(done_at, results, strict=True) if r == "stale"]
    assert max(stale_done) - started < 0.8
    counts = counters.snapshot()["default"]
    assert (counts["stale"], counts["waits"], counts["recomputes"]) == (31, 0, 1)


def test_stale_values_are_invisible_to_plain_reads(cache: Any, key: str) -> None:
    with override_policy(policy(grace=60)):
        cache.get_or_set(key, lambda: "v", 0.2)
        assert cache.get(key) == "v" and cache.has_key(key)
        time.sleep(0.25)
        assert cache.get(key, "gone") == "gone"  # as with django-redis: expired
        assert not cache.has_key(key)
        assert cache.get_many([key]) == {}
        assert cache.ttl(key) == 0
        # ... but still there for a protected caller to serve while someone recomputes.
        assert cache.get_or_set(key, lambda: "new", 60) == "new"


def test_a_long_compute_keeps_its_lock_with_the_heartbeat(cache: Any, key: str) -> None:
    # Leases long enough that a heartbeat delayed by a busy 2-core machine still
    # lands in time; the compute still outlives several of them.
    with override_policy(policy(lease=0.5, grace=60)):
        compute = Compute(seconds=1.8)  # three and a half leases
        cache.get_or_set(key, lambda: "stale", 0.1)
        time.sleep(0.15)
        holder = threading.Thread(target=lambda: cache.get_or_set(key, compute, 60))
        holder.start()
        wait_until_computing(compute)
        others = Compute(value="second compute")
        seen = set()
        while holder.is_alive():
            seen.add(cache.get_or_set(key, others, 60))
            time.sleep(0.02)
        holder.join()
    assert compute.calls == 1
    assert others.calls == 0  # the lock was renewed; nobody recomputed meanwhile
    # While it computed, callers got the stale value; once it landed (the holder's
    # thread may not have exited yet), the fresh one. Never a second compute's.
    assert "stale" in seen
    assert seen <= {"stale", "v1"}
    assert cache.get(key) == "v1"


def test_a_dead_holder_is_replaced_within_about_a_lease(cache: Any, key: str) -> None:
    lease = 0.3
    with override_policy(policy(lease=lease, wait=5)):
        home = cache.protector.home.primary
        assert isinstance(home, RedisHome)
        keys = Keys(key, None, cache.make_key(key))
        # A holder that took the lock and died: nobody renews it.
        taken = home.read(keys, token="dead", lease=lease, lock=True, xfetch=0, stale_if_error=0)
        assert taken.locked
        start = time.monotonic()
        assert cache.get_or_set(key, lambda: "recovered", 60) == "recovered"
        took = time.monotonic() - start
    # Lease plus one heartbeat (a third of a lease), with a margin for a noisy machine.
    assert took < lease + lease / 3 + 0.3


def test_a_holder_that_lost_its_lease_cannot_overwrite_a_newer_value(cache: Any, key: str) -> None:
    home = cache.protector.home.primary
    keys = Keys(key, None, cache.make_key(key))
    a = home.read(keys, token="a", lease=0.1, lock=True, xfetch=0, stale_if_error=0)
    time.sleep(0.15)  # a's lease ran out while it computed
    b = home.read(keys, token="b", lease=5, lock=True, xfetch=0, stale_if_error=0)
    assert a.locked and b.locked and b.now > a.now

    def land(token: str, value: str, started: float) -> bool:
        return bool(
            home.land(
                keys,
                token=token,
                value=value,
                soft=60,
                hard=60,
                compute_time=0.1,
                started=started,
            )
        )

    assert land("b", "newer", b.now)
    assert not land("a", "older", a.now)
    assert cache.get(key) == "newer"
    # The other way round, the older value lands first and the newer replaces it.
    cache.delete(key)
    assert land("a", "older", a.now)
    assert land("b", "newer", b.now)
    assert cache.get(key) == "newer"


def test_a_failing_recompute_serves_stale_within_the_window_then_surfaces(
    cache: Any, key: str, shared_redis: Any
) -> None:
    window = 1.0
    # A grace longer than the window keeps the stale value in Redis past the window:
    # the error surfaces because the window is over, not because the value is gone.
    with override_policy(policy(grace=3, stale_if_error=window, error_backoff=0.2)):
        cache.get_or_set(key, lambda: "stale", 0.2)
        soft_expiry = time.monotonic() + 0.2
        time.sleep(0.25)
        failing = Compute(fail=True)
        answers = []
        while time.monotonic() < soft_expiry + window - 0.2:  # inside the window
            answers.append(cache.get_or_set(key, failing, 60))
            time.sleep(0.02)
        assert set(answers) == {"stale"}
        # Failed recomputes back off (0.2 s, then 0.4 s ...) instead of running per call.
        assert 1 <= failing.calls <= 3 < len(answers)
        time.sleep(max(0.0, soft_expiry + window + 0.15 - time.monotonic()))
        assert shared_redis.exists(cache.make_key(key))  # the stale value is still there
        with pytest.raises(RuntimeError, match="failed"):
            cache.get_or_set(key, failing, 60)
    assert counters.snapshot()["default"]["errors"] == failing.calls


def test_absent_key_failing_compute_every_caller_raises_one_compute_at_a_time(
    cache: Any, key: str
) -> None:
    failing = Compute(seconds=0.05, fail=True)
    results = in_threads(8, lambda i: cache.get_or_set(key, failing, 60))
    assert all(isinstance(r, RuntimeError) for r in results)
    assert failing.most_at_once == 1


def test_a_waiter_that_times_out_computes_or_raises_per_policy(cache: Any, key: str) -> None:
    slow = Compute(seconds=0.6)
    holder = threading.Thread(target=lambda: cache.get_or_set(key, slow, 60))
    with override_policy(policy(wait=0.1, on_wait_timeout="raise")):
        holder.start()
        wait_until_computing(slow)
        waiter = Compute(value="waiter's")
        with pytest.raises(CacheWaitTimeout):
            cache.get_or_set(key, waiter, 60)
        assert waiter.calls == 0
    with override_policy(policy(wait=0.1, on_wait_timeout="compute")):
        assert cache.get_or_set(key, waiter, 60) == "waiter's"
        assert waiter.calls == 1
    holder.join()
    # The waiter's compute started after the holder's: its value is the newer, and the
    # holder's, landing later, does not replace it.
    assert cache.get(key) == "waiter's"


def test_an_interrupted_compute_frees_its_lock(cache: Any, key: str) -> None:
    class Stop(BaseException):
        pass

    def interrupted() -> Any:
        raise Stop

    with override_policy(policy(lease=30)), pytest.raises(Stop):
        cache.get_or_set(key, interrupted, 60)
    start = time.monotonic()
    assert cache.get_or_set(key, lambda: "next", 60) == "next"
    assert time.monotonic() - start < 1  # not the 30 s lease


def test_xfetch_refreshes_before_expiry_through_the_lock(cache: Any, key: str) -> None:
    with override_policy(policy(beta=20.0)):
        compute = Compute(seconds=0.1)
        cache.get_or_set(key, compute, 1.0)
        first_landed = time.monotonic()
        stop = first_landed + 0.6  # well before the 1 s expiry

        def hammer(i: int) -> list[Any]:
            seen = []
            while time.monotonic() < stop:
                seen.append(cache.get_or_set(key, compute, 1.0))
                time.sleep(0.01)
            return seen

        results = in_threads(8, hammer)
    assert compute.calls >= 2  # refreshed early, the value never expired
    assert compute.most_at_once == 1  # ... and never twice at once
    assert not any(isinstance(r, Exception) for r in results)
    assert counters.snapshot()["default"]["stale"] == 0


def test_ttl_jitter_spreads_expiries(cache: Any, key: str) -> None:
    ttls = {cache.pttl(f"{key}:{i}") for i in range(30) if cache.get_or_set(f"{key}:{i}", i, 100)}
    ttls = {cache.pttl(f"{key}:{i}") for i in range(30)}
    assert len(ttls) > 20
    assert all(89_000 <= t <= 100_000 for t in ttls)


def test_background_refresh_serves_stale_at_once(cache: Any, key: str) -> None:
    with override_policy(policy(refresh="thread")):
        cache.get_or_set(key, lambda: "stale", 0.1)
        time.sleep(0.15)
        compute = Compute(seconds=0.3, value="fresh")
        start = time.monotonic()
        assert cache.get_or_set(key, compute, 60) == "stale"
        assert time.monotonic() - start < 0.2
        deadline = time.monotonic() + 5
        while cache.get(key) != "fresh" and time.monotonic() < deadline:
            time.sleep(0.02)
    assert cache.get(key) == "fresh"
    assert compute.calls == 1


def test_policies_by_name_and_by_key_prefix(cache: Any, key: str) -> None:
    registry.register(CacheSpec(name="short", ttl=0.2, jitter=0.0))
    registry.register(CacheSpec(name="products", key_prefixes=(f"{key}:p:",), ttl=50, jitter=0))
    cache.get_or_set(f"{key}:a", "x", 100, policy="short")
    assert cache.pttl(f"{key}:a") <= 200  # the policy's TTL wins over the code's timeout
    cache.get_or_set(f"{key}:p:1", "x", 100)
    assert 49_000 < cache.pttl(f"{key}:p:1") <= 50_000
    cache.get_or_set(f"{key}:other", "x", 100)
    assert 89_000 < cache.pttl(f"{key}:other") <= 100_000
    assert counters.snapshot()["products"]["recomputes"] == 1


def test_get_and_set_of_keys_a_policy_names_are_protected(cache: Any, key: str) -> None:
    registry.register(CacheSpec(name="legacy", key_prefixes=(f"{key}:",), jitter=0, wait=5))
    item = f"{key}:1"
    computed = Compute(seconds=0.3)

    def legacy_view(i: int) -> Any:
        # The classic pattern: get, compute on a miss, set.
        value = cache.get(item)
        if value is None:
            value = computed()
            cache.set(item, value, 60)
        return value

    results = in_threads(16, legacy_view)
    assert computed.calls == 1
    assert results == ["v1"] * 16
    assert cache.ttl(item) in (59, 60)


def test_counters_are_shared_through_the_store(cache: Any, key: str) -> None:
    cache.get_or_set(key, "v", 60, policy="counted")
    cache.get_or_set(key, "v", 60, policy="counted")
    counters.flush()
    assert shared_counters("counted")["recomputes"] == 1
    assert shared_counters("counted")["hits"] == 1


def test_cached_decorator(key: str) -> None:
    calls = []

    @cached(f"{key}-menu", ttl=60, cache="protected")
    def menu(section: str, page: int = 1) -> dict[str, Any]:
        calls.append((section, page))
        return {"section": section, "page": page}

    assert menu("food") == {"section": "food", "page": 1}
    assert menu("food") == {"section": "food", "page": 1}
    assert menu("food", page=2)["page"] == 2
    assert calls == [("food", 1), ("food", 2)]
    assert menu.cache_key("food").startswith(f"{key}-menu:")  # type: ignore[attr-defined]
    menu.invalidate("food")  # type: ignore[attr-defined]
    menu("food")
    assert len(calls) == 3
    assert registry.get(CacheSpec, f"{key}-menu").ttl == 60  # type: ignore[union-attr]


def test_cached_on_a_plain_cache_is_protected_through_add(key: str) -> None:
    compute = Compute(seconds=0.2)

    @cached(f"{key}-plain", ttl=60, cache="default")
    def slow() -> Any:
        return compute()

    results = in_threads(8, lambda i: slow())
    assert compute.calls == 1
    assert results == ["v1"] * 8


async def test_aget_or_set_one_compute_for_many_coroutines(cache: Any, key: str) -> None:
    calls = []

    async def compute() -> str:
        calls.append(1)
        await asyncio.sleep(0.2)
        return "async value"

    results = await asyncio.gather(*(cache.aget_or_set(key, compute, 60) for _ in range(20)))
    assert results == ["async value"] * 20
    assert len(calls) == 1
    assert await cache.aget_or_set(key, lambda: "sync default", 60) == "async value"


async def test_async_cached(key: str) -> None:
    calls = []

    @cached(f"{key}-async", ttl=60, cache="protected")
    async def price(item: int) -> int:
        calls.append(item)
        await asyncio.sleep(0.05)
        return item * 10

    assert await asyncio.gather(price(1), price(1), price(2)) == [10, 10, 20]
    assert sorted(calls) == [1, 2]


def test_add_and_zero_timeouts_on_policy_keys_answer_as_django_redis(cache: Any, key: str) -> None:
    registry.register(CacheSpec(name="named", key_prefixes=(f"{key}:",), jitter=0))
    item = f"{key}:1"
    assert cache.add(item, "first", 0.2)
    assert not cache.add(item, "second", 60)
    time.sleep(0.25)  # expired (though kept for the grace period)
    assert cache.add(item, "third", 60)  # an expired value does not block add()
    assert cache.get(item) == "third"
    assert cache.set(item, "gone", 0) is True  # django-redis: True when it deleted a value
    assert cache.get(item) is None  # a timeout of 0 drops the value
    assert cache.set(item, "gone", 0) is False
