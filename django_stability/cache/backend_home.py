"""Protected values in any Django cache: locks through the backend's atomic ``add``.

What this home can promise depends on the backend, and it is weaker than the
Redis home's (see the docs' limits):

* the lock is as shared and as atomic as the backend's ``add``: across
  processes and machines on memcached and Redis, per process on local memory;
* renewing and releasing the lock, and the fence against an older compute,
  are a read followed by a write, not one atomic step: two callers can slip
  between them in a narrow window (a caller that takes the lock looks at the
  value again, so a value landed between its read and its lock is not
  computed twice);
* timeouts are whole seconds on backends that only know seconds, so a lease
  lasts at least one second;
* waiters in other processes are not woken when the value lands: they look
  again every ``poll_interval`` seconds (callers in the same process are woken);
* staleness is judged by each machine's clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from .envelope import pack_tuple, unpack_tuple
from .home import ABSENT, FRESH, STALE, Backoff, Home, Keys, Reading, Watcher, WatcherRegistry

_MISSING = object()


class RawCache(Protocol):
    """The backend's own operations, below the protection (what the mixin hands in)."""

    def raw_get(self, key: str, default: Any, version: int | None) -> Any: ...

    def raw_set(self, key: str, value: Any, timeout: float | None, version: int | None) -> Any: ...

    def raw_add(self, key: str, value: Any, timeout: float | None, version: int | None) -> bool: ...

    def raw_delete(self, key: str, version: int | None) -> Any: ...


def _seconds(timeout: float) -> int:
    # Memcached and Django's RedisCache keep whole seconds; round up, never to 0
    # (which would mean "expire now").
    return max(1, math.ceil(timeout))


class BackendHome(Home):
    """A ``Home`` over a Django cache backend's own get/set/add/delete."""

    poll_interval = 0.02

    def __init__(self, cache: RawCache, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.clock = clock
        self.watchers = WatcherRegistry()

    @staticmethod
    def lock_key(keys: Keys) -> str:
        return f"{keys.key}|stability-lock"

    @staticmethod
    def backoff_key(keys: Keys) -> str:
        return f"{keys.key}|stability-backoff"

    def read(
        self,
        keys: Keys,
        *,
        token: str,
        lease: float,
        lock: bool,
        xfetch: float,
        stale_if_error: float,
    ) -> Reading:
        now = self.clock()
        state, value, soft, delta = self._look(keys, now)
        want, backoff = False, False
        if lock:
            if state == ABSENT:
                want = True
            elif state == STALE:
                want = True
                pause = self.cache.raw_get(self.backoff_key(keys), None, keys.version)
                if isinstance(pause, (list, tuple)) and len(pause) == 2 and pause[1] > now:
                    backoff = True
                    want = now - soft > stale_if_error
            elif soft > 0 and delta > 0 and soft - now <= delta * xfetch:
                want = True
        locked = want and bool(
            self.cache.raw_add(self.lock_key(keys), token, _seconds(lease), keys.version)
        )
        if locked:
            # The read and the lock are two steps here: a holder may have landed
            # its value and given the lock back in between. Look again, so that
            # the value it computed is not computed a second time.
            again = self._look(keys, now)
            if again[0] == FRESH and (state != FRESH or again[2] != soft):
                self._release(keys, token)
                return Reading(again[0], again[1], again[2], again[3], now, False, False)
        return Reading(state, value, soft, delta, now, locked, backoff)

    def _look(self, keys: Keys, now: float) -> tuple[str, Any, float, float]:
        """The value's state, the value, its soft expiry and its compute time."""
        stored = self.cache.raw_get(keys.key, _MISSING, keys.version)
        if stored is _MISSING:
            return ABSENT, None, 0.0, 0.0
        unpacked = unpack_tuple(stored)
        if unpacked is None:
            return FRESH, stored, 0.0, 0.0
        header, value = unpacked
        soft, delta = header.soft_expiry, header.compute_time
        return (STALE if 0 < soft <= now else FRESH), value, soft, delta

    def land(
        self,
        keys: Keys,
        *,
        token: str | None,
        value: Any,
        soft: float | None,
        hard: float | None,
        compute_time: float,
        started: float | None,
        only_if_absent: bool = False,
    ) -> bool:
        now = self.clock()
        begun = now if started is None else started
        store = hard != 0
        dropped = False
        current = self.cache.raw_get(keys.key, _MISSING, keys.version)
        if current is not _MISSING:
            unpacked = unpack_tuple(current)
            newer = unpacked is not None and unpacked[0].started > begun
            expired = unpacked is not None and 0 < unpacked[0].soft_expiry <= now
            if newer or (only_if_absent and not expired):
                store = False
            elif hard == 0 and not only_if_absent:
                self.cache.raw_delete(keys.key, keys.version)
                dropped = True
        if store:
            envelope = pack_tuple(value, 0.0 if soft is None else now + soft, compute_time, begun)
            timeout = None if hard is None else _seconds(hard)
            self.cache.raw_set(keys.key, envelope, timeout, keys.version)
            self.cache.raw_delete(self.backoff_key(keys), keys.version)
        if token:
            self._release(keys, token)
        self.watchers.notify(keys.full)
        return store or dropped

    def _release(self, keys: Keys, token: str) -> None:
        if self.cache.raw_get(self.lock_key(keys), None, keys.version) == token:
            self.cache.raw_delete(self.lock_key(keys), keys.version)

    def release(self, keys: Keys, *, token: str, backoff: Backoff | None) -> None:
        self._release(keys, token)
        if backoff is not None and backoff.base > 0:
            now = self.clock()
            previous = self.cache.raw_get(self.backoff_key(keys), None, keys.version)
            failures = 1
            if isinstance(previous, (list, tuple)) and len(previous) == 2:
                failures = int(previous[0]) + 1
            pause = min(backoff.base * 2 ** (failures - 1), backoff.cap)
            self.cache.raw_set(
                self.backoff_key(keys),
                (failures, now + pause),
                _seconds(backoff.keep),
                keys.version,
            )
        self.watchers.notify(keys.full)

    def renew(self, keys: Keys, *, token: str, lease: float) -> bool:
        if self.cache.raw_get(self.lock_key(keys), None, keys.version) != token:
            return False
        self.cache.raw_set(self.lock_key(keys), token, _seconds(lease), keys.version)
        return True

    def add_watcher(self, keys: Keys, watcher: Watcher) -> None:
        watcher.max_wait = self.poll_interval
        self.watchers.add(keys.full, watcher)
