"""URLs of the multi-process Stability test site: the test URLs, and views that make events."""

from __future__ import annotations

import os
import time

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from django_stability import circuit_breaker, rate_limit
from tests.urls import urlpatterns as base

#: Made at import, so that every worker has it (closed until tripped there).
DEPENDENCY = circuit_breaker("ops-dependency")


def pid(request: HttpRequest) -> JsonResponse:
    # Held a moment, so that the other worker takes the next connections.
    time.sleep(0.05)
    return JsonResponse({"pid": os.getpid()})


@rate_limit("ops-limited", rate="3/h", key="ip")
def limited(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


def trip(request: HttpRequest) -> JsonResponse:
    """Open the breaker in this worker only (process scope), as failures would."""
    DEPENDENCY.trip("tripped by the test")
    return JsonResponse({"pid": os.getpid()})


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    *base,
    path("ops/pid/", pid),
    path("ops/limited/", limited),
    path("ops/trip/", trip),
    path("ops/ok/", ok),
]
