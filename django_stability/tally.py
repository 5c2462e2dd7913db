"""What this process counted: plain counters by name and labels, cheap enough for the hot path.

The signal receivers of ``events`` (and the one hook in ``ratelimit.decide``)
add to the ``tally`` of the process: one lock, one dictionary update. Nothing
here does I/O: the reporter sends the counts to the store, and ``metrics``
hands them to Prometheus, from a thread of their own.
"""

from __future__ import annotations

import os
import threading

#: A counter's key: its name, then its label values in a fixed order.
Key = tuple[str, ...]

#: The counters, with the names of their labels (the order of the key's values).
COUNTERS: dict[str, tuple[str, ...]] = {
    "requests": (),
    "ratelimit_decisions": ("policy",),
    "ratelimit_refusals": ("policy", "shadow"),
    "requests_shed": ("reason", "priority", "shadow"),
    "breaker_transitions": ("breaker", "state", "shadow"),
    "bulkhead_refusals": ("bulkhead", "shadow"),
    "cache_transitions": ("cache", "state"),
    "store_transitions": ("state",),
    "jobs_finished": ("job", "state"),
    "jobs_refused": ("job", "reason"),
    "policy_reloads": (),
    "operator_actions": ("target", "action"),
}

#: The most distinct keys one process counts; past it, new keys are dropped (a
#: label fed with unbounded values must not grow memory without end).
MAX_KEYS = 20_000


class Tally:
    """Counters of this process since it started. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Key, int] = {}
        self.dropped = 0

    def add(self, key: Key, amount: int = 1) -> None:
        """Add ``amount`` to the counter ``key`` (its name, then its label values)."""
        with self._lock:
            current = self._counts.get(key)
            if current is None and len(self._counts) >= MAX_KEYS:
                self.dropped += 1
                return
            self._counts[key] = (current or 0) + amount

    def snapshot(self) -> dict[Key, int]:
        """Every counter and its value now."""
        with self._lock:
            return dict(self._counts)

    def value(self, key: Key) -> int:
        return self._counts.get(key, 0)

    def reset(self) -> None:
        """Forget every count (tests; a forked child)."""
        with self._lock:
            self._counts = {}
            self.dropped = 0

    def after_fork(self) -> None:
        # The parent's counts are the parent's; its lock may have been held at the fork.
        self._lock = threading.Lock()
        self._counts = {}
        self.dropped = 0


def deltas(before: dict[Key, int], after: dict[Key, int]) -> dict[Key, int]:
    """What each counter gained from ``before`` to ``after`` (counters that moved only)."""
    return {
        key: value - before.get(key, 0)
        for key, value in after.items()
        if value != before.get(key, 0)
    }


#: The counters of this process.
tally = Tally()

os.register_at_fork(after_in_child=tally.after_fork)
