"""Shared state for every protection: one contract, two homes.

``get_store()`` answers the process-wide store built from the settings:

* ``RedisStore`` behind ``FailsafeStore`` when Redis is configured (``STORE_URL``,
  or a django-redis / Django Redis cache under ``STORE_CACHE_ALIAS``): shared by
  every process, falling back to the local store while Redis is unreachable;
* ``LocalStore`` otherwise: in-process, the embedded default.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..conf import settings, settings_reset
from .base import LeaseResult, Limit, LimitResult, QueueResult, RateDecision, Store
from .failsafe import FailsafeStore, StoreBreaker
from .local import LocalStore
from .redis import RedisStore, client_from_url, client_like

__all__ = [
    "FailsafeStore",
    "LeaseResult",
    "Limit",
    "LimitResult",
    "LocalStore",
    "QueueResult",
    "RateDecision",
    "RedisStore",
    "Store",
    "StoreBreaker",
    "build_store",
    "get_store",
    "reset_store",
]

_store: Store | None = None
_lock = threading.Lock()


def get_store() -> Store:
    """The store of this process, built on first use from ``settings.STABILITY``."""
    global _store
    store = _store
    if store is None:
        with _lock:
            if _store is None:
                _store = build_store()
            store = _store
    return store


def reset_store(*args: Any, **kwargs: Any) -> None:
    """Drop the process-wide store; the next ``get_store()`` builds a new one."""
    global _store
    _store = None


def redis_client() -> Any | None:
    """A redis-py client for the store with its own timeouts, or None when none is configured."""
    timeouts = {
        "socket_timeout": settings.STORE_SOCKET_TIMEOUT,
        "connect_timeout": settings.STORE_CONNECT_TIMEOUT,
    }
    if settings.STORE_URL:
        return client_from_url(settings.STORE_URL, **timeouts)
    alias = settings.STORE_CACHE_ALIAS
    config = settings.CACHES.get(alias)
    if not config:
        return None
    kind = cache_kind(config)
    if kind == "django-redis":
        from django_redis import get_redis_connection

        return client_like(get_redis_connection(alias), **timeouts)
    if kind == "django":
        location = config.get("LOCATION")
        url = location[0] if isinstance(location, (list, tuple)) else location
        if url:
            return client_from_url(str(url).split(",")[0], **timeouts)
    return None


def cache_backend(config: Any) -> type | None:
    """The backend class a ``CACHES`` entry names, or None when it cannot be imported."""
    try:
        backend: type = import_string(str(config.get("BACKEND", "")))
    except ImportError:
        return None
    return backend


def cache_kind(config: Any) -> str:
    """'django-redis', 'django' (Django's own Redis cache), 'shared', 'local' or 'unknown'."""
    backend = cache_backend(config)
    if backend is None:
        return "unknown"
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.locmem import LocMemCache
    from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

    try:
        from django_redis.cache import RedisCache as DjangoRedisRedisCache
    except ImportError:  # pragma: no cover - django-redis is a dependency
        DjangoRedisRedisCache = None
    if DjangoRedisRedisCache is not None and issubclass(backend, DjangoRedisRedisCache):
        return "django-redis"
    if issubclass(backend, DjangoRedisCache):
        return "django"
    if issubclass(backend, (LocMemCache, DummyCache)):
        return "local"
    return "shared"


def build_store() -> Store:
    """A new store as the settings describe it."""
    mode = settings.STORE
    local = LocalStore(max_keys=settings.LOCAL_STORE_MAX_KEYS)
    if mode == "local":
        return local
    client = redis_client()
    if client is None:
        if mode == "redis":
            raise ImproperlyConfigured(
                "settings.STABILITY['STORE'] is 'redis' but no Redis is configured: set "
                "STABILITY['STORE_URL'] or point STABILITY['STORE_CACHE_ALIAS'] at a "
                "django-redis cache."
            )
        return local
    breaker = StoreBreaker(
        threshold=settings.STORE_BREAKER_THRESHOLD, cooldown=settings.STORE_BREAKER_COOLDOWN
    )
    return FailsafeStore(RedisStore(client, prefix=settings.STORE_KEY_PREFIX), local, breaker)


settings_reset.connect(reset_store, dispatch_uid="django_stability.store.reset")
os.register_at_fork(after_in_child=reset_store)
