"""Circuit breakers side by side: closed-state overhead per call, and 8 threads on a healthy dependency.

Compared in one run: this package's breaker (process and cluster scope),
pybreaker (in-memory and Redis storage), circuitbreaker, and no breaker at
all. Goals (issue 5): process scope at most 300 ns of overhead per call; 8
threads calling a healthy 5 ms dependency reach at least 0.95 of the
unprotected throughput; a cluster breaker makes no store round trip per call
in steady state.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.harness import line, median_seconds, per_call_seconds

THREADS = 8
DEPENDENCY_SECONDS = 0.005
THROUGHPUT_SECONDS = 2.0


def nothing() -> None:
    return None


def healthy() -> None:
    time.sleep(DEPENDENCY_SECONDS)


def overhead_ns(wrapped: Callable[[], Any], *, slow: bool = False) -> float:
    """Extra time of one call through ``wrapped`` over a bare call (best of 5 blocks)."""
    best = []
    for _ in range(5):
        if slow:
            bare = median_seconds(nothing, rounds=500, warmup=50)
            guarded = median_seconds(wrapped, rounds=500, warmup=50)
        else:
            bare = per_call_seconds(nothing, number=200_000)
            guarded = per_call_seconds(wrapped, number=200_000)
        best.append(guarded - bare)
    return min(best) * 1e9


def throughput(call: Callable[[], Any]) -> float:
    """Calls per second of ``THREADS`` threads calling ``call`` for ``THROUGHPUT_SECONDS``."""
    stop_at = time.monotonic() + THROUGHPUT_SECONDS
    counts = [0] * THREADS

    def worker(index: int) -> None:
        done = 0
        while time.monotonic() < stop_at:
            call()
            done += 1
        counts[index] = done

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


class CountingStore:
    """Counts store operations (each is one round trip) made while it is on."""

    NAMES = ("get", "set", "compare_and_set", "acquire_lease", "incr", "release_lease")

    def __init__(self, store: Any) -> None:
        self.store = store
        self.count = 0

    def __enter__(self) -> CountingStore:
        for name in self.NAMES:
            original = getattr(self.store, name)

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.count += 1
                return _original(*args, **kwargs)

            setattr(self.store, name, counted)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in self.NAMES:
            delattr(self.store, name)


def main() -> None:
    import circuitbreaker
    import pybreaker
    import redis
    from django.conf import settings

    from django_stability import circuit_breaker
    from django_stability.store import FailsafeStore, get_store

    run = uuid.uuid4().hex[:6]
    store = get_store()
    assert isinstance(store, FailsafeStore), "the benchmark needs the Redis store"
    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    namespace = f"stabbench-{run}"

    def make(fn: Callable[[], Any]) -> dict[str, Callable[[], Any]]:
        return {
            "django-stability, process scope": circuit_breaker(
                f"bench-process-{run}-{fn.__name__}"
            )(fn),
            "django-stability, cluster scope": circuit_breaker(
                f"bench-cluster-{run}-{fn.__name__}", scope="cluster"
            )(fn),
            "pybreaker, memory storage": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)(fn),
            "pybreaker, Redis storage": pybreaker.CircuitBreaker(
                fail_max=5,
                reset_timeout=60,
                state_storage=pybreaker.CircuitRedisStorage(
                    pybreaker.STATE_CLOSED, client, namespace=f"{namespace}-{fn.__name__}"
                ),
            )(fn),
            "circuitbreaker": circuitbreaker.CircuitBreaker(
                failure_threshold=5, recovery_timeout=60, name=f"bench-{fn.__name__}"
            )(fn),
        }

    print("circuit breakers: closed-state overhead per call (best of 5 blocks, one thread):")
    bare = per_call_seconds(nothing, number=200_000)
    line("a bare call of an empty function", f"{bare * 1e9:8.0f} ns")
    overheads = {}
    for name, wrapped in make(nothing).items():
        slow = "Redis" in name
        overheads[name] = overhead_ns(wrapped, slow=slow)
        line(name, f"{overheads[name]:8.0f} ns overhead")
    process = overheads["django-stability, process scope"]
    line(
        "goal: process scope <= 300 ns",
        f"{'met' if process <= 300 else 'MISSED'} ({process:.0f} ns)",
    )

    cluster = circuit_breaker(f"bench-steady-{run}", scope="cluster")(nothing)
    cluster()
    with CountingStore(store) as counting:
        started = time.monotonic()
        calls = 0
        while time.monotonic() - started < 2.0:
            cluster()
            calls += 1
    seconds = time.monotonic() - started
    line(
        "cluster scope: store round trips in steady state",
        f"{counting.count} in {calls:,} calls over {seconds:.1f} s "
        f"({counting.count / calls:.6f} per call)",
    )

    print(
        f"\ncircuit breakers: {THREADS} threads calling a healthy {DEPENDENCY_SECONDS * 1000:.0f} ms "
        f"dependency for {THROUGHPUT_SECONDS:.0f} s each:"
    )
    unprotected = throughput(healthy)
    line("no breaker", f"{unprotected:8.0f} calls/s = 1.00")
    ratios = {}
    for name, wrapped in make(healthy).items():
        rate = throughput(wrapped)
        ratios[name] = rate / unprotected
        line(name, f"{rate:8.0f} calls/s = {ratios[name]:.2f}")
    worst = min(
        ratios["django-stability, process scope"], ratios["django-stability, cluster scope"]
    )
    line(
        "goal: >= 0.95 of unprotected (both scopes)",
        f"{'met' if worst >= 0.95 else 'MISSED'} ({worst:.2f})",
    )

    for key in client.scan_iter(f"pybreaker:{namespace}*"):
        client.delete(key)
