"""Functions run in other OS processes by the tests (see tests.multiproc)."""

from __future__ import annotations

import time


def wait_for_rate(name: str, expected: str, timeout: float) -> float:
    """Decide from this process's registry until policy ``name`` has ``expected`` rate.

    Marks itself ready in the store after its first lookup; returns the wall
    time at which it saw the new value (or raises after ``timeout``).
    """
    from django_stability.policies import registry
    from django_stability.ratelimit import RateLimitSpec
    from django_stability.store import get_store

    spec = registry.get(RateLimitSpec, name)
    get_store().set(f"ready:{name}", "1", 60)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spec = registry.get(RateLimitSpec, name)
        if spec is not None and spec.rate == expected:
            seen = time.time()
            get_store().set(f"seen:{name}", repr(seen), 60)
            return seen
        time.sleep(0.01)
    raise AssertionError(f"policy {name} still has {spec.rate if spec else None!r}")
