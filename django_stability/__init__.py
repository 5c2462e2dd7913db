"""django-stability: keeps a Django site up when the things around it fail.

The public face of the package. Names are added here as the parts land:
``rate_limit``, ``circuit_breaker``, ``bulkhead``, ``timeout``, ``guard``,
``cached``, ``background_job`` and the exceptions.
"""

from __future__ import annotations

from .breaker import circuit_breaker
from .bulkhead import bulkhead
from .exceptions import (
    BreakerOpen,
    BulkheadFull,
    DeadlineExceeded,
    Overloaded,
    RateLimited,
    StabilityError,
    StoreUnavailable,
)
from .guard import guard
from .timeouts import timeout

__all__ = [
    "BreakerOpen",
    "BulkheadFull",
    "DeadlineExceeded",
    "Overloaded",
    "RateLimited",
    "StabilityError",
    "StoreUnavailable",
    "bulkhead",
    "circuit_breaker",
    "guard",
    "timeout",
]

__version__ = "0.1.0.dev0"
