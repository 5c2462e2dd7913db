"""django-stability: keeps a Django site up when the things around it fail.

The public face of the package. Names are added here as the parts land:
``rate_limit``, ``circuit_breaker``, ``bulkhead``, ``timeout``, ``guard``,
``cached``, ``background_job`` and the exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import Overloaded, RateLimited, StabilityError, StoreUnavailable

if TYPE_CHECKING:
    from .brownout import feature_enabled
    from .concurrency import concurrency_limit, concurrency_slot

__all__ = [
    "Overloaded",
    "RateLimited",
    "StabilityError",
    "StoreUnavailable",
    "concurrency_limit",
    "concurrency_slot",
    "feature_enabled",
]


def __getattr__(name: str) -> Any:
    # The parts register policy kinds and pull in Django's request machinery;
    # importing them on first use keeps ``import django_stability`` (done while
    # Django loads INSTALLED_APPS) light and free of import cycles.
    if name == "feature_enabled":
        from .brownout import feature_enabled

        return feature_enabled
    if name in ("concurrency_limit", "concurrency_slot"):
        from . import concurrency

        return getattr(concurrency, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0.dev0"
