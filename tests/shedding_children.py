"""Functions the concurrency tests run in other OS processes (see tests.multiproc)."""

from __future__ import annotations

import time

import redis
from django.conf import settings


def _limit(name: str, limit: int, ttl: float) -> None:
    from django_stability.concurrency import ConcurrencySpec
    from django_stability.policies import registry

    registry.register(ConcurrencySpec(name=name, limit=limit, lease_ttl=ttl))


def contend(name: str, limit: int, rounds: int, hold: float) -> dict[str, int]:
    """Try ``rounds`` times to hold a slot; while holding, count holders in a plain Redis counter.

    The counter goes up after the slot is taken and down before it is given
    back, so it never counts more holders than the store admitted.
    """
    from django_stability import Overloaded, concurrency_slot

    _limit(name, limit, ttl=10.0)
    raw = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    counter = f"{settings.STABILITY['STORE_KEY_PREFIX']}:raw-holders:{name}"
    raw.expire(counter, 60)
    held = refused = peak = 0
    for _ in range(rounds):
        try:
            with concurrency_slot(name):
                now = int(raw.incr(counter))
                raw.expire(counter, 60)
                peak = max(peak, now)
                held += 1
                time.sleep(hold)
                raw.decr(counter)
        except Overloaded:
            refused += 1
            time.sleep(hold / 4)
    return {"held": held, "refused": refused, "peak": peak}


def hold_forever(name: str, ttl: float) -> None:
    """Take a slot, say so in the store, and keep it (renewed) until killed."""
    from django_stability.concurrency import take_slot
    from django_stability.store import get_store

    _limit(name, 1, ttl)
    slot = take_slot(name)
    assert slot is not None
    get_store().set(f"holding:{name}", slot.holder, 60)
    time.sleep(120)
