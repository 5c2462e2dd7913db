"""What the cache did, per policy: cheap counters in each process, totals in the store.

Counting is an addition under a lock in this process. Every
``CACHE_COUNTERS_FLUSH`` seconds the maintenance thread adds what was counted
since to daily totals in the shared store (one ``incr`` per policy and event
that moved), so a dashboard can read the totals of every process with
``shared_counters()``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

#: hits: fresh values served; stale: stale values served; waits: callers that
#: waited for another's compute; recomputes: values computed and stored; errors:
#: computes that raised; degraded: calls answered without the cache server.
EVENTS = ("hits", "stale", "waits", "recomputes", "errors", "degraded")

#: Daily totals live this long in the store.
SHARED_TTL = 8 * 86400.0


def _day(when: float | None = None) -> str:
    return time.strftime("%Y%m%d", time.gmtime(time.time() if when is None else when))


def shared_key(policy: str, event: str, day: str) -> str:
    return f"cache:counters:{day}:{policy}:{event}"


class Counters:
    """Per-policy event counts of this process, and what is not yet in the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(EVENTS, 0))
        self._pending: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, policy: str, event: str, amount: int = 1) -> None:
        with self._lock:
            self._totals[policy][event] += amount
            self._pending[(policy, event)] += amount

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Counts of this process since it started (or since ``reset``), by policy."""
        with self._lock:
            return {policy: dict(events) for policy, events in self._totals.items()}

    def reset(self) -> None:
        with self._lock:
            self._totals.clear()
            self._pending.clear()

    def flush(self) -> None:
        """Add what was counted since the last flush to the shared daily totals."""
        from ..store import get_store

        with self._lock:
            pending, self._pending = self._pending, defaultdict(int)
        if not pending:
            return
        store = get_store()
        day = _day()
        for (policy, event), amount in pending.items():
            store.incr(shared_key(policy, event, day), amount, SHARED_TTL)


counters = Counters()


def shared_counters(policy: str, day: str | None = None) -> dict[str, int]:
    """Today's (or ``day``'s, as YYYYMMDD in UTC) totals of every process for ``policy``."""
    from ..store import get_store

    store = get_store()
    day = day or _day()
    return {event: int(store.get(shared_key(policy, event, day)) or 0) for event in EVENTS}
