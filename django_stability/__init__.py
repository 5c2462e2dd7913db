"""django-stability: keeps a Django site up when the things around it fail.

The public face of the package: the decorators and helpers of every part, and
the exceptions. Most parts are imported on first use of one of their names, so
that importing the package (as ``INSTALLED_APPS`` does, before Django is set up)
loads little and creates no import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .exceptions import (
    BreakerOpen,
    BulkheadFull,
    CacheWaitTimeout,
    ClientDenied,
    DeadlineExceeded,
    Overloaded,
    QueueFull,
    RateLimited,
    StabilityError,
    StoreUnavailable,
    TooManyJobs,
)

if TYPE_CHECKING:
    from .brownout import feature_enabled
    from .cache import cached
    from .concurrency import concurrency_limit, concurrency_slot
    from .jobs import background_job
    from .ratelimit import policy_rate, rate_limit

__all__ = [
    "BreakerOpen",
    "BulkheadFull",
    "CacheWaitTimeout",
    "ClientDenied",
    "DeadlineExceeded",
    "Overloaded",
    "QueueFull",
    "RateLimited",
    "StabilityError",
    "StoreUnavailable",
    "TooManyJobs",
    "background_job",
    "bulkhead",
    "cached",
    "circuit_breaker",
    "concurrency_limit",
    "concurrency_slot",
    "feature_enabled",
    "guard",
    "policy_rate",
    "rate_limit",
    "timeout",
]

#: Public name -> the module of this package that defines it.
_LAZY = {
    "rate_limit": "ratelimit",
    "policy_rate": "ratelimit",
    "feature_enabled": "brownout",
    "concurrency_limit": "concurrency",
    "concurrency_slot": "concurrency",
    "cached": "cache",
    "background_job": "jobs",
}


# ``bulkhead`` and ``guard`` are both modules and the public functions they
# define; importing them here, once, makes the package attribute the function
# (a later import of the module finds it loaded and leaves the attribute alone).
from .breaker import circuit_breaker  # noqa: E402
from .bulkhead import bulkhead  # noqa: E402
from .guard import guard  # noqa: E402
from .timeouts import timeout  # noqa: E402


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__version__ = "0.1.0.dev0"
