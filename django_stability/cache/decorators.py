"""``@cached(name, ...)``: a function's result, computed once per expiry across every process."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

from .policy import CacheSpec
from .protector import Protector, TaskRef

F = TypeVar("F", bound=Callable[..., Any])


def _default_key(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    # repr() of arguments whose repr holds a memory address differs between
    # processes; such functions should pass key=.
    text = json.dumps([args, kwargs], sort_keys=True, default=repr, separators=(",", ":"))
    return f"{name}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _json_ready(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    try:
        json.dumps([args, kwargs])
    except (TypeError, ValueError):
        return False
    return True


def cached(
    name: str,
    *,
    ttl: float | None = None,
    key: Callable[..., str] | None = None,
    cache: str | None = None,
    **policy: Any,
) -> Callable[[F], F]:
    """Cache a function's result under the cache policy ``name``, stampede-protected.

    ``ttl`` and the other policy fields (``grace``, ``stale_if_error``,
    ``lease``, ``wait``, ``beta``, ``refresh`` ...) are the code defaults of the
    policy; settings and the admin override them. ``key`` builds the cache key
    from the arguments (default: the name and a hash of the arguments' JSON);
    ``cache`` is the alias (default ``STABILITY["CACHE_ALIAS"]``). Works on sync
    and async functions. The wrapper has ``cache_key(*args, **kwargs)``,
    ``invalidate(*args, **kwargs)`` and ``uncached`` (the function itself).
    """
    from ..policies import registry

    spec = CacheSpec.build(name, {**policy, "ttl": ttl} if ttl is not None else policy)
    registry.register(spec)

    def decorate(function: F) -> F:
        def cache_key(*args: Any, **kwargs: Any) -> str:
            return key(*args, **kwargs) if key is not None else _default_key(name, args, kwargs)

        def task_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskRef | None:
            path = f"{function.__module__}.{function.__qualname__}"
            if "<locals>" in path or not _json_ready(args, kwargs):
                return None
            return TaskRef(path, args, kwargs)

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                protector = protector_for(cache)
                return await protector.aget_or_set(
                    cache_key(*args, **kwargs),
                    lambda: function(*args, **kwargs),
                    policy=name,
                    task=task_for(args, kwargs),
                )

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(function)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                protector = protector_for(cache)
                return protector.get_or_set(
                    cache_key(*args, **kwargs),
                    lambda: function(*args, **kwargs),
                    policy=name,
                    task=task_for(args, kwargs),
                )

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> None:
            from django.core.cache import caches

            from ..conf import settings

            caches[cache or settings.CACHE_ALIAS].delete(cache_key(*args, **kwargs))

        wrapper.cache_key = cache_key
        wrapper.invalidate = invalidate
        wrapper.uncached = function
        wrapper.policy = name
        return cast(F, wrapper)

    return decorate


def protector_for(alias: str | None = None) -> Protector:
    """The stampede protection of the cache ``alias`` (default ``CACHE_ALIAS``).

    A protected backend brings its own; any other Django cache is protected
    through its ``add`` (with the limits of ``BackendHome``).
    """
    from django.core.cache import caches

    from ..conf import settings

    name = alias or settings.CACHE_ALIAS
    backend = caches[name]
    protector = getattr(backend, "protector", None)
    if isinstance(protector, Protector):
        return protector
    from .backends import plain_protector

    return plain_protector(name, backend)
