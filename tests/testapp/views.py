"""Small views the tests drive through the real middleware stack."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from django_stability.exceptions import Overloaded, RateLimited


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello")


async def hello_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello async")


def refuse_rate(request: HttpRequest) -> HttpResponse:
    raise RateLimited(policy="test-limit", retry_after=2.2)


def refuse_capacity(request: HttpRequest) -> HttpResponse:
    raise Overloaded(policy="test-capacity", retry_after=0.2)


async def refuse_capacity_async(request: HttpRequest) -> HttpResponse:
    raise Overloaded(policy="test-capacity", retry_after=3)


def echo_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"path": request.path})
