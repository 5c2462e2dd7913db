"""A Django REST framework throttle backed by django-stability's rate-limit policies.

Import this module only where DRF is installed (it imports ``rest_framework``)::

    REST_FRAMEWORK = {
        "DEFAULT_THROTTLE_CLASSES": ["django_stability.throttling.PolicyThrottle"],
    }

    class ReportView(APIView):
        throttle_policy = "reports"   # or DRF's throttle_scope

The policy is decided like any other (one round trip with every policy of the
request, the penalty box, fail open or closed, overrides, shadow mode), tuned
in the admin, and its RateLimit fields reach the response through
``StabilityMiddleware``. A scope with no policy yet takes its rate from DRF's
``DEFAULT_THROTTLE_RATES`` as the code default.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import PermissionDenied
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from .exceptions import ClientDenied
from .policies import registry
from .ratelimit import RateLimitSpec, Verdict, decide_request, parse_rate, policy


class PolicyThrottle(BaseThrottle):  # type: ignore[misc]
    """Throttles a view by the policy it names (``throttle_policy`` or ``throttle_scope``)."""

    #: A policy for every view throttled by this class (a subclass may set it).
    policy_name: str | None = None

    def __init__(self) -> None:
        self.verdict: Verdict | None = None

    def get_policy_name(self, request: Any, view: Any) -> str | None:
        return (
            self.policy_name
            or getattr(view, "throttle_policy", None)
            or getattr(view, "throttle_scope", None)
        )

    def allow_request(self, request: Any, view: Any) -> bool:
        name = self.get_policy_name(request, view)
        if not name:
            return True
        active = policy(name)
        if active is None:
            rate = (api_settings.DEFAULT_THROTTLE_RATES or {}).get(name)
            if not rate:
                return True
            count, period = parse_rate(_drf_rate(rate))
            registry.register(RateLimitSpec(name=name, rate=f"{count}/{period}s"))
            active = policy(name)
            if active is None:
                return True
        self.verdict = decide_request([active], request)
        if self.verdict.allowed:
            return True
        if isinstance(self.verdict.error, ClientDenied):
            raise PermissionDenied(self.verdict.error.message)
        return False

    def wait(self) -> float | None:
        """Seconds until the client may retry (DRF puts it in ``Retry-After``)."""
        if self.verdict is None or self.verdict.error is None:
            return None
        return self.verdict.retry_after


def _drf_rate(rate: str) -> str:
    """DRF writes ``100/minute`` or ``5/hour``; ours is ``100/m``: keep the first letter."""
    count, _, period = rate.partition("/")
    return f"{count}/{period.strip()[:1]}"
