"""Where protected values live: the contract every home keeps, and the in-process home.

Three homes keep this contract: ``RedisHome`` (Lua scripts, pub/sub wake-ups;
the Redis backend), ``BackendHome`` (any Django cache, locks through its atomic
``add``; the mixin) and ``LocalHome`` (this process only; the fallback of both
while their server fails). ``FailsafeHome`` puts the last behind the others.
"""

from __future__ import annotations

import abc
import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FRESH, STALE, ABSENT = "fresh", "stale", "absent"


@dataclass(frozen=True)
class Keys:
    """The keys of one protected value: ``full`` is the key as the backend stores it."""

    key: str
    version: int | None
    full: str


@dataclass(frozen=True)
class Reading:
    """What a read found. Times are seconds on the home's clock (the Redis server's for Redis).

    ``soft_expiry`` is 0 for a value that never goes stale (and for a plain
    value written without protection, which counts as fresh).
    """

    state: str
    value: Any = None
    soft_expiry: float = 0.0
    compute_time: float = 0.0
    now: float = 0.0
    locked: bool = False
    backoff: bool = False

    @property
    def age(self) -> float:
        """Seconds past the soft expiry (negative while fresh; -inf if never stale)."""
        if self.soft_expiry <= 0:
            return -math.inf
        return self.now - self.soft_expiry


@dataclass(frozen=True)
class Backoff:
    """After a failed recompute: pause ``base`` seconds, doubling per failure up to ``cap``."""

    base: float
    cap: float
    keep: float


class Watcher:
    """Wakes one waiting caller when the value it waits for lands (or its lock is freed).

    Homes call ``notify()`` from any thread; a sync caller waits with
    ``wait()``, an async one with ``async_wait()``. ``max_wait`` caps each
    wait for homes that cannot push (they are polled that often instead).
    """

    def __init__(self, max_wait: float | None = None) -> None:
        self.max_wait = max_wait
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closers: list[Callable[[], None]] = []

    def notify(self) -> None:
        with self._lock:
            self._event.set()
            futures, self._futures = self._futures, []
        for loop, future in futures:
            loop.call_soon_threadsafe(_resolve, future)

    def _cap(self, timeout: float) -> float:
        return timeout if self.max_wait is None else min(timeout, self.max_wait)

    def wait(self, timeout: float) -> bool:
        """Block until notified or ``timeout`` seconds; True when notified."""
        woke = self._event.wait(self._cap(max(0.0, timeout)))
        self._event.clear()
        return woke

    async def async_wait(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._event.is_set():
                self._event.clear()
                return True
            self._futures.append((loop, future))
        try:
            await asyncio.wait({future}, timeout=self._cap(max(0.0, timeout)))
        finally:
            with self._lock:
                self._futures = [(lp, f) for lp, f in self._futures if f is not future]
                woke = self._event.is_set()
                self._event.clear()
        return woke

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        """Stop watching (every home this watcher was registered with forgets it)."""
        for closer in self._closers:
            closer()
        self._closers.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WatcherRegistry:
    """Watchers by full key, notified by the home that saw the value land."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, set[Watcher]] = {}

    def add(self, full: str, watcher: Watcher) -> None:
        with self._lock:
            self._by_key.setdefault(full, set()).add(watcher)

        def remove() -> None:
            with self._lock:
                watchers = self._by_key.get(full)
                if watchers is not None:
                    watchers.discard(watcher)
                    if not watchers:
                        del self._by_key[full]

        watcher.on_close(remove)

    def notify(self, full: str) -> None:
        with self._lock:
            watchers = list(self._by_key.get(full, ()))
        for watcher in watchers:
            watcher.notify()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._by_key.values())


class Home(abc.ABC):
    """Where protected values, their locks and their backoffs live."""

    #: Seconds between two looks for a waiter when this home cannot push wake-ups.
    poll_interval: float | None = None

    @abc.abstractmethod
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
        """Read the value; when ``lock`` and it needs recomputing, try to take its lock.

        The lock is tried when the value is absent, stale (unless a failed
        recompute is backing off and the value is at most ``stale_if_error``
        seconds stale), or fresh but within ``compute time x xfetch`` of its
        soft expiry (early refresh).
        """

    @abc.abstractmethod
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
        """Store a computed value, unless one whose compute started later is there.

        ``soft``: seconds fresh (None: never stale); ``hard``: seconds kept
        (None: no expiry; 0: not stored, and the current value dropped, as
        django-redis's ``set()`` with a timeout of 0 does). Releases the lock if
        ``token`` holds it, and wakes the waiters. True when stored (or dropped).
        """

    @abc.abstractmethod
    def release(self, keys: Keys, *, token: str, backoff: Backoff | None) -> None:
        """Free the lock if ``token`` holds it; after a failure, start or extend a backoff."""

    @abc.abstractmethod
    def renew(self, keys: Keys, *, token: str, lease: float) -> bool:
        """Extend the lock ``token`` holds; False when it is gone or held by another."""

    @abc.abstractmethod
    def add_watcher(self, keys: Keys, watcher: Watcher) -> None:
        """Notify ``watcher`` when a value lands under ``keys`` or its lock is freed."""


class LocalHome(Home):
    """Protected values of this process only: thread-safe, bounded, no I/O.

    The fallback while a cache server fails: each process then computes a key
    at most once per fresh period (its threads share one lock per key), so an
    outage does not turn into a thundering herd on the database. Values are
    kept encoded (``encode``/``decode``), so a caller never shares an object
    with another. Times are wall-clock seconds.
    """

    def __init__(
        self,
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.encode = encode
        self.decode = decode
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        # full key -> (hard expiry or inf, soft expiry or 0, compute time, started, encoded)
        self._values: OrderedDict[str, tuple[float, float, float, float, Any]] = OrderedDict()
        self._locks: dict[str, tuple[str, float]] = {}
        self._backoffs: dict[str, tuple[int, float, float]] = {}
        self.watchers = WatcherRegistry()

    def __len__(self) -> int:
        return len(self._values)

    def _value(self, full: str, now: float) -> tuple[float, float, float, float, Any] | None:
        entry = self._values.get(full)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._values[full]
            return None
        self._values.move_to_end(full)
        return entry

    def _holder(self, full: str, now: float) -> str | None:
        held = self._locks.get(full)
        if held is None:
            return None
        if held[1] <= now:
            del self._locks[full]
            return None
        return held[0]

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
        with self._lock:
            now = self.clock()
            entry = self._value(keys.full, now)
            state, soft, delta, encoded = ABSENT, 0.0, 0.0, None
            if entry is not None:
                _, soft, delta, _, encoded = entry
                state = STALE if 0 < soft <= now else FRESH
            want, backoff = False, False
            if lock:
                if state == ABSENT:
                    want = True
                elif state == STALE:
                    want = True
                    pause = self._backoffs.get(keys.full)
                    if pause is not None and pause[2] > now and pause[1] > now:
                        backoff = True
                        want = now - soft > stale_if_error
                elif soft > 0 and delta > 0 and soft - now <= delta * xfetch:
                    want = True
            locked = False
            if want and self._holder(keys.full, now) is None:
                self._locks[keys.full] = (token, now + lease)
                locked = True
                if len(self._locks) > self.max_keys:
                    self._sweep_locks(now)
        value = self.decode(encoded) if encoded is not None else None
        return Reading(state, value, soft, delta, now, locked, backoff)

    def _sweep_locks(self, now: float) -> None:
        for full in [k for k, (_, expiry) in self._locks.items() if expiry <= now]:
            del self._locks[full]

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
        encoded = self.encode(value) if hard != 0 else None
        with self._lock:
            now = self.clock()
            begun = now if started is None else started
            current = self._value(keys.full, now)
            store = hard != 0
            dropped = False
            if current is not None:
                newer = current[3] > begun
                expired = 0 < current[1] <= now
                if newer or (only_if_absent and not expired):
                    store = False
                elif hard == 0 and not only_if_absent:
                    del self._values[keys.full]
                    dropped = True
            if store:
                soft_expiry = 0.0 if soft is None else now + soft
                hard_expiry = math.inf if hard is None else now + hard
                self._values[keys.full] = (hard_expiry, soft_expiry, compute_time, begun, encoded)
                self._values.move_to_end(keys.full)
                while len(self._values) > self.max_keys:
                    self._values.popitem(last=False)
                self._backoffs.pop(keys.full, None)
            if token and self._holder(keys.full, now) == token:
                del self._locks[keys.full]
        self.watchers.notify(keys.full)
        return store or dropped

    def release(self, keys: Keys, *, token: str, backoff: Backoff | None) -> None:
        with self._lock:
            now = self.clock()
            if self._holder(keys.full, now) == token:
                del self._locks[keys.full]
            if backoff is not None and backoff.base > 0:
                previous = self._backoffs.get(keys.full)
                failures = previous[0] + 1 if previous is not None and previous[2] > now else 1
                pause = min(backoff.base * 2 ** (failures - 1), backoff.cap)
                self._backoffs[keys.full] = (failures, now + pause, now + backoff.keep)
                if len(self._backoffs) > self.max_keys:
                    for full in [k for k, v in self._backoffs.items() if v[2] <= now]:
                        del self._backoffs[full]
        self.watchers.notify(keys.full)

    def renew(self, keys: Keys, *, token: str, lease: float) -> bool:
        with self._lock:
            now = self.clock()
            if self._holder(keys.full, now) != token:
                return False
            self._locks[keys.full] = (token, now + lease)
            return True

    def add_watcher(self, keys: Keys, watcher: Watcher) -> None:
        self.watchers.add(keys.full, watcher)

    def delete(self, full: str) -> None:
        """Forget a value (the backend's delete() reaches the fallback too)."""
        with self._lock:
            self._values.pop(full, None)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._locks.clear()
            self._backoffs.clear()
