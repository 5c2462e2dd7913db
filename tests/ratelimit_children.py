"""Run in other OS processes by the rate-limit tests (see tests.multiproc)."""

from __future__ import annotations

import threading


def hammer(name: str, limit: int, threads: int, attempts: int) -> int:
    """``threads`` threads each making ``attempts`` decisions on one key; how many were admitted."""
    from django_stability.policies import registry
    from django_stability.ratelimit import RateLimitSpec, check

    registry.register(RateLimitSpec(name=name, rate=f"{limit}/h"))
    admitted = [0] * threads
    start = threading.Barrier(threads)

    def work(index: int) -> None:
        start.wait()
        for _ in range(attempts):
            verdict = check(name, "the-one-key")
            assert not verdict.degraded, "the shared store must answer in this test"
            admitted[index] += verdict.allowed

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(admitted)
