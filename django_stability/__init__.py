"""django-stability: keeps a Django site up when the things around it fail.

The public face of the package. Names are added here as the parts land:
``rate_limit``, ``circuit_breaker``, ``bulkhead``, ``timeout``, ``guard``,
``cached``, ``background_job`` and the exceptions.
"""

from __future__ import annotations

from .exceptions import (
    Overloaded,
    QueueFull,
    RateLimited,
    StabilityError,
    StoreUnavailable,
    TooManyJobs,
)
from .jobs import background_job

__all__ = [
    "Overloaded",
    "QueueFull",
    "RateLimited",
    "StabilityError",
    "StoreUnavailable",
    "TooManyJobs",
    "background_job",
]

__version__ = "0.1.0.dev0"
