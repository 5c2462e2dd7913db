"""Functions the integration-point tests run in other OS processes (see tests.multiproc)."""

from __future__ import annotations

import time
from typing import Any


def call_dead_dependency(name: str, fields: dict[str, Any]) -> dict[str, int]:
    """Call a dead dependency through the cluster breaker ``name`` until told to stop.

    Waits for the parent's "go" (it opens the breaker first); every call that
    reaches the dependency is counted in the store, and here.
    """
    from django_stability import BreakerOpen, circuit_breaker
    from django_stability.store import get_store

    breaker = circuit_breaker(name, **fields)
    store = get_store()
    reached = refused = 0

    def dependency() -> None:
        nonlocal reached
        reached += 1
        store.incr(f"reached:{name}", 1, 300)
        raise ConnectionError("dead")

    store.incr(f"ready:{name}", 1, 300)
    deadline = time.monotonic() + 90
    go = None
    while go is None and time.monotonic() < deadline:
        go = store.get(f"go:{name}")
        time.sleep(0.01)
    assert go is not None, "the parent never said go"
    stop_at = float(go)
    while time.time() < stop_at:
        try:
            breaker.call(dependency)
        except ConnectionError:
            pass
        except BreakerOpen:
            refused += 1
        time.sleep(0.005)
    return {"reached": reached, "refused": refused}
