"""The stampede-protected cache: one recompute per expiry, stale while revalidating.

Public names: the backends (``StampedeProtectedRedisCache`` is the path to put
in ``CACHES``), the mixin for other backends, ``cached``, the policy spec, and
the counters. The modules behind them:

* ``policy``: ``CacheSpec`` and how a key finds its policy;
* ``envelope``: how a value is stored with its soft expiry and compute time;
* ``flow``: the decisions of one protected call, and its sync and async drivers;
* ``home``, ``redis_home``, ``backend_home``, ``failsafe``: where values and
  locks live (Redis with Lua and pub/sub; any backend through ``add``; this
  process), and the breaker that switches between them;
* ``protector``: get_or_set/get/set turned into plans; ``backends``: the Django
  backends; ``decorators``: ``@cached``; ``maintenance``: heartbeats and
  background refreshes; ``counters``; ``tasks``: the Celery refresh; ``admin``.
"""

from __future__ import annotations

# Imported with the app so that a Celery worker knows the refresh task.
from . import tasks  # noqa: F401
from .backends import (
    StampedeProtectedDjangoRedisCache,
    StampedeProtectedLocMemCache,
    StampedeProtectedRedisCache,
    StampedeProtectionMixin,
)
from .counters import counters, shared_counters
from .decorators import cached, protector_for
from .policy import CacheSpec

__all__ = [
    "CacheSpec",
    "StampedeProtectedDjangoRedisCache",
    "StampedeProtectedLocMemCache",
    "StampedeProtectedRedisCache",
    "StampedeProtectionMixin",
    "cached",
    "counters",
    "protector_for",
    "shared_counters",
]
