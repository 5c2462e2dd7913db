"""The middleware: refusals become 429/503 with Retry-After; steady state costs no query."""

from __future__ import annotations

import json
from typing import Any

import pytest

from django_stability.models import RateLimitPolicy
from django_stability.policies import registry


def test_rate_limited_from_a_view_is_a_429_problem(client: Any) -> None:
    response = client.get("/refuse/rate/", HTTP_ACCEPT="application/json")
    assert response.status_code == 429
    assert response["Retry-After"] == "3"  # 2.2 s, rounded up, never earlier
    assert response["Content-Type"] == "application/problem+json"
    assert response["Cache-Control"] == "no-store"
    body = json.loads(response.content)
    assert body["status"] == 429 and body["policy"] == "test-limit" and body["retry_after"] == 3


def test_overloaded_for_a_browser_is_an_html_503(client: Any) -> None:
    response = client.get("/refuse/capacity/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"  # at least one second
    assert response["Content-Type"].startswith("text/html")
    assert b"Service Unavailable" in response.content


async def test_async_view_refusal(async_client: Any) -> None:
    response = await async_client.get("/refuse/capacity-async/")
    assert response.status_code == 503
    assert response["Retry-After"] == "3"
    body = json.loads(response.content)
    assert body["type"].endswith("temporary-reduced-capacity")


async def test_async_view_passes(async_client: Any) -> None:
    response = await async_client.get("/hello-async/")
    assert response.status_code == 200


def test_ratelimited_still_a_django_ratelimit_exception() -> None:
    from django.core.exceptions import PermissionDenied
    from django_ratelimit.exceptions import Ratelimited

    from django_stability import RateLimited

    error = RateLimited(policy="p", retry_after=1)
    assert isinstance(error, Ratelimited) and isinstance(error, PermissionDenied)


@pytest.mark.django_db
def test_zero_queries_per_request_in_steady_state(
    client: Any, django_assert_num_queries: Any
) -> None:
    RateLimitPolicy.objects.create(name="any", config={"rate": "5/m"})
    client.get("/hello/")  # loads the snapshot once
    with django_assert_num_queries(0):
        for _ in range(100):
            assert client.get("/hello/").status_code == 200
    assert registry.get  # the registry served every request from memory


def test_headers_carried_by_the_exception_reach_the_response(rf: Any) -> None:
    from django_stability import RateLimited
    from django_stability.responses import refusal

    error = RateLimited(policy="p", retry_after=1, headers={"RateLimit": "limit=5, remaining=0"})
    response = refusal(rf.get("/"), error)
    assert response["RateLimit"] == "limit=5, remaining=0"
