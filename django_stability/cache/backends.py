"""The cache backends: django-redis with stampede protection, and a mixin for any backend.

``StampedeProtectedRedisCache`` is django-redis's ``RedisCache`` with protected
``get_or_set``/``aget_or_set`` and, for keys a cache policy names by prefix,
protected ``get``/``set``/``add``. Every other operation is django-redis's own;
values written by the protection carry a short header (see ``envelope.py``)
that every read path strips, so they read back as django-redis would read them.

``StampedeProtectionMixin`` gives the same protection to any Django backend,
with a lock made of the backend's atomic ``add`` and the limits listed in
``backend_home.py``.
"""

from __future__ import annotations

import functools
import math
import pickle
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.utils.module_loading import import_string
from django_redis.cache import CONNECTION_INTERRUPTED, omit_exception
from django_redis.cache import RedisCache as DjangoRedisRedisCache
from django_redis.client.default import _main_exceptions
from django_redis.exceptions import ConnectionInterrupted
from django_redis.pool import ConnectionFactory
from redis.exceptions import RedisError

from ..conf import settings, settings_reset
from ..store import StoreBreaker
from ..store.redis import no_retry
from .backend_home import BackendHome
from .envelope import split, unpack_tuple
from .failsafe import FailsafeHome
from .flow import MISS
from .home import LocalHome
from .protector import Protector, TaskRef
from .redis_home import RedisHome

_MISSING = object()
_homes: dict[tuple[Any, ...], Any] = {}
_homes_lock = threading.Lock()
# Bumped by reset_homes(), so that backend instances (one per thread, kept by
# Django) build their protector again on the new homes.
_generation = [0]
_aliases: dict[tuple[Any, ...], str | None] = {}


def _shared(fingerprint: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """One object per process for ``fingerprint`` (homes, breakers, fallbacks)."""
    found = _homes.get(fingerprint)
    if found is None:
        with _homes_lock:
            found = _homes.get(fingerprint)
            if found is None:
                found = _homes[fingerprint] = build()
    return found


def reset_homes(*args: Any, **kwargs: Any) -> None:
    """Forget every shared home (settings changed; tests). Stops their listeners."""
    with _homes_lock:
        for home in _homes.values():
            primary = getattr(home, "primary", None)
            hub = getattr(primary, "hub", None)
            if hub is not None:
                hub.stop()
        _homes.clear()
        _aliases.clear()
        _generation[0] += 1


settings_reset.connect(reset_homes, dispatch_uid="django_stability.cache.reset_homes")


def _breaker() -> StoreBreaker:
    return StoreBreaker(
        threshold=settings.CACHE_BREAKER_THRESHOLD, cooldown=settings.CACHE_BREAKER_COOLDOWN
    )


def _alias_of(backend: Any, location: Any) -> str | None:
    """The CACHES alias this backend was built from (for Celery refreshes), if one matches."""
    key = (type(backend), repr(location), backend.key_prefix)
    if key not in _aliases:
        _aliases[key] = _find_alias(backend, location)
    return _aliases[key]


def _find_alias(backend: Any, location: Any) -> str | None:
    for alias, config in settings.CACHES.items():
        try:
            cls = import_string(str(config.get("BACKEND", "")))
        except ImportError:
            continue
        if (
            cls is type(backend)
            and config.get("LOCATION", "") == location
            and config.get("KEY_PREFIX", "") == backend.key_prefix
        ):
            return str(alias)
    return None


class ProtectedConnectionFactory(ConnectionFactory):  # type: ignore[misc]
    """django-redis's connection factory, with no client retries and a pool of our own.

    django-redis keeps one pool per URL for the whole process, so a second cache
    on the same Redis would silently share the first one's timeouts; this
    factory keys its pools by URL and timeouts instead.
    """

    _protected_pools: dict[tuple[Any, ...], Any] = {}

    def get_or_create_connection_pool(self, params: dict[str, Any]) -> Any:
        key = (
            params["url"],
            params.get("socket_timeout"),
            params.get("socket_connect_timeout"),
            repr(sorted(self.pool_cls_kwargs.items())),
        )
        pool = self._protected_pools.get(key)
        if pool is None:
            pool = self._protected_pools[key] = self.get_connection_pool(params)
        return pool

    def get_connection_pool(self, params: dict[str, Any]) -> Any:
        params = dict(params)
        if "retry" not in self.pool_cls_kwargs:
            params["retry"] = no_retry()
        return super().get_connection_pool(params)


@functools.cache
def _envelope_aware(client_cls: type) -> type:
    """The django-redis client class, reading protected values as their plain value."""

    class EnvelopeAwareClient(client_cls):  # type: ignore[misc]
        def decode(self, value: Any) -> Any:
            if isinstance(value, bytes):
                parts = split(value)
                if parts is not None:
                    value = parts[1]
            return super().decode(value)

    EnvelopeAwareClient.__name__ = f"EnvelopeAware{client_cls.__name__}"
    EnvelopeAwareClient.__qualname__ = EnvelopeAwareClient.__name__
    return EnvelopeAwareClient


def _encode_bytes(encode: Callable[[Any], Any]) -> Callable[[Any], bytes]:
    def run(value: Any) -> bytes:
        encoded = encode(value)
        return str(encoded).encode() if isinstance(encoded, int) else cast(bytes, encoded)

    return run


class ProtectedGetOrSet:
    """``get_or_set`` and ``aget_or_set`` through the backend's ``protector``.

    Shared by the Redis backend and the mixin for other backends.
    """

    @property
    def protector(self) -> Protector:
        raise NotImplementedError

    def get_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        policy: str | None = None,
        task: TaskRef | None = None,
    ) -> Any:
        """Django's ``get_or_set``, computing a missing or expired value once (see the docs).

        ``policy`` names the cache policy (else the key's prefix, else
        "default"); Redis failures never reach the caller.
        """
        return self.protector.get_or_set(key, default, timeout, version, policy, task)

    async def aget_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        policy: str | None = None,
        task: TaskRef | None = None,
    ) -> Any:
        """``get_or_set`` for async code; ``default`` may be an async callable."""
        return await self.protector.aget_or_set(key, default, timeout, version, policy, task)


class StampedeProtectedRedisCache(ProtectedGetOrSet, DjangoRedisRedisCache):  # type: ignore[misc]
    """django-redis's ``RedisCache`` with stampede protection.

    Use it as the ``BACKEND`` of a django-redis cache. ``get_or_set`` and
    ``aget_or_set`` (and ``@cached``) compute a missing or expired value once,
    whatever the number of callers and processes; keys named by a cache
    policy's ``key_prefixes`` are protected through ``get``/``set``/``add`` too.
    Everything else is django-redis. The connection gets short timeouts
    (``CACHE_SOCKET_TIMEOUT``, ``CACHE_CONNECT_TIMEOUT``) unless ``OPTIONS`` set
    them, and no client retries.
    """

    _client_cls: type

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        params = dict(params)
        options = dict(params.get("OPTIONS") or {})
        options.setdefault("SOCKET_TIMEOUT", settings.CACHE_SOCKET_TIMEOUT)
        options.setdefault("SOCKET_CONNECT_TIMEOUT", settings.CACHE_CONNECT_TIMEOUT)
        options.setdefault(
            "CONNECTION_FACTORY", "django_stability.cache.backends.ProtectedConnectionFactory"
        )
        params["OPTIONS"] = options
        super().__init__(server, params)
        self._client_cls = _envelope_aware(self._client_cls)
        self._fingerprint = (type(self).__qualname__, str(server), self.key_prefix, repr(options))
        self._protector: Protector | None = None
        self._protector_generation = -1

    # The protection ---------------------------------------------------------------

    @property
    def protector(self) -> Protector:
        """The stampede protection of this cache (its home is shared by the process)."""
        if self._protector is None or self._protector_generation != _generation[0]:
            self._protector_generation = _generation[0]
            home = _shared(self._fingerprint, self._build_home)
            self._protector = Protector(
                home, self.client.make_key, self.default_timeout, _alias_of(self, self._server)
            )
        return self._protector

    def _build_home(self) -> FailsafeHome:
        client = self.client
        raw = client.get_client(write=True)
        channel = f"django-stability:cache:landed:{self.key_prefix}"
        primary = RedisHome(raw, _encode_bytes(client.encode), client.decode, channel)
        fallback = LocalHome(client.encode, client.decode, settings.CACHE_LOCAL_MAX_KEYS)
        return FailsafeHome(
            primary, fallback, _breaker(), (RedisError, OSError), name=str(self._server)
        )

    # Plain operations that must see through the envelope ------------------------------

    def get(
        self, key: Any, default: Any = None, version: int | None = None, client: Any = None
    ) -> Any:
        spec = self.protector.policy_for(key) if client is None else None
        if spec is not None:
            value = self.protector.get(key, version, spec)
            return default if value is MISS else value
        return super().get(key, default, version, client)

    @omit_exception(return_value=CONNECTION_INTERRUPTED)  # type: ignore[untyped-decorator]
    def _get(self, key: Any, default: Any, version: int | None, client: Any) -> Any:
        base = self.client
        redis_client = client or base.get_client(write=False)
        try:
            raw = redis_client.get(base.make_key(key, version=version))
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=redis_client) from exc
        if raw is None or _stale_bytes(raw):
            return default
        return base.decode(raw)

    @omit_exception(return_value={})  # type: ignore[untyped-decorator]
    def get_many(
        self, keys: Iterable[Any], version: int | None = None, client: Any = None
    ) -> dict[Any, Any]:
        keys = list(keys)
        if not keys:
            return {}
        base = self.client
        redis_client = client or base.get_client(write=False)
        by_full = {base.make_key(k, version=version): k for k in keys}
        try:
            raws = redis_client.mget(*by_full)
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=redis_client) from exc
        return {
            by_full[full]: base.decode(raw)
            for full, raw in zip(by_full, raws, strict=True)
            if raw is not None and not _stale_bytes(raw)
        }

    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        client: Any = None,
        nx: bool = False,
        xx: bool = False,
    ) -> Any:
        spec = self.protector.policy_for(key) if client is None and not xx else None
        if spec is not None:
            return self.protector.set(key, value, timeout, version, spec, only_if_absent=nx)
        return super().set(key, value, timeout, version=version, client=client, nx=nx, xx=xx)

    def add(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        client: Any = None,
    ) -> Any:
        spec = self.protector.policy_for(key) if client is None else None
        if spec is not None:
            return self.protector.set(key, value, timeout, version, spec, only_if_absent=True)
        return super().add(key, value, timeout, version=version, client=client)

    def _probe(self, key: Any, version: int | None) -> tuple[bool, float | None, float, int]:
        base = self.client
        home = self.protector.home.primary
        assert isinstance(home, RedisHome)
        try:
            return home.probe(str(base.make_key(key, version=version)))
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=home.client) from exc

    @omit_exception  # type: ignore[untyped-decorator]
    def has_key(self, key: Any, version: int | None = None, client: Any = None) -> bool:
        exists, soft, now, _ = self._probe(key, version)
        return exists and (soft is None or soft == 0 or soft > now)

    @omit_exception  # type: ignore[untyped-decorator]
    def pttl(self, key: Any, version: int | None = None, client: Any = None) -> int | None:
        exists, soft, now, pttl = self._probe(key, version)
        if not exists:
            return 0
        if soft is None:
            return None if pttl == -1 else max(0, pttl)
        if soft == 0:
            return None
        return max(0, math.floor((soft - now) * 1000))

    @omit_exception  # type: ignore[untyped-decorator]
    def ttl(self, key: Any, version: int | None = None, client: Any = None) -> int | None:
        exists, soft, now, pttl = self._probe(key, version)
        if not exists:
            return 0
        if soft is None:
            # What Redis's TTL answers: the PTTL rounded to the nearest second.
            return None if pttl == -1 else max(0, (pttl + 500) // 1000)
        if soft == 0:
            return None
        return max(0, math.floor(soft - now + 0.5))

    @omit_exception  # type: ignore[untyped-decorator]
    def touch(
        self,
        key: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        client: Any = None,
    ) -> bool:
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        home = self.protector.home.primary
        assert isinstance(home, RedisHome)
        try:
            return home.touch(str(self.client.make_key(key, version=version)), timeout)
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=home.client) from exc

    def delete(
        self, key: Any, version: int | None = None, client: Any = None, **kwargs: Any
    ) -> Any:
        self.protector.home.fallback.delete(str(self.client.make_key(key, version=version)))
        return super().delete(key, version=version, client=client, **kwargs)

    def clear(self) -> Any:
        self.protector.home.fallback.clear()
        return super().clear()


def _stale_bytes(raw: Any) -> bool:
    """Is ``raw`` a protected value past its soft expiry (by this machine's clock)?"""
    if not isinstance(raw, bytes):
        return False
    parts = split(raw)
    if parts is None:
        return False
    soft = parts[0].soft_expiry
    return 0 < soft <= time.time()


class StampedeProtectionMixin(ProtectedGetOrSet):
    """Stampede protection for any Django cache backend: put it before the backend class.

    ``class MyCache(StampedeProtectionMixin, PyMemcacheCache): ...``. The lock
    is the backend's atomic ``add``, so it is as shared as the backend: across
    processes on memcached and Redis, per process on local memory. See
    ``backend_home.py`` for what is weaker than the Redis backend.
    """

    _stability_protector: Protector | None = None
    _stability_generation = -1

    # Annotations of what the Django backend provides.
    key_prefix: str
    default_timeout: float | None
    make_key: Callable[..., str]

    @property
    def protector(self) -> Protector:
        """The stampede protection of this cache instance."""
        if self._stability_protector is None or self._stability_generation != _generation[0]:
            self._stability_generation = _generation[0]
            location = getattr(self, "_stability_location", "")
            fingerprint = (type(self).__qualname__, repr(location), self.key_prefix)
            shared = _shared(fingerprint, self._stability_shared)
            home = FailsafeHome(
                BackendHome(self), shared[0], shared[1], (Exception,), name=str(location)
            )
            self._stability_protector = Protector(
                home, self.make_key, self.default_timeout, _alias_of(self, location)
            )
        return self._stability_protector

    def _stability_shared(self) -> tuple[LocalHome, StoreBreaker]:
        local = LocalHome(pickle.dumps, pickle.loads, settings.CACHE_LOCAL_MAX_KEYS)
        return local, _breaker()

    # What BackendHome calls: the backend's own operations, below the protection.

    def raw_get(self, key: str, default: Any, version: int | None) -> Any:
        return super().get(key, default, version=version)  # type: ignore[misc]

    def raw_set(self, key: str, value: Any, timeout: float | None, version: int | None) -> Any:
        return super().set(key, value, timeout=timeout, version=version)  # type: ignore[misc]

    def raw_add(self, key: str, value: Any, timeout: float | None, version: int | None) -> bool:
        return bool(super().add(key, value, timeout=timeout, version=version))  # type: ignore[misc]

    def raw_delete(self, key: str, version: int | None) -> Any:
        return super().delete(key, version=version)  # type: ignore[misc]

    # The protected API.

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        spec = self.protector.policy_for(key)
        if spec is not None:
            value = self.protector.get(key, version, spec)
            return default if value is MISS else value
        return _fresh_or(self.raw_get(key, _MISSING, version), default)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        keys = list(keys)
        base_get_many = super().get_many  # type: ignore[misc]
        if getattr(base_get_many, "__func__", None) is BaseCache.get_many:
            # BaseCache would call our get() per key, protecting what get_many must not.
            found = {
                k: v for k in keys if (v := self.raw_get(k, _MISSING, version)) is not _MISSING
            }
        else:
            found = base_get_many(keys, version=version)
        result = {}
        for key, stored in found.items():
            value = _fresh_or(stored, _MISSING)
            if value is not _MISSING:
                result[key] = value
        return result

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return _fresh_or(self.raw_get(key, _MISSING, version), _MISSING) is not _MISSING

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> Any:
        spec = self.protector.policy_for(key)
        if spec is not None:
            self.protector.set(key, value, timeout, version, spec)
            return None
        return self.raw_set(key, value, timeout, version)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        spec = self.protector.policy_for(key)
        if spec is not None:
            return self.protector.set(key, value, timeout, version, spec, only_if_absent=True)
        return self.raw_add(key, value, timeout, version)

    def delete(self, key: Any, version: int | None = None) -> Any:
        self.protector.home.fallback.delete(str(self.make_key(key, version=version)))
        return self.raw_delete(key, version)


def _fresh_or(stored: Any, default: Any) -> Any:
    if stored is _MISSING:
        return default
    unpacked = unpack_tuple(stored)
    if unpacked is None:
        return stored
    header, value = unpacked
    if 0 < header.soft_expiry <= time.time():
        return default
    return value


class StampedeProtectedLocMemCache(StampedeProtectionMixin, LocMemCache):
    """Django's local-memory cache with stampede protection (per process: see the limits)."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self._stability_location = name
        super().__init__(name, params)


class StampedeProtectedDjangoRedisCache(StampedeProtectionMixin, DjangoRedisCache):
    """Django's own ``RedisCache`` with stampede protection through its atomic ``add``."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        self._stability_location = server
        super().__init__(server, params)


class _PlainBackend:
    """A cache that has no protection of its own, seen as the raw operations of a home."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def raw_get(self, key: str, default: Any, version: int | None) -> Any:
        return self.backend.get(key, default, version=version)

    def raw_set(self, key: str, value: Any, timeout: float | None, version: int | None) -> Any:
        return self.backend.set(key, value, timeout=timeout, version=version)

    def raw_add(self, key: str, value: Any, timeout: float | None, version: int | None) -> bool:
        return bool(self.backend.add(key, value, timeout=timeout, version=version))

    def raw_delete(self, key: str, version: int | None) -> Any:
        return self.backend.delete(key, version=version)


def plain_protector(alias: str, backend: Any) -> Protector:
    """Protection for a cache whose backend has none (``@cached`` on a plain cache)."""

    def build() -> tuple[LocalHome, StoreBreaker]:
        return LocalHome(pickle.dumps, pickle.loads, settings.CACHE_LOCAL_MAX_KEYS), _breaker()

    local, breaker = _shared(("plain", alias), build)
    home = FailsafeHome(BackendHome(_PlainBackend(backend)), local, breaker, (Exception,), alias)
    return Protector(home, backend.make_key, backend.default_timeout, alias)
