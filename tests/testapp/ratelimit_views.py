"""Views behind rate limits, for the rate-limit tests (in process and under real servers)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from django_stability import rate_limit
from django_stability.bodysize import max_body_size
from django_stability.pagination import page_guard


@rate_limit("t-decorated", rate="3/h", key="ip")
def decorated(request: HttpRequest) -> HttpResponse:
    return HttpResponse("decorated")


@rate_limit("t-decorated-async", rate="3/h", key="ip")
async def decorated_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("decorated async")


@rate_limit("t-posts", rate="1/h", methods=["POST"])
def posts_only(request: HttpRequest) -> HttpResponse:
    return HttpResponse("posted")


@rate_limit("t-soft", rate="1/h", block=False)
def soft(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"limited": getattr(request, "limited", False)})


def by_tenant(group: str, request: Any) -> str:
    return str(request.GET.get("tenant", "none"))


@rate_limit("t-tenant", rate="2/h", key=by_tenant)
def tenant(request: HttpRequest) -> HttpResponse:
    return HttpResponse("tenant")


def plain(request: HttpRequest) -> HttpResponse:
    """Undecorated: limited only by routed policies, through the middleware."""
    return HttpResponse("plain")


async def plain_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain async")


def login(request: HttpRequest) -> HttpResponse:
    return HttpResponse("login")


@page_guard(default_limit=10, max_limit=50, max_offset=100)
def items(request: HttpRequest) -> JsonResponse:
    window = request.page_window  # type: ignore[attr-defined]
    return JsonResponse({"limit": window.limit, "offset": window.offset})


@page_guard(max_offset=10)
async def items_async(request: HttpRequest) -> JsonResponse:
    window = request.page_window  # type: ignore[attr-defined]
    return JsonResponse({"limit": window.limit, "offset": window.offset})


@max_body_size(100)
def upload(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"got {len(request.body)}")


@max_body_size(100)
async def upload_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("got it")
