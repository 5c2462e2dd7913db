"""Views that call guarded dependencies (breaker, bulkhead, guard tests)."""

from __future__ import annotations

import os

import requests
from django.http import HttpRequest, HttpResponse, JsonResponse

from django_stability import BreakerOpen, circuit_breaker
from django_stability.outbound import session

#: The dependency the gunicorn test hangs; set by the test through the environment.
HUNG_URL = os.environ.get("STABILITY_TEST_HUNG_URL", "http://127.0.0.1:9/")


@circuit_breaker("view-dependency", wait_in_open=30, minimum_calls=2, window_size=2)
def charge(amount: int) -> int:
    return amount


def pay(request: HttpRequest) -> HttpResponse:
    """Lets BreakerOpen escape: the middleware answers 503 with Retry-After."""
    return JsonResponse({"charged": charge(10)})


def pay_or_later(request: HttpRequest) -> HttpResponse:
    """Handles BreakerOpen itself."""
    try:
        return JsonResponse({"charged": charge(10)})
    except BreakerOpen:
        return JsonResponse({"charged": None, "queued": True}, status=202)


#: Calls to each host go through the guard "http:<host>" (tuned by the test's settings).
HTTP = session()


def hung(request: HttpRequest) -> HttpResponse:
    """Calls a dependency that never answers, through its host's guard (bulkhead, timeout).

    A full bulkhead escapes as BulkheadFull: the middleware answers 503.
    """
    try:
        response = HTTP.get(HUNG_URL)
    except requests.RequestException:
        return HttpResponse("dependency timed out", status=504)
    return HttpResponse(response.content)


def hung_unguarded(request: HttpRequest) -> HttpResponse:
    """The same dependency without protection (the control of the gunicorn test)."""
    response = requests.get(HUNG_URL, timeout=30)
    return HttpResponse(response.content)


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("pong")
