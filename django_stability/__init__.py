"""django-stability: keeps a Django site up when the things around it fail.

The public face of the package: the decorators and helpers of every part, and
the exceptions. The parts are imported on first use of one of their names, so
that importing the package (as ``INSTALLED_APPS`` does, before Django is set up)
loads nothing else and creates no import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .exceptions import (
    CacheWaitTimeout,
    ClientDenied,
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
    "CacheWaitTimeout",
    "ClientDenied",
    "Overloaded",
    "QueueFull",
    "RateLimited",
    "StabilityError",
    "StoreUnavailable",
    "TooManyJobs",
    "background_job",
    "cached",
    "concurrency_limit",
    "concurrency_slot",
    "feature_enabled",
    "policy_rate",
    "rate_limit",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__version__ = "0.1.0.dev0"
