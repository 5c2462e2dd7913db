"""django-stability: keeps a Django site up when the things around it fail.

The public face of the package. Names are added here as the parts land:
``rate_limit``, ``circuit_breaker``, ``bulkhead``, ``timeout``, ``guard``,
``cached``, ``background_job`` and the exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import ClientDenied, Overloaded, RateLimited, StabilityError, StoreUnavailable

if TYPE_CHECKING:
    from .ratelimit import policy_rate, rate_limit

__all__ = [
    "ClientDenied",
    "Overloaded",
    "RateLimited",
    "StabilityError",
    "StoreUnavailable",
    "policy_rate",
    "rate_limit",
]

#: Public names imported on first use, so that importing the package (as
#: INSTALLED_APPS does) loads no part before Django is set up.
_LAZY = {"rate_limit": "ratelimit", "policy_rate": "ratelimit"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__version__ = "0.1.0.dev0"
