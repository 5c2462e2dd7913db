"""The DRF throttle backed by rate-limit policies."""

from __future__ import annotations

from typing import Any

import pytest

from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec
from django_stability.test import override_policy

pytest.importorskip("rest_framework")


def test_a_drf_view_throttled_by_a_policy(client: Any) -> None:
    registry.register(RateLimitSpec(name="drf-reports", rate="2/h"))
    first = client.get("/rl/drf/reports/")
    assert first.status_code == 200
    assert first["RateLimit"] == '"drf-reports";r=1;t=1800'
    assert client.get("/rl/drf/reports/").status_code == 200
    refused = client.get("/rl/drf/reports/")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "1800"
    assert refused["RateLimit"] == '"drf-reports";r=0;t=1800'


def test_the_admin_policy_overrides_and_deny_lists_refuse(client: Any) -> None:
    with override_policy(RateLimitSpec(name="drf-reports", rate="1/h")):
        assert [client.get("/rl/drf/reports/").status_code for _ in range(2)] == [200, 429]
    with override_policy(
        RateLimitSpec(name="drf-reports", rate="100/h", deny_networks=("127.0.0.0/8",))
    ):
        assert client.get("/rl/drf/reports/").status_code == 403


def test_a_scope_takes_its_rate_from_drf_settings(client: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {"DEFAULT_THROTTLE_RATES": {"drf-scoped": "2/minute"}}
    from rest_framework.settings import api_settings

    api_settings.reload()
    try:
        statuses = [client.get("/rl/drf/scoped/").status_code for _ in range(3)]
    finally:
        del settings.REST_FRAMEWORK
        api_settings.reload()
    assert statuses == [200, 200, 429]
    assert registry.get(RateLimitSpec, "drf-scoped").rate == "2/60s"  # type: ignore[union-attr]
