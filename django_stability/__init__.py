"""django-stability: keeps a Django site up when the things around it fail.

The public face of the package. Names are added here as the parts land:
``rate_limit``, ``circuit_breaker``, ``bulkhead``, ``timeout``, ``guard``,
``cached``, ``background_job`` and the exceptions.
"""

from __future__ import annotations

from .cache.decorators import cached
from .exceptions import (
    CacheWaitTimeout,
    Overloaded,
    RateLimited,
    StabilityError,
    StoreUnavailable,
)

__all__ = [
    "CacheWaitTimeout",
    "Overloaded",
    "RateLimited",
    "StabilityError",
    "StoreUnavailable",
    "cached",
]

__version__ = "0.1.0.dev0"
