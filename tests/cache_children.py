"""Callers of the protected cache run in other OS processes by test_cache_multiproc.py."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

from django_stability import cached


def _redis() -> redis.Redis:
    from django.conf import settings

    return redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])


def _all_ready(ready_key: str, processes: int, timeout: float = 60.0) -> None:
    """A barrier across processes: each counts itself in and waits for the others."""
    client = _redis()
    client.incr(ready_key)
    client.expire(ready_key, 120)
    deadline = time.monotonic() + timeout
    while int(client.get(ready_key) or 0) < processes:
        if time.monotonic() > deadline:
            raise TimeoutError("the other processes did not start")
        time.sleep(0.002)


def callers(
    key: str, threads: int, ready_key: str, processes: int, compute_seconds: float
) -> dict[str, Any]:
    """``threads`` callers of get_or_set on ``key`` in this process, started with the others.

    The compute records who ran it in the list ``<key>:computed``. Returns each
    caller's answer and this process's counters.
    """
    from django.core.cache import caches

    from django_stability.cache import counters

    client = _redis()
    pid = os.getpid()
    answers: list[dict[str, Any]] = [{} for _ in range(threads)]
    caches["protected"].get("warm-up")  # connect before the start
    _all_ready(ready_key, processes)
    barrier = threading.Barrier(threads)

    def call(i: int) -> None:
        who = f"{pid}:{i}"

        def compute() -> str:
            client.rpush(f"{key}:computed", who)
            time.sleep(compute_seconds)
            return f"computed by {who}"

        barrier.wait()
        answers[i] = {"who": who, "value": caches["protected"].get_or_set(key, compute, 60)}

    pool = [threading.Thread(target=call, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    return {"answers": answers, "counters": counters.snapshot().get("default", {})}


def holder(key: str) -> None:
    """Take the lock of ``key`` by computing it, mark the start, and compute for a minute."""
    from django.core.cache import caches

    client = _redis()

    def compute() -> str:
        client.set(f"{key}:holder-started", "1", ex=120)
        time.sleep(60)
        return "never"

    caches["protected"].get_or_set(key, compute, 60)


@cached("celery-refreshed", ttl=60, refresh="celery", jitter=0.0)
def celery_refreshed(item: int) -> str:
    """Refreshed by the Celery task in a worker; records the worker's pid."""
    _redis().set(f"celery-refreshed:{item}:pid", os.getpid(), ex=60)
    return f"refreshed {item} in {os.getpid()}"
