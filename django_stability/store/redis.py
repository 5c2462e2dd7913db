"""The Redis home of the store: one Lua script per decision, on the server's clock.

Every decision is a single ``EVALSHA`` (redis-py loads a script on first use
and again after ``NOSCRIPT``), so it costs one round trip. Keys carry a hash tag
so that every script also runs on Redis Cluster: single-key operations tag the
whole key (spreading over the cluster); the rate limits of one request, decided
together, share the tag ``{rl}`` and so live on one shard.

The client built here has its own short connect and read timeouts and no
client-side retries: this store is an integration point like any other, and
``FailsafeStore`` answers from the local store when it fails.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .base import LeaseResult, Limit, LimitResult, QueueResult, RateDecision, Store

_US = 1_000_000.0


@cache
def lua_source(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped with the package."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


def no_retry() -> Retry:
    """A retry policy that never retries: the store fails fast and falls back."""
    return Retry(NoBackoff(), 0)


def client_from_url(url: str, *, socket_timeout: float, connect_timeout: float) -> Any:
    """A redis-py client for ``url`` with the store's timeouts and no retries."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=no_retry(),
        health_check_interval=0,
    )


def client_like(base: Any, *, socket_timeout: float, connect_timeout: float) -> Any:
    """A client on the same server as ``base`` (e.g. a django-redis connection), with our timeouts.

    Only plain connection pools can be cloned; for others (Sentinel) the base
    client is returned as it is, and ``checks.W005`` says so.
    """
    pool = base.connection_pool
    if type(pool) not in (redis.ConnectionPool, redis.BlockingConnectionPool):
        return base
    # Keep what says where and how to connect; drop what redis-py derives per pool.
    kwargs = {
        key: value
        for key, value in pool.connection_kwargs.items()
        if not key.startswith(("maint_notifications", "orig_"))
    }
    kwargs.update(
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=no_retry(),
        health_check_interval=0,
    )
    new_pool = redis.ConnectionPool(
        connection_class=pool.connection_class, max_connections=pool.max_connections, **kwargs
    )
    return redis.Redis(connection_pool=new_pool)


class RedisStore(Store):
    """A ``Store`` shared by every process through one Redis (or Redis Cluster)."""

    kind = "redis"

    def __init__(self, client: Any, prefix: str = "stability") -> None:
        self.client = client
        self.prefix = prefix
        self._rate_prefix = self.rate_key("")
        self._args: dict[tuple[Any, ...], bytes] = {}
        self._scripts = {
            name: client.register_script(lua_source(name))
            for name in (
                "rate_limit",
                "rate_limited",
                "rate_reset",
                "lease_acquire",
                "lease_renew",
                "lease_release",
                "lease_count",
                "compare_and_set",
                "incr",
                "waiting_room",
            )
        }

    def key(self, key: str) -> str:
        """The Redis key for a single-key operation (its own hash slot)."""
        return f"{self.prefix}:{{{key}}}"

    def rate_key(self, key: str) -> str:
        """The Redis key of a rate counter; all share one hash slot."""
        return f"{self.prefix}:{{rl}}:{key}"

    def track_key(self, track: str) -> str:
        """The Redis key of a "limited now" set; in the rate counters' hash slot."""
        return self.rate_key(f"track:{track}")

    def _limit_arg(self, limit: Limit, track: int) -> bytes:
        """The packed argument of one limit, memoised (requests repeat the same few)."""
        memo = (limit.limit, limit.period, limit.burst, limit.cost, limit.enforce, track)
        arg = self._args.get(memo)
        if arg is None:
            interval = limit.interval * _US
            arg = (
                f"{interval!r} {interval * limit.burst!r} {limit.cost} "
                f"{1 if limit.enforce else 0} {track}"
            ).encode()
            if len(self._args) > 4096:
                self._args.clear()
            self._args[memo] = arg
        return arg

    def rate_limit(self, limits: Sequence[Limit]) -> RateDecision:
        if not limits:
            return RateDecision(True, ())
        prefix = self._rate_prefix
        keys: list[bytes | str] = [prefix + limit.key for limit in limits]
        tracks: dict[str, int] = {}
        args: list[bytes | int] = [len(limits), self.tracked_keys]
        for limit in limits:
            track = 0
            if limit.track:
                track = tracks.get(limit.track, 0)
                if not track:
                    keys.append(self.track_key(limit.track))
                    track = tracks[limit.track] = len(keys)
            args.append(self._limit_arg(limit, track))
        script = self._scripts["rate_limit"]
        try:
            # EVALSHA straight away (the hot path); redis-py's Script wrapper adds little
            # but copies, and the reload on NOSCRIPT is all it would do for us here.
            reply = self.client.evalsha(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            reply = script(keys=keys, args=args)
        results = []
        for i, limit in enumerate(limits):
            allowed, remaining, retry_us, reset_us = reply[1 + 4 * i : 5 + 4 * i]
            results.append(
                LimitResult(limit, bool(allowed), int(remaining), retry_us / _US, reset_us / _US)
            )
        return RateDecision(bool(reply[0]), tuple(results))

    def limited_keys(self, track: str, count: int = 100) -> list[tuple[str, float]]:
        reply = self._scripts["rate_limited"](keys=[self.track_key(track)], args=[count])
        strip = len(self.rate_key(""))
        found = []
        for i in range(0, len(reply), 2):
            member = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
            found.append((member[strip:], max(0.0, float(reply[i + 1]) / 1000)))
        return found

    def reset_limits(self, keys: Sequence[str], track: str | None = None) -> int:
        if not keys:
            return 0
        track_key = self.track_key(track) if track else self.rate_key("track:")
        return int(self._scripts["rate_reset"](keys=[track_key, *[self.rate_key(k) for k in keys]]))

    def acquire_lease(self, key: str, holder: str, limit: int, ttl: float) -> LeaseResult:
        granted, count, wait_us = self._scripts["lease_acquire"](
            keys=[self.key(key)], args=[holder, limit, math.ceil(ttl * _US)]
        )
        return LeaseResult(bool(granted), int(count), wait_us / _US)

    def renew_lease(self, key: str, holder: str, ttl: float) -> bool:
        return bool(
            self._scripts["lease_renew"](keys=[self.key(key)], args=[holder, math.ceil(ttl * _US)])
        )

    def release_lease(self, key: str, holder: str) -> bool:
        return bool(self._scripts["lease_release"](keys=[self.key(key)], args=[holder]))

    def count_leases(self, key: str) -> int:
        return int(self._scripts["lease_count"](keys=[self.key(key)]))

    def wait_in_line(
        self, key: str, ticket: str, limit: int, active_ttl: float, queue_ttl: float
    ) -> QueueResult:
        # The admitted set is the lease set of ``key``; the line lives beside it
        # under the same hash tag, so one script on one shard sees all three.
        active = self.key(key)
        admitted, place, count, waiting = self._scripts["waiting_room"](
            keys=[active, f"{active}:line", f"{active}:deadlines"],
            args=[ticket, limit, math.ceil(active_ttl * _US), math.ceil(queue_ttl * _US)],
        )
        return QueueResult(bool(admitted), int(place), int(count), int(waiting))

    def get(self, key: str) -> str | None:
        value = self.client.get(self.key(key))
        return None if value is None else value.decode() if isinstance(value, bytes) else value

    def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        done = self.client.set(
            self.key(key), value, px=max(1, math.ceil(ttl * 1000)), nx=only_if_absent
        )
        return bool(done)

    def compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        args = [
            expected or "",
            value,
            max(1, math.ceil(ttl * 1000)),
            "1" if expected is None else "0",
        ]
        return bool(self._scripts["compare_and_set"](keys=[self.key(key)], args=args))

    def delete(self, key: str) -> bool:
        return bool(self.client.delete(self.key(key)))

    def incr(self, key: str, amount: int = 1, ttl: float = 60.0) -> int:
        return int(
            self._scripts["incr"](
                keys=[self.key(key)], args=[amount, max(1, math.ceil(ttl * 1000))]
            )
        )

    def ping(self) -> float:
        start = time.perf_counter()
        self.client.ping()
        return time.perf_counter() - start
