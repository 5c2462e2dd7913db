"""The JSON status, the health endpoints and the Prometheus metrics endpoint.

Who may read what:

* the JSON status: a signed-in staff user with the ``view_dashboard``
  permission (the Stability page's), or a client sending
  ``Authorization: Bearer <DASHBOARD_STATUS_TOKEN>``;
* the metrics: the same staff users, or ``Bearer <METRICS_TOKEN>``, or anyone
  when ``METRICS_ALLOW_ANONYMOUS`` is True;
* liveness and readiness: anyone (load balancers do not sign in); they say
  no more than "alive", "ready" or "not ready, shedding".

Anonymous callers get 401 with ``WWW-Authenticate: Bearer``; signed-in users
without the permission, and wrong tokens, get 403. Nothing is ever served
from a cache (``Cache-Control: no-store``).
"""

from __future__ import annotations

import hmac
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from .conf import settings

#: The permission that opens the Stability page and the JSON status.
DASHBOARD_PERMISSION = "django_stability.view_dashboard"
#: The admission policy, in code, that gives the health and metrics endpoints the critical class.
ENDPOINTS_POLICY = "stability-endpoints"


def may_see_dashboard(user: Any) -> bool:
    """A signed-in, active staff user with the dashboard permission."""
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and user.is_active
        and user.is_staff
        and user.has_perm(DASHBOARD_PERMISSION)
    )


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(given: str | None, expected: str | None) -> bool:
    """True when a token is configured and ``given`` is it (compared in constant time)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _json(data: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status, json_dumps_params={"separators": (",", ":")})
    response["Cache-Control"] = "no-store"
    return response


def refusal(request: HttpRequest, token: str | None) -> HttpResponse | None:
    """None when the caller may read; else the 401 or 403 to answer."""
    given = bearer_token(request)
    if token_matches(given, token) or may_see_dashboard(getattr(request, "user", None)):
        return None
    user = getattr(request, "user", None)
    if given is None and not getattr(user, "is_authenticated", False):
        response = _json({"detail": "Sign in as staff, or send a bearer token."}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="django-stability"'
        return response
    return _json({"detail": "You may not read the stability status."}, status=403)


@require_safe
def status(request: HttpRequest) -> HttpResponse:
    """Every protection's live state, as JSON (``status.collect()``)."""
    refused = refusal(request, settings.DASHBOARD_STATUS_TOKEN)
    if refused is not None:
        return refused
    from .status import collect

    return _json(collect())


def not_ready_classes() -> list[str]:
    """The classes at or above ``HEALTH_NOT_READY_WHEN_SHEDDING`` that this process sheds now.

    Shedding now: over its in-flight share (until the hysteresis lets the class
    in again), or for waiting upstream too long (its own backlog) within the
    last ``SHEDDING_BROWNOUT_HOLD`` seconds. Refusals by cluster-wide limits
    do not count: every process would refuse them alike.
    """
    from .events import queue_time_shed_within
    from .shedding import PRIORITIES, RANK, controller

    worst = RANK[settings.HEALTH_NOT_READY_WHEN_SHEDDING]
    shedding = controller.snapshot()["shedding"]
    backlog = queue_time_shed_within(settings.SHEDDING_BROWNOUT_HOLD)
    return [
        name
        for name in PRIORITIES
        if RANK[name] <= worst and (shedding.get(name) or name in backlog)
    ]


@require_safe
def live(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. It checks nothing else, so that a database or Redis
    outage never makes a load balancer restart every process at once."""
    return _json({"status": "alive"})


@require_safe
def ready(request: HttpRequest) -> HttpResponse:
    """Readiness: 503 while this process sheds requests of ``HEALTH_NOT_READY_WHEN_SHEDDING``
    or a more important class, so that the load balancer sends its traffic elsewhere."""
    classes = not_ready_classes()
    if classes:
        response = _json({"status": "not_ready", "reason": "shedding", "classes": classes}, 503)
        response["Retry-After"] = str(max(1, round(settings.SHEDDING_RETRY_AFTER)))
        return response
    return _json({"status": "ready"})


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of every metric (see ``django_stability.metrics``)."""
    from . import metrics as prometheus

    if not prometheus.enabled():
        detail = (
            "Metrics are off (STABILITY['METRICS_ENABLED'] is False)."
            if settings.METRICS_ENABLED is False
            else "Metrics need prometheus_client: pip install 'django-stability[prometheus]'."
        )
        return _json({"detail": detail}, status=404)
    if not settings.METRICS_ALLOW_ANONYMOUS:
        refused = refusal(request, settings.METRICS_TOKEN)
        if refused is not None:
            return refused
    body, content_type = prometheus.exposition()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def register_endpoint_priority() -> None:
    """Give the health and metrics endpoints the critical class, as a code default.

    A load balancer's probe that is shed takes the process out of rotation (or,
    for liveness, gets it restarted) exactly when it is busiest. The admin may
    override this policy (``stability-endpoints``) like any other.
    """
    from .policies import registry
    from .shedding import AdmissionSpec

    if registry.code_default(AdmissionSpec, ENDPOINTS_POLICY) is None:
        registry.register(
            AdmissionSpec(
                name=ENDPOINTS_POLICY,
                url_names=(
                    "django_stability:health-live",
                    "django_stability:health-ready",
                    "django_stability:metrics",
                ),
                priority="critical",
            )
        )
