"""The pure decisions of the store, without Redis and without sleeping."""

from __future__ import annotations

import random

from django_stability.store import Limit, LocalStore, algorithms


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_gcra_admits_the_burst_then_one_per_interval() -> None:
    limit = Limit("k", limit=10, period=1.0, burst=3)
    tat = None
    now = 0.0
    admitted = []
    for _ in range(5):
        result, new_tat = algorithms.gcra(tat, now, limit)
        admitted.append(result.allowed)
        if result.allowed:
            tat = new_tat
    assert admitted == [True, True, True, False, False]
    result, _ = algorithms.gcra(tat, now, limit)
    assert abs(result.retry_after - 0.1) < 1e-9
    result, _ = algorithms.gcra(tat, now + 0.1, limit)
    assert result.allowed


def test_no_window_edge_burst_in_any_one_second_span() -> None:
    """10/s with burst 1, hammered every millisecond for 3 s: at most 10 + 1 in any second."""
    store = LocalStore(clock=(clock := Clock(0.0)))
    limit = Limit("edge", limit=10, period=1.0, burst=1)
    times = []
    for step in range(3000):
        clock.now = step / 1000
        if store.rate_limit([limit]).allowed:
            times.append(clock.now)
    for start in times:
        in_span = [t for t in times if start <= t < start + 1.0]
        assert len(in_span) <= 11


def test_remaining_counts_down_and_reset_after_grows() -> None:
    store = LocalStore(clock=Clock())
    limit = Limit("r", limit=5, period=3600, burst=5)
    remaining = [store.rate_limit([limit]).results[0].remaining for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    refused = store.rate_limit([limit])
    assert not refused.allowed
    assert refused.retry_after == 720.0
    assert refused.results[0].reset_after == 3600.0


def test_a_refusing_limit_charges_no_other_limit() -> None:
    store = LocalStore(clock=Clock())
    tight = Limit("tight", limit=1, period=60, burst=1)
    loose = Limit("loose", limit=100, period=60, burst=100)
    assert store.rate_limit([tight, loose]).allowed
    decision = store.rate_limit([tight, loose])
    assert not decision.allowed
    # The refused request did not spend from the loose limit.
    assert store.rate_limit([loose]).results[0].remaining == 98


def test_shadow_limit_never_blocks_and_is_not_charged_when_over() -> None:
    store = LocalStore(clock=Clock())
    shadow = Limit("shadow", limit=1, period=60, burst=1, enforce=False)
    other = Limit("other", limit=100, period=60, burst=100)
    results = [store.rate_limit([shadow, other]) for _ in range(3)]
    assert all(decision.allowed for decision in results)
    assert [d.results[0].allowed for d in results] == [True, False, False]


def test_cost_counts_as_several_requests() -> None:
    store = LocalStore(clock=Clock())
    limit = Limit("c", limit=10, period=60, burst=10, cost=4)
    assert [store.rate_limit([limit]).allowed for _ in range(3)] == [True, True, False]


def test_cost_above_burst_is_always_refused() -> None:
    store = LocalStore(clock=Clock())
    decision = store.rate_limit([Limit("x", limit=10, period=60, burst=2, cost=3)])
    assert not decision.allowed


def test_leases_expire_and_are_counted() -> None:
    clock = Clock()
    store = LocalStore(clock=clock)
    assert store.acquire_lease("l", "a", limit=2, ttl=5).acquired
    assert store.acquire_lease("l", "b", limit=2, ttl=10).acquired
    refused = store.acquire_lease("l", "c", limit=2, ttl=5)
    assert not refused.acquired
    assert refused.retry_after == 5.0
    assert store.acquire_lease("l", "a", limit=2, ttl=5).acquired  # renewal by a holder
    clock.now += 6
    assert store.count_leases("l") == 1
    assert store.acquire_lease("l", "c", limit=2, ttl=5).acquired
    assert store.release_lease("l", "c")
    assert not store.release_lease("l", "c")
    assert not store.renew_lease("l", "a", 5)  # expired meanwhile
    assert store.renew_lease("l", "b", 5)


def test_values_counters_and_compare_and_set() -> None:
    clock = Clock()
    store = LocalStore(clock=clock)
    assert store.set("v", "1", ttl=1)
    assert not store.set("v", "2", ttl=1, only_if_absent=True)
    assert store.get("v") == "1"
    assert not store.compare_and_set("v", "x", "3", ttl=1)
    assert store.compare_and_set("v", "1", "3", ttl=1)
    assert store.compare_and_set("new", None, "n", ttl=1)
    assert store.incr("n", 2, ttl=1) == 2
    assert store.incr("n", 3, ttl=1) == 5
    clock.now += 1.5
    assert store.get("v") is None
    assert store.incr("n", 1, ttl=1) == 1
    assert store.delete("n")
    assert not store.delete("n")


def test_local_store_memory_is_bounded_under_a_flood_of_distinct_keys() -> None:
    store = LocalStore(max_keys=1000, clock=Clock())
    limit_for = lambda i: Limit(f"client:{i}", limit=5, period=60, burst=5)  # noqa: E731
    for i in range(50_000):
        store.rate_limit([limit_for(i)])
        if i % 7 == 0:
            store.acquire_lease(f"lease:{i}", "h", 1, 60)
    assert len(store) <= 1000
    # The most recent clients are still remembered.
    assert store.rate_limit([limit_for(49_999)]).results[0].remaining == 3


def test_local_store_is_thread_safe() -> None:
    import threading

    store = LocalStore()
    limit = Limit("shared", limit=500, period=3600, burst=500)
    admitted = []

    def worker() -> None:
        count = sum(store.rate_limit([limit]).allowed for _ in range(200))
        admitted.append(count)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 500


def test_acquire_matches_between_random_sequences() -> None:
    """The lease rule never grants more than the limit, whatever the order."""
    rng = random.Random(7)
    holders: dict[str, float] = {}
    now = 0.0
    for _ in range(2000):
        now += rng.random()
        holder = f"h{rng.randrange(10)}"
        algorithms.acquire(holders, holder, 3, ttl=rng.uniform(0.5, 4), now=now)
        assert sum(1 for expiry in holders.values() if expiry > now) <= 3
