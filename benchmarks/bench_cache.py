"""The stampede: one popular key, many concurrent callers, a 200 ms compute.

Side by side in one run, against the same Redis: this app's
``StampedeProtectedRedisCache.get_or_set``, Django's ``get_or_set`` on
django-redis, and dogpile.cache's Redis backend with its distributed lock. For
each: computes per expiry and the callers' p50/p99, with 16 and 64 callers in
threads of one process and in 4 processes, on an absent key and on an expired
key whose stale value is still there; then the time to recover after the
process holding the lock is killed mid-compute.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.harness import line

COMPUTE = 0.2
PROCESSES = 4
#: Each scenario runs this many times; the lines show the median p50/p99 and the most computes.
ROUNDS = 3
LIBRARIES = ("django-stability", "Django get_or_set", "dogpile.cache + redis lock")
_local = threading.local()
_region: Any = None


def _redis() -> Any:
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])


def _dogpile() -> Any:
    global _region
    if _region is None:
        from django.conf import settings
        from dogpile.cache import make_region

        _region = make_region().configure(
            "dogpile.cache.redis",
            expiration_time=60,
            arguments={
                "url": settings.CACHES["default"]["LOCATION"],
                "redis_expiration_time": 60,
                "distributed_lock": True,
                "thread_local_lock": False,
            },
        )
    return _region


def _setup_policy() -> None:
    from django_stability.cache import CacheSpec
    from django_stability.policies import registry

    registry.register(CacheSpec(name="bench", jitter=0.0))


def get_or_create(library: str, key: str, creator: Callable[[], Any], ttl: float) -> Any:
    from django.core.cache import caches

    if library == "django-stability":
        return caches["protected"].get_or_set(key, creator, ttl, policy="bench")
    if library == "Django get_or_set":
        return caches["default"].get_or_set(key, creator, ttl)
    return _dogpile().get_or_create(key, creator)


def prime_stale(library: str, key: str) -> None:
    """Leave an expired value under ``key`` (a miss for Django, which keeps none)."""
    from django.core.cache import caches

    if library == "django-stability":
        caches["protected"].get_or_set(key, lambda: "stale", 0.3, policy="bench")
    elif library == "Django get_or_set":
        caches["default"].set(key, "stale", 0.3)
    else:
        # A value dogpile sees as created an hour ago: expired, still in Redis.
        from dogpile.cache.api import CachedValue
        from dogpile.cache.region import value_version

        region = _dogpile()
        old = CachedValue("stale", {"ct": time.time() - 3600, "v": value_version})
        region._set_cached_value_to_backend(key, old)
    time.sleep(0.35)


def callers(library: str, key: str, threads: int, start_at: float) -> list[tuple[float, bool]]:
    """``threads`` callers released together at ``start_at``: (seconds, computed it) each."""
    client = _redis()
    results: list[tuple[float, bool]] = []
    lock = threading.Lock()

    def creator() -> str:
        _local.computed = True
        client.incr(f"{key}:computes")
        time.sleep(COMPUTE)
        return "fresh"

    def call() -> None:
        _local.computed = False
        # Warm the thread (its cache instance, a pooled connection) as a server's
        # long-lived worker thread would be: the stampede is what is measured.
        get_or_create(library, f"{key}:warm", lambda: "warm", 60)
        time.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        get_or_create(library, key, creator, 60)
        took = time.perf_counter() - started
        with lock:
            results.append((took, _local.computed))

    pool = [threading.Thread(target=call) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


def _worker_setup() -> None:
    import django

    django.setup()
    _setup_policy()


def holder(library: str, key: str) -> None:
    """Take the lock of ``key`` by computing it, then compute forever (to be killed)."""
    _worker_setup()
    client = _redis()

    def creator() -> str:
        client.set(f"{key}:holder", "1", ex=60)
        time.sleep(600)
        return "never"

    get_or_create(library, key, creator, 60)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def scenario(
    library: str, total: int, state: str, pool: Any | None
) -> tuple[int, list[float], list[float]]:
    """Computes, latencies of all callers, latencies of callers that did not compute."""
    key = f"bench:stampede:{uuid.uuid4().hex[:8]}"
    if state == "stale":
        prime_stale(library, key)
    start_at = time.time() + (0.5 if pool is not None else 0.2)
    if pool is None:
        results = callers(library, key, total, start_at)
    else:
        per = total // PROCESSES
        pending = [
            pool.apply_async(callers, (library, key, per, start_at)) for _ in range(PROCESSES)
        ]
        results = [r for p in pending for r in p.get(timeout=60)]
    client = _redis()
    computes = int(client.get(f"{key}:computes") or 0)
    client.delete(f"{key}:computes")
    everyone = [took for took, _ in results]
    others = [took for took, computed in results if not computed]
    return computes, everyone, others


def recovery(library: str) -> str:
    """Seconds from killing the lock holder to the next compute starting (capped at 5 s)."""
    if library == "Django get_or_set":
        return "no lock: nothing to recover (every caller computes)"
    key = f"bench:recovery:{uuid.uuid4().hex[:8]}"
    client = _redis()
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=holder, args=(library, key), daemon=True)
    process.start()
    deadline = time.monotonic() + 30
    while not client.exists(f"{key}:holder") and time.monotonic() < deadline:
        time.sleep(0.01)
    recomputed: list[float] = []

    def creator() -> str:
        recomputed.append(time.monotonic())
        return "recovered"

    waiter = threading.Thread(target=lambda: get_or_create(library, key, creator, 60), daemon=True)
    waiter.start()
    time.sleep(0.3)
    process.kill()
    killed = time.monotonic()
    waiter.join(5.0)
    process.join(5)
    if library != "django-stability" and not recomputed:
        # dogpile's lock has no timeout by default: release it by hand so that the
        # waiter thread finishes, and report the wedge.
        for lock_key in client.scan_iter(match=f"*{key}*"):
            client.delete(lock_key)
        waiter.join(5.0)
        return "wedged: no recompute within 5 s (the dead holder's lock never expires)"
    client.delete(f"{key}:holder")
    return f"{recomputed[0] - killed:5.2f} s"


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main() -> None:
    _setup_policy()
    print(
        f"cache stampede: one key, {COMPUTE * 1000:.0f} ms compute, same Redis for all "
        f"(p50/p99 over every caller, median of {ROUNDS} rounds; computes: the most in a round; "
        "'others' = callers that did not compute):"
    )
    context = multiprocessing.get_context("spawn")
    summary: dict[tuple[str, int, str, str], tuple[int, float, float]] = {}
    with context.Pool(PROCESSES, initializer=_worker_setup) as pool:
        pool.map(time.sleep, [0.0] * PROCESSES)  # all workers up before timing
        for where in ("threads", "processes"):
            for total in (16, 64):
                for state in ("absent", "stale"):
                    label = (
                        f"{total} callers in {'1 process' if where == 'threads' else f'{PROCESSES} processes'}"
                        f", {'no value' if state == 'absent' else 'stale value'}"
                    )
                    print(f"  {label}:")
                    rounds: dict[str, list[tuple[int, float, float, float | None]]] = {
                        library: [] for library in LIBRARIES
                    }
                    for _ in range(ROUNDS):  # interleaved, so that noise hits every library
                        for library in LIBRARIES:
                            computes, everyone, others = scenario(
                                library, total, state, None if where == "threads" else pool
                            )
                            rounds[library].append(
                                (
                                    computes,
                                    percentile(everyone, 0.5),
                                    percentile(everyone, 0.99),
                                    statistics.median(others)
                                    if others and len(others) < len(everyone)
                                    else None,
                                )
                            )
                    for library in LIBRARIES:
                        runs = rounds[library]
                        computes = max(r[0] for r in runs)
                        p50 = statistics.median(r[1] for r in runs)
                        p99 = statistics.median(r[2] for r in runs)
                        others_p50 = [r[3] for r in runs if r[3] is not None]
                        summary[(where, total, state, library)] = (computes, p50, p99)
                        extra = (
                            f"  others p50 {_fmt(statistics.median(others_p50))}"
                            if others_p50
                            else ""
                        )
                        line(
                            f"  {library}",
                            f"computes {computes:3d}  p50 {_fmt(p50)}  p99 {_fmt(p99)}{extra}",
                        )
    from django.core.cache import caches

    from benchmarks.harness import median_seconds

    ours, plain = caches["protected"], caches["default"]
    ours.get_or_set("bench:hit", "v", 600, policy="bench")
    plain.get_or_set("bench:hit", "v", 600)
    hit_ours = median_seconds(lambda: ours.get_or_set("bench:hit", "v", 600, policy="bench"))
    hit_plain = median_seconds(lambda: plain.get_or_set("bench:hit", "v", 600))
    line(
        "fresh hit: get_or_set, django-stability vs django-redis",
        f"{hit_ours * 1e6:6.1f} us vs {hit_plain * 1e6:6.1f} us = {hit_ours / hit_plain:4.2f}x",
    )
    print("  recovery after the lock holder is killed (SIGKILL) mid-compute, no value:")
    for library in LIBRARIES:
        line(f"  {library}", recovery(library))
    ours = [v for k, v in summary.items() if k[3] == "django-stability"]
    django = [v for k, v in summary.items() if k[3] == "Django get_or_set"]
    line(
        "django-stability vs Django get_or_set, all 8 runs",
        f"computes {sum(c for c, _, _ in ours)} vs {sum(c for c, _, _ in django)}; "
        f"median p50 {statistics.median(p for _, p, _ in ours) / statistics.median(p for _, p, _ in django):.3f}x",
    )
    stale_p50 = max(
        p for k, (c, p, _) in summary.items() if k[3] == "django-stability" and k[2] == "stale"
    )
    absent_p99 = max(
        p for k, (c, _, p) in summary.items() if k[3] == "django-stability" and k[2] == "absent"
    )
    line(
        "goals (django-stability)",
        f"stale p50 worst {_fmt(stale_p50)} (<= 20 ms); absent p99 worst {_fmt(absent_p99)} "
        f"(<= {_fmt(COMPUTE + 0.05).strip()})",
    )
