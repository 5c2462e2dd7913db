"""The load-shedding checks (E020-E021, W020-W024) and admin pages with live state."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from django_stability import checks
from django_stability.brownout import feature_enabled
from django_stability.concurrency import ConcurrencySpec, lease_key
from django_stability.models import AdmissionPolicy, ConcurrencyPolicy, FeatureSwitch
from django_stability.policies import registry
from django_stability.shedding import AdmissionSpec, controller
from django_stability.store import get_store

FIRST = "django_stability.middleware.StabilityMiddleware"


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


@pytest.mark.parametrize(
    ("values", "fires"),
    [
        ({}, False),
        ({"SHEDDING_CLASS_SHARES": {"critical": 1.0, "high": 0.8}}, True),
        (
            {
                "SHEDDING_CLASS_SHARES": {
                    "critical": 1,
                    "high": 0.5,
                    "default": 0.8,
                    "sheddable": 0.2,
                }
            },
            True,
        ),
        (
            {"SHEDDING_CLASS_SHARES": {"critical": 1, "high": 1, "default": 1.5, "sheddable": 1}},
            True,
        ),
        ({"SHEDDING_HYSTERESIS": 0.7}, True),
        ({"SHEDDING_ADAPTIVE_MIN_LIMIT": 50, "SHEDDING_ADAPTIVE_MAX_LIMIT": 10}, True),
        ({"SHEDDING_MAX_IN_FLIGHT": 8, "SHEDDING_QUEUE_TIME_TARGET": 2.5}, False),
    ],
)
def test_e020_shedding_settings(values: dict[str, Any], fires: bool) -> None:
    with override_settings(STABILITY=values):
        messages = checks.check_shedding_settings()
    assert ids(messages) == (["django_stability.E020"] if fires else [])


def test_w020_middleware_not_first(settings: Any) -> None:
    settings.MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware", FIRST]
    messages = checks.check_middleware_first()
    assert ids(messages) == ["django_stability.W020"]
    assert "SessionMiddleware" in messages[0].msg
    settings.MIDDLEWARE = [FIRST, "django.contrib.sessions.middleware.SessionMiddleware"]
    assert checks.check_middleware_first() == []


def test_w021_policies_without_the_middleware(settings: Any) -> None:
    settings.MIDDLEWARE = []
    assert checks.check_middleware_installed() == []
    registry.register(AdmissionSpec(name="search", path_prefixes=("/search",)))
    assert ids(checks.check_middleware_installed()) == ["django_stability.W021"]
    settings.MIDDLEWARE = [FIRST]
    assert checks.check_middleware_installed() == []


def test_w022_and_w023_policies_that_can_never_match() -> None:
    registry.register(AdmissionSpec(name="ok", url_names=("hello",), priority="critical"))
    assert checks.check_policies_can_match() == []
    registry.register(AdmissionSpec(name="typo", url_names=("helo",)))
    registry.register(AdmissionSpec(name="nothing", priority="sheddable"))
    registry.register(ConcurrencySpec(name="exports", url_names=("export-csv",), limit=2))
    messages = checks.check_policies_can_match()
    assert sorted(ids(messages)) == [
        "django_stability.W022",
        "django_stability.W022",
        "django_stability.W023",
    ]
    assert any("'helo'" in m.msg or "helo" in m.msg for m in messages)


def test_w024_classes_without_a_limit(settings: Any) -> None:
    assert checks.check_classes_have_a_limit() == []
    registry.register(AdmissionSpec(name="search", path_prefixes=("/search",)))
    assert ids(checks.check_classes_have_a_limit()) == ["django_stability.W024"]
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_MAX_IN_FLIGHT": 8}
    assert checks.check_classes_have_a_limit() == []


def test_e021_routed_limit_keyed_by_user() -> None:
    registry.register(ConcurrencySpec(name="per-user", path_prefixes=("/api/",), key="user"))
    assert ids(checks.check_concurrency_keys()) == ["django_stability.E021"]
    registry.register(ConcurrencySpec(name="per-user", key="user"))  # by decorator only: fine
    assert checks.check_concurrency_keys() == []


@pytest.mark.django_db
def test_admission_admin_shows_in_flight_counts(admin_client: Any, settings: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_MAX_IN_FLIGHT": 8}
    row = AdmissionPolicy.objects.create(
        name="search", config={"priority": "sheddable", "path_prefixes": ["/search/"]}
    )
    registry.reload()
    held = controller.try_enter("sheddable").admitted
    try:
        page = admin_client.get("/admin/django_stability/admissionpolicy/")
        assert page.status_code == 200
        # The admin request itself is in flight (default class) next to the held one.
        assert b"In flight now in this process: 2 of 8" in page.content
        assert b"sheddable 1" in page.content
        change = admin_client.get(f"/admin/django_stability/admissionpolicy/{row.pk}/change/")
        assert change.status_code == 200
        assert b"&quot;shed_total&quot;" in change.content
        assert admin_client.get("/admin/django_stability/admissionpolicy/add/").status_code == 200
    finally:
        assert held is not None
        controller.leave(held)


@pytest.mark.django_db
def test_concurrency_admin_shows_holders_across_the_cluster(admin_client: Any) -> None:
    ConcurrencyPolicy.objects.create(name="exports", config={"limit": 3})
    ConcurrencyPolicy.objects.create(
        name="sale", config={"limit": 2, "waiting_room": True, "url_names": ["room"]}
    )
    registry.reload()
    spec = registry.get(ConcurrencySpec, "exports")
    assert spec is not None
    get_store().acquire_lease(lease_key(spec), "somewhere-else", 3, 30)
    page = admin_client.get("/admin/django_stability/concurrencypolicy/")
    assert page.status_code == 200
    assert b"1 of 3" in page.content
    assert b"0 in, 0 waiting" in page.content


@pytest.mark.django_db
def test_feature_switch_admin_kill_switch(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    row = FeatureSwitch.objects.create(name="recommendations")
    registry.reload()
    assert feature_enabled("recommendations")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/django_stability/featureswitch/",
            {"action": "turn_off", "_selected_action": [row.pk]},
        )
    assert response.status_code == 302
    assert not feature_enabled("recommendations")
    page = admin_client.get("/admin/django_stability/featureswitch/")
    assert b"off (switched off)" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/django_stability/featureswitch/",
            {"action": "turn_on", "_selected_action": [row.pk]},
        )
    assert feature_enabled("recommendations")
