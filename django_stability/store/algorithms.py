"""The decisions the store makes, as plain functions of state and time.

``LocalStore`` calls these directly; the Lua scripts in ``lua/`` are their
translation for the Redis server, and the tests run both on the same inputs.
Times here are floats in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import Limit, LimitResult


def gcra(tat: float | None, now: float, limit: Limit) -> tuple[LimitResult, float]:
    """One limit under the generic cell rate algorithm.

    ``tat`` is the stored theoretical arrival time (None when absent). Returns
    the result and the new TAT to store if this limit is charged.
    """
    interval = limit.interval
    capacity = limit.burst * interval
    base = now if tat is None or tat < now else tat
    new_tat = base + limit.cost * interval
    allow_at = new_tat - capacity
    if limit.cost > limit.burst:
        # Never admissible; policies refuse this combination, but stay defined.
        return LimitResult(limit, False, 0, limit.period, base - now), new_tat
    # A nanosecond of slack: in floats, base + interval - burst * interval can
    # land a rounding error above ``now`` and refuse a fresh key with burst 1.
    if allow_at <= now + 1e-9:
        remaining = math.floor((capacity - (new_tat - now)) / interval + 1e-9)
        return LimitResult(limit, True, max(0, remaining), 0.0, new_tat - now), new_tat
    remaining = math.floor((capacity - (base - now)) / interval + 1e-9)
    return LimitResult(limit, False, max(0, remaining), allow_at - now, base - now), new_tat


def decide(
    limits: Sequence[Limit], tats: Sequence[float | None], now: float
) -> tuple[bool, list[LimitResult], list[float | None]]:
    """All the limits of one request: the verdict, the results, and the TATs to write.

    A TAT to write is None where nothing is to be charged. When an enforced
    limit refuses, nothing is charged anywhere; a shadow limit that refuses is
    not charged and blocks nothing.
    """
    results: list[LimitResult] = []
    new_tats: list[float | None] = []
    blocked = False
    for limit, tat in zip(limits, tats, strict=True):
        result, new_tat = gcra(tat, now, limit)
        results.append(result)
        new_tats.append(new_tat if result.allowed else None)
        if not result.allowed and limit.enforce:
            blocked = True
    if blocked:
        new_tats = [None] * len(limits)
    return not blocked, results, new_tats


def record_limited(
    members: dict[str, float], key: str, until: float, now: float, keep: int
) -> None:
    """Record ``key`` as refused until ``until`` in a "limited now" set (changed in place).

    Expired members go; past ``keep`` members, the soonest to expire go first.
    """
    for name in [name for name, expiry in members.items() if expiry <= now]:
        del members[name]
    members[key] = until
    if len(members) > keep:
        for name, _ in sorted(members.items(), key=lambda item: item[1])[: len(members) - keep]:
            del members[name]


def acquire(
    holders: dict[str, float], holder: str, limit: int, ttl: float, now: float
) -> tuple[bool, float]:
    """Take or renew a lease in a mapping of holder -> expiry (changed in place).

    Returns whether it was granted and the seconds until the earliest other
    lease expires (0 when there is none).
    """
    for name in [name for name, expiry in holders.items() if expiry <= now]:
        del holders[name]
    granted = holder in holders or len(holders) < limit
    if granted:
        holders[holder] = now + ttl
    others = [expiry for name, expiry in holders.items() if name != holder]
    return granted, max(0.0, min(others) - now) if others else 0.0


def wait_in_line(
    active: dict[str, float],
    line: dict[str, tuple[float, float]],
    ticket: str,
    limit: int,
    active_ttl: float,
    queue_ttl: float,
    now: float,
) -> tuple[bool, int]:
    """A visitor's turn in a waiting room of ``limit`` places (both mappings changed in place).

    ``active`` maps admitted tickets to when their place frees (a lease set);
    ``line`` maps waiting tickets to (arrival, deadline): a visitor who does not
    come back before the deadline loses the place. Visitors are admitted in
    arrival order (ties by ticket), only as places free. An unknown ticket
    joins at the back. An empty ticket only prunes. Returns whether the ticket
    is admitted and its place in line (1-based; 0 when admitted or only looking).
    """
    for name in [name for name, expiry in active.items() if expiry <= now]:
        del active[name]
    for name in [name for name, (_, deadline) in line.items() if deadline <= now]:
        del line[name]
    if not ticket:
        return False, 0
    if ticket in active:
        active[ticket] = now + active_ttl
        return True, 0
    arrival = line[ticket][0] if ticket in line else now
    mine = (arrival, ticket)
    rank = sum(1 for name, (at, _) in line.items() if (at, name) < mine)
    if rank < limit - len(active):
        line.pop(ticket, None)
        active[ticket] = now + active_ttl
        return True, 0
    line[ticket] = (arrival, now + queue_ttl)
    return False, rank + 1
