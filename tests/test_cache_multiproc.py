"""The cache's must-hold properties across OS processes, against the real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from django.core.cache import caches

from tests.multiproc import run_in_processes, start_process

pytestmark = pytest.mark.slow

PROCESSES = 4
THREADS = 16  # 4 x 16 = 64 callers


def run_callers(key: str, compute_seconds: float) -> list[dict[str, Any]]:
    ready = f"{key}:ready"
    return run_in_processes(
        "tests.cache_children.callers",
        [(key, THREADS, ready, PROCESSES, compute_seconds)] * PROCESSES,
    )


def test_64_callers_in_4_processes_on_an_absent_key_compute_once(shared_redis: Any) -> None:
    key = f"mp:{uuid.uuid4().hex[:10]}"
    results = run_callers(key, compute_seconds=0.5)
    computed = [who.decode() for who in shared_redis.lrange(f"{key}:computed", 0, -1)]
    assert len(computed) == 1
    answers = [a for r in results for a in r["answers"]]
    assert len(answers) == 64
    assert {a["value"] for a in answers} == {f"computed by {computed[0]}"}
    shared_redis.delete(f"{key}:computed", f"{key}:ready")


def test_64_callers_on_a_stale_key_one_recomputes_and_nobody_else_waits(
    shared_redis: Any,
) -> None:
    key = f"mp:{uuid.uuid4().hex[:10]}"
    cache = caches["protected"]
    cache.get_or_set(key, lambda: "stale", 0.1)
    time.sleep(0.15)  # stale (the default policy serves it for a 60 s grace)
    results = run_callers(key, compute_seconds=1.0)
    computed = [who.decode() for who in shared_redis.lrange(f"{key}:computed", 0, -1)]
    assert len(computed) == 1
    answers = [a for r in results for a in r["answers"]]
    fresh = [a for a in answers if a["value"] != "stale"]
    # Who computed got its own value; every other caller got the stale one.
    assert [a["who"] for a in fresh] == computed
    assert fresh[0]["value"] == f"computed by {computed[0]}"
    assert sum(a["value"] == "stale" for a in answers) == 63
    # ... at once: no caller in any process waited for the compute.
    assert sum(r["counters"].get("waits", 0) for r in results) == 0
    assert sum(r["counters"].get("stale", 0) for r in results) == 63
    assert cache.get(key) == f"computed by {computed[0]}"
    shared_redis.delete(f"{key}:computed", f"{key}:ready")


def test_a_holder_killed_mid_compute_is_replaced_within_a_lease_and_a_heartbeat(
    shared_redis: Any,
) -> None:
    key = f"mp:{uuid.uuid4().hex[:10]}"
    cache = caches["protected"]
    lease = 1.0  # the default policy's
    process = start_process("tests.cache_children.holder", key)
    try:
        deadline = time.monotonic() + 30
        while not shared_redis.exists(f"{key}:holder-started"):
            assert time.monotonic() < deadline, "the holder did not start computing"
            time.sleep(0.01)
        recomputed_at: list[float] = []

        def compute() -> str:
            recomputed_at.append(time.monotonic())
            return "recomputed"

        answer: list[Any] = []
        waiter = threading.Thread(target=lambda: answer.append(cache.get_or_set(key, compute, 60)))
        waiter.start()
        time.sleep(0.3)  # the waiter is waiting on the holder
        assert not recomputed_at
        process.kill()  # SIGKILL: no cleanup, the lock stays until its lease runs out
        killed_at = time.monotonic()
        waiter.join(10)
    finally:
        process.kill()
        process.join(5)
    assert answer == ["recomputed"]
    # Within the lease plus one heartbeat (a third of a lease); the margin is for a
    # shared, noisy machine and still well under the 5 s wait.
    assert recomputed_at[0] - killed_at < lease + lease / 3 + 0.4
    shared_redis.delete(f"{key}:holder-started")
