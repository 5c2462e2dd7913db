"""The JSON status, the health endpoints and the metrics: valid, and closed to outsiders."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import RequestFactory
from prometheus_client.parser import text_string_to_metric_families

from django_stability import circuit_breaker
from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec, check
from django_stability.shedding import classify, controller
from django_stability.status_views import register_endpoint_priority
from tests.operations import fresh_counts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_counts")]

__all__ = ["fresh_counts"]

STATUS = "/stability/status/"
METRICS = "/stability/metrics/"
TOKEN = "s3cr3t-status-token-of-some-length"


def user(username: str, *, staff: bool = False, dashboard: bool = False) -> User:
    made = User.objects.create_user(username, password="pw", is_staff=staff)
    if dashboard:
        made.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    return made


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def total(found: dict[str, Any], family: str, **labels: str) -> float | None:
    """The sum of the family's samples with these labels; None when it has none."""
    if family not in found:
        return None
    matching = [
        s.value
        for s in found[family].samples
        if s.name.endswith("_total") or s.name == family
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return float(sum(matching)) if matching else None


def sample(found: dict[str, Any], family: str, **labels: str) -> float:
    value = total(found, family, **labels)
    assert value is not None, (family, labels)
    return value


# The JSON status -------------------------------------------------------------------------


def test_anonymous_callers_are_refused_with_401_and_a_bearer_challenge(client: Any) -> None:
    response = client.get(STATUS)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["Cache-Control"] == "no-store"
    assert "breakers" not in response.json()


@pytest.mark.parametrize(
    ("staff", "dashboard", "expected"),
    [(False, False, 403), (False, True, 403), (True, False, 403), (True, True, 200)],
)
def test_only_staff_with_the_dashboard_permission_read_it(
    client: Any, staff: bool, dashboard: bool, expected: int
) -> None:
    client.force_login(user("someone", staff=staff, dashboard=dashboard))
    assert client.get(STATUS).status_code == expected


def test_the_status_is_valid_json_with_every_section(admin_client: Any) -> None:
    circuit_breaker("payments")
    response = admin_client.get(STATUS)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert "payments" in [row["name"] for row in data["breakers"]]
    assert {"store", "ratelimits", "shedding", "bulkheads", "cache", "jobs", "history"} <= set(data)


def test_a_configured_token_reads_it_and_a_wrong_one_does_not(client: Any, settings: Any) -> None:
    # No token configured: none opens it.
    assert client.get(STATUS, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 403
    settings.STABILITY = {**settings.STABILITY, "DASHBOARD_STATUS_TOKEN": TOKEN}
    assert client.get(STATUS, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get(STATUS, HTTP_AUTHORIZATION="Bearer nope").status_code == 403
    assert client.get(STATUS, HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.post(STATUS, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


# Health --------------------------------------------------------------------------------------


def test_liveness_answers_to_anyone(client: Any) -> None:
    response = client.get("/stability/health/live/")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})
    assert client.head("/stability/health/live/").status_code == 200


def test_readiness_says_not_ready_while_the_process_sheds_hard(client: Any, settings: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_MAX_IN_FLIGHT": 4}
    register_endpoint_priority()  # as including the URLs does (earlier in this test run)
    assert client.get("/stability/health/ready/").json() == {"status": "ready"}
    held = [controller.try_enter("default").admitted for _ in range(3)]
    try:
        assert controller.try_enter("sheddable").refused  # shedding the lowest class only
        assert client.get("/stability/health/ready/").status_code == 200
        assert controller.try_enter("default").refused  # now a normal request is shed
        response = client.get("/stability/health/ready/")
        assert response.status_code == 503
        assert response.json() == {
            "status": "not_ready",
            "reason": "shedding",
            "classes": ["default"],
        }
        assert int(response["Retry-After"]) >= 1
        settings.STABILITY = {**settings.STABILITY, "HEALTH_NOT_READY_WHEN_SHEDDING": "high"}
        assert client.get("/stability/health/ready/").status_code == 200
    finally:
        for admitted in held:
            assert admitted is not None
            controller.leave(admitted)


def test_readiness_says_not_ready_while_requests_wait_upstream_too_long(
    client: Any, settings: Any
) -> None:
    settings.STABILITY = {
        **settings.STABILITY,
        "SHEDDING_QUEUE_TIME_TARGET": 1.0,
        "SHEDDING_BROWNOUT_HOLD": 30.0,
    }
    register_endpoint_priority()
    late = f"t={time.time() - 5:.3f}"  # the proxy stamped it 5 s ago
    assert client.get("/hello/", HTTP_X_REQUEST_START=late).status_code == 503
    response = client.get("/stability/health/ready/")
    assert response.status_code == 503
    assert response.json()["classes"] == ["default"]
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_BROWNOUT_HOLD": 0.001}
    assert client.get("/stability/health/ready/").status_code == 200  # the hold is over


def test_health_and_metrics_endpoints_are_shed_last() -> None:
    register_endpoint_priority()
    factory = RequestFactory()
    for path in ("/stability/health/live/", "/stability/health/ready/", METRICS):
        spec = classify(factory.get(path))
        assert spec is not None and spec.priority == "critical", path
    assert classify(factory.get(STATUS)) is None


# Metrics ---------------------------------------------------------------------------------------


def test_metrics_refuse_anonymous_scrapes_unless_allowed(client: Any, settings: Any) -> None:
    assert client.get(METRICS).status_code == 401
    settings.STABILITY = {**settings.STABILITY, "METRICS_TOKEN": TOKEN}
    assert client.get(METRICS, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get(METRICS, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    # The status token is not the metrics token.
    settings.STABILITY = {**settings.STABILITY, "DASHBOARD_STATUS_TOKEN": "x" * 30}
    assert client.get(METRICS, HTTP_AUTHORIZATION=f"Bearer {'x' * 30}").status_code == 403
    settings.STABILITY = {**settings.STABILITY, "METRICS_ALLOW_ANONYMOUS": True}
    assert client.get(METRICS).status_code == 200


def test_metrics_are_valid_prometheus_text_with_the_counts(admin_client: Any) -> None:
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    check("login", "k")
    check("login", "k")
    check("login", "k")
    breaker = circuit_breaker("payments")
    breaker.trip("test")
    response = admin_client.get(METRICS)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found = families(response.content.decode())
    # Counters are cumulative per process: compare what this test added.
    assert sample(found, "django_stability_rate_limit_decisions", policy="login") >= 3
    assert (
        sample(found, "django_stability_rate_limit_refusals", policy="login", shadow="false") >= 2
    )
    assert (
        sample(found, "django_stability_breaker_transitions", breaker="payments", state="open") >= 1
    )
    assert sample(found, "django_stability_breaker_state", breaker="payments", state="open") == 1
    assert sample(found, "django_stability_breaker_state", breaker="payments", state="closed") == 0
    assert sample(found, "django_stability_in_flight_requests", priority="default") == 1
    assert sample(found, "django_stability_store_up") == 1
    assert sample(found, "django_stability_processes_reporting") == 1
    assert found["django_stability_store_round_trip_seconds"].type == "gauge"
    assert found["django_stability_requests"].type == "counter"
    for name in found:
        assert name.islower() and " " not in name


def test_each_scrape_adds_only_what_happened_since(admin_client: Any) -> None:
    registry.register(RateLimitSpec(name="login", rate="100/h"))
    first = families(admin_client.get(METRICS).content.decode())
    before = total(first, "django_stability_rate_limit_decisions", policy="login") or 0.0
    for _ in range(5):
        check("login", "k")
    second = families(admin_client.get(METRICS).content.decode())
    assert sample(second, "django_stability_rate_limit_decisions", policy="login") == before + 5


def test_metrics_off_answer_404(admin_client: Any, settings: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "METRICS_ENABLED": False}
    response = admin_client.get(METRICS)
    assert response.status_code == 404
    assert "off" in response.json()["detail"]
