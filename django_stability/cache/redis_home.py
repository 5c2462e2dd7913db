"""The Redis home of protected values: one Lua script per step, pub/sub wake-ups.

Reading a value and, when it needs recomputing, trying its lock is one round
trip (``read.lua``); storing a computed value, fenced against an older compute,
releasing the lock and waking the waiters is another (``land.lua``). The lock is
a plain key holding the holder's random token, with a short lease that the
holder's heartbeat renews while it computes (``renew.lua``) and that only that
token can delete (compare-and-delete). Waiters are woken by one ``PUBLISH`` per
landing, which a single listener thread per process (``Hub``) hands to them.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import RedisError

from .envelope import split
from .home import ABSENT, Backoff, Home, Keys, Reading, Watcher, WatcherRegistry

logger = logging.getLogger("django_stability.cache")

_US = 1_000_000.0
SCRIPTS = ("read", "land", "release", "renew", "probe", "touch")


@cache
def lua_source(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped with the package."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class Hub:
    """One pub/sub listener per process and channel, waking the watchers of a key.

    Started on the first wait. While Redis cannot be reached it retries once a
    second; waiters do not depend on it, they also look again every third of a
    lease.
    """

    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.watchers = WatcherRegistry()
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stop = threading.Event()

    def add(self, full: str, watcher: Watcher, subscribe_wait: float = 0.05) -> None:
        self.watchers.add(full, watcher)
        self._ensure_running()
        # A landing between the caller's read and the subscription would be missed;
        # the caller reads again after this, so waiting briefly is enough.
        self.ready.wait(subscribe_wait)

    def _ensure_running(self) -> None:
        if self._pid != os.getpid():  # forked: the listener stayed in the parent
            self._pid = os.getpid()
            self._thread = None
            self.ready.clear()
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._listen, name="stability-cache-hub", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.ready.set()
                    elif message["type"] == "message":
                        data = message["data"]
                        self.watchers.notify(data.decode() if isinstance(data, bytes) else data)
            except (RedisError, OSError, ValueError) as exc:
                self.ready.clear()
                logger.debug("cache wake-up listener lost Redis (%s); retrying", exc)
                self._stop.wait(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except (RedisError, OSError):
                        pass


class RedisHome(Home):
    """Protected values in the Redis of a django-redis cache.

    ``client`` is the raw redis-py client (the backend's own connection pool,
    with its short timeouts and no retries); ``encode``/``decode`` are the
    backend's, so the value is serialised exactly as django-redis serialises it.
    """

    def __init__(
        self,
        client: Any,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
        channel: str,
    ) -> None:
        self.client = client
        self.encode = encode
        self.decode = decode
        self.channel = channel
        self.scripts = {name: client.register_script(lua_source(name)) for name in SCRIPTS}
        self.hub = Hub(client, channel)

    @staticmethod
    def lock_key(keys: Keys) -> str:
        # Outside the cache's KEY_PREFIX namespace, so keys() and delete_pattern()
        # never see it.
        return f"stability:cache:lock:{keys.full}"

    @staticmethod
    def backoff_key(keys: Keys) -> str:
        return f"stability:cache:backoff:{keys.full}"

    def _keys(self, keys: Keys) -> list[str]:
        return [keys.full, self.lock_key(keys), self.backoff_key(keys)]

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
        raw, state, soft, delta, locked, backoff, now = self.scripts["read"](
            keys=self._keys(keys),
            args=[
                token,
                _ms(lease),
                "1" if lock else "0",
                repr(xfetch),
                repr(round(stale_if_error * _US)),
            ],
        )
        state = state.decode() if isinstance(state, bytes) else str(state)
        value = None
        if state != ABSENT:
            parts = split(raw)
            value = self.decode(raw if parts is None else parts[1])
        return Reading(
            state,
            value,
            int(soft) / _US,
            int(delta) / _US,
            int(now) / _US,
            bool(locked),
            bool(backoff),
        )

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
        payload = self.encode(value) if hard != 0 else b""
        stored = self.scripts["land"](
            keys=self._keys(keys),
            args=[
                token or "",
                payload,
                -1 if soft is None else _ms(soft),
                -1 if hard is None else (0 if hard == 0 else _ms(hard)),
                round(compute_time * _US),
                "" if started is None else repr(round(started * _US)),
                self.channel,
                keys.full,
                "1" if only_if_absent else "0",
            ],
        )
        return bool(stored)

    def release(self, keys: Keys, *, token: str, backoff: Backoff | None) -> None:
        self.scripts["release"](
            keys=[self.lock_key(keys), self.backoff_key(keys)],
            args=[
                token,
                0 if backoff is None else round(backoff.base * 1000),
                0 if backoff is None else round(backoff.cap * 1000),
                0 if backoff is None else _ms(backoff.keep),
                self.channel,
                keys.full,
            ],
        )

    def renew(self, keys: Keys, *, token: str, lease: float) -> bool:
        return bool(self.scripts["renew"](keys=[self.lock_key(keys)], args=[token, _ms(lease)]))

    def add_watcher(self, keys: Keys, watcher: Watcher) -> None:
        self.hub.add(keys.full, watcher)

    # What the backend's plain operations need -----------------------------------

    def probe(self, full: str) -> tuple[bool, float | None, float, int]:
        """``(exists, soft expiry or None for a plain value, server now, PTTL ms)``."""
        exists, soft, now, pttl = self.scripts["probe"](keys=[full])
        soft_value = None if soft in (b"", "") else int(soft) / _US
        return bool(exists), soft_value, int(now) / _US, int(pttl)

    def touch(self, full: str, timeout: float | None) -> bool:
        """Set a new expiry; for a protected value, a new soft expiry (see ``touch.lua``)."""
        timeout_ms = -1 if timeout is None else int(timeout * 1000)
        return bool(self.scripts["touch"](keys=[full], args=[timeout_ms]))
